"""A pool of Ray actors that train and profile trials, with results streamed back as they finish.

Each actor declares its resources (`num_cpus`, `num_gpus`), pins its torch threads (and, on one
machine, its CPU cores) so that two workers do not disturb each other's timings, and caches
task data per process. A trial goes only to an actor that has started: one that cannot be
placed yet (its node is gone, the cluster is full) takes no trial until it starts, and the
others carry on. An actor whose process dies (killed, out of memory, its node lost) is replaced
and its trial retried once on the next free actor; after that the trial is reported failed,
`worker_died`. A trial that outlives `trial_timeout` (counted from dispatch) has its actor
killed and replaced, and is reported failed, `timeout`. Every report names the Ray node that
ran the trial (`node_ip`).

>>> pool = RayPool(TrialJob(task="digits"), workers=2)      # doctest: +SKIP
>>> pool.submit("t0", config); pool.collect(timeout=60)     # doctest: +SKIP
[{'key': 't0', 'status': 'ok', 'metrics': {...}, ...}]
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass

import ray
import ray.exceptions

from tnas.space.config import ArchConfig
from tnas.space.errors import one_line
from tnas.workers.backend import Job, WorkerCache
from tnas.workers.reports import failed

LOCAL_NODE_IP = os.environ.get("TNAS_RAY_NODE_IP", "127.0.0.2")
# A worker whose actor fails to start this many times in a row is given up.
MAX_START_FAILURES = 3


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: `address`, else Ray's own `RAY_ADDRESS`, else None (a local Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def connect(address: str | None = None, **init_kwargs) -> bool:
    """Start or join Ray unless this process already is connected; True if it connected now.

    With no address (and no `RAY_ADDRESS` in the environment), a local Ray bound to loopback
    (`TNAS_RAY_NODE_IP`, default 127.0.0.2) starts for this process alone. With an address
    (`ray://host:10001`, `host:6379`, `auto`), the process joins that cluster.
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    options = {"include_dashboard": False, "logging_level": logging.WARNING}
    address = cluster_address(address)
    if address:
        ray.init(address=address, **(options | init_kwargs))
    else:
        local = {"_node_ip_address": LOCAL_NODE_IP, "object_store_memory": 256 * 1024**2}
        ray.init(**(options | local | init_kwargs))
    return True


class TrialActor:
    """One worker process: pins its threads and cores, keeps a `WorkerCache` (tasks and, for
    Mix'n'Match jobs, the loaded supernet), runs trials."""

    def __init__(self, threads: int, cores: list[int] | None):
        import torch

        torch.set_num_threads(threads)
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        self.cache = WorkerCache()

    def run(self, key: str, config_json: str, job: Job) -> dict:
        report = job.run(key, ArchConfig.from_json(config_json), self.cache)
        return report | {"node_ip": ray.util.get_node_ip_address()}

    def supernet_loads(self) -> int:
        """How many times this actor loaded a supernet checkpoint."""
        return 0 if self.cache.supernets is None else self.cache.supernets.loads

    def pid(self) -> int:
        return os.getpid()


@dataclass
class Running:
    slot: int
    key: str
    config: ArchConfig
    attempts: int
    started: float


class RayPool:
    """Runs `job` for submitted configs on `workers` Ray actors; implements the Evaluator API.
    `job` is a `TrialJob` (train and profile) or a Mix'n'Match `SupernetJob`.

    `submit(key, config)` queues a trial; `collect(timeout)` blocks until at least one trial
    has finished (or the timeout passes) and returns every finished report. A slot whose actor
    fails to start `MAX_START_FAILURES` times in a row is given up; with none left, queued
    trials are reported failed, `worker_died`.
    """

    def __init__(
        self,
        job: Job,
        workers: int = 2,
        threads_per_worker: int = 1,
        num_gpus: float = 0.0,
        address: str | None = None,
        trial_timeout: float | None = None,
        max_retries: int = 1,
        pin_cores: bool | None = None,
        ray_init: dict | None = None,
    ):
        if workers < 1:
            raise ValueError(f"a pool needs at least one worker, got {workers}")
        self.job = job
        self.trial_timeout = trial_timeout
        self.max_retries = max_retries
        self.threads = threads_per_worker
        if pin_cores is None:
            pin_cores = cluster_address(address) is None
        self.pin_cores = pin_cores
        self.owns_ray = connect(address, **(ray_init or {}))
        self.actor_class = ray.remote(num_cpus=threads_per_worker, num_gpus=num_gpus)(TrialActor)
        self.actors: dict[int, ray.actor.ActorHandle] = {}
        self.idle: deque[int] = deque()
        # An actor's first call, by slot: the slot takes trials once it returns.
        self.starting: dict[ray.ObjectRef, int] = {}
        self.start_failures = dict.fromkeys(range(workers), 0)
        self.start_error = ""
        for slot in range(workers):
            self.start_actor(slot)
        self.queue: deque[tuple[str, ArchConfig, int]] = deque()
        self.running: dict[ray.ObjectRef, Running] = {}

    @property
    def slots(self) -> int:
        return len(self.actors)

    def start_actor(self, slot: int) -> None:
        cores = None
        if self.pin_cores:
            count = os.cpu_count() or 1
            cores = sorted({(slot * self.threads + i) % count for i in range(self.threads)})
        self.actors[slot] = self.actor_class.remote(self.threads, cores)
        self.starting[self.actors[slot].pid.remote()] = slot

    def replace_actor(self, slot: int) -> None:
        ray.kill(self.actors[slot], no_restart=True)
        self.start_actor(slot)

    def started(self, ref: ray.ObjectRef) -> list[dict]:
        """Make a started actor's slot free; start a failed one again, or give it up. Returns
        the reports of queued trials failed because no worker is left."""
        slot = self.starting.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as err:
            self.start_error = one_line(err, first=True)
            self.start_failures[slot] += 1
            if self.start_failures[slot] < MAX_START_FAILURES:
                self.replace_actor(slot)
                return []
            ray.kill(self.actors.pop(slot), no_restart=True)
            if self.actors:
                return []
            queued, self.queue = self.queue, deque()
            message = f"no worker could start: {self.start_error}"
            return [
                failed(key, config, "worker_died", message, attempts=attempts)
                for key, config, attempts in queued
            ]
        self.start_failures[slot] = 0
        self.idle.append(slot)
        return []

    def submit(self, key: str, config: ArchConfig) -> None:
        self.queue.append((key, config, 1))
        self.dispatch()

    def dispatch(self) -> None:
        """Hand queued trials to free, started actors."""
        while self.idle and self.queue:
            key, config, attempts = self.queue.popleft()
            slot = self.idle.popleft()
            ref = self.actors[slot].run.remote(key, config.to_json(), self.job)
            self.running[ref] = Running(slot, key, config, attempts, time.monotonic())

    def pending(self) -> int:
        """Trials submitted and not yet reported."""
        return len(self.queue) + len(self.running)

    def collect(self, timeout: float | None = None) -> list[dict]:
        deadline = None if timeout is None else time.monotonic() + timeout
        reports: list[dict] = []
        while (self.running or (self.queue and self.starting)) and not reports:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            refs = [*self.running, *self.starting]
            ready, _ = ray.wait(refs, num_returns=1, timeout=wait)
            if ready:  # take everything else that is done too
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                if ref in self.starting:
                    reports.extend(self.started(ref))
                    continue
                report = self.finish(ref)
                if report is not None:
                    reports.append(report)
            reports.extend(self.expire())
            self.dispatch()
            if deadline is not None and time.monotonic() >= deadline:
                break
        return reports

    def finish(self, ref: ray.ObjectRef) -> dict | None:
        """The report of a finished trial, or None if it was queued again after a death."""
        trial = self.running.pop(ref)
        try:
            report = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as err:
            self.replace_actor(trial.slot)
            if trial.attempts <= self.max_retries:
                self.queue.appendleft((trial.key, trial.config, trial.attempts + 1))
                return None
            message = one_line(err, first=True)
            return failed(trial.key, trial.config, "worker_died", message, attempts=trial.attempts)
        except ray.exceptions.RayError as err:
            self.idle.append(trial.slot)
            return failed(trial.key, trial.config, "error", str(err), attempts=trial.attempts)
        self.idle.append(trial.slot)
        return report | {"attempts": trial.attempts}

    def expire(self) -> list[dict]:
        """Kill and replace the actors of trials past `trial_timeout`; report those failed."""
        if self.trial_timeout is None:
            return []
        now = time.monotonic()
        reports = []
        for ref, trial in list(self.running.items()):
            if now - trial.started > self.trial_timeout:
                del self.running[ref]
                self.replace_actor(trial.slot)
                message = f"trial ran past its {self.trial_timeout:g} s timeout"
                reports.append(
                    failed(trial.key, trial.config, "timeout", message, attempts=trial.attempts)
                )
        return reports

    def actor_pids(self) -> list[int]:
        return ray.get([actor.pid.remote() for actor in self.actors.values()])

    def supernet_loads(self) -> list[int]:
        """Per actor, how many times it loaded a supernet checkpoint (once, if cached)."""
        return ray.get([actor.supernet_loads.remote() for actor in self.actors.values()])

    def close(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors, self.running, self.starting = {}, {}, {}
        if self.owns_ray:
            ray.shutdown()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
