"""A trial's lifecycle: adapt the config to the task, train it, profile it, report a plain dict.

What a trial reports is described in `tnas.workers.reports`, which builds every report. A job
says what each trial of a run does: a `TrialJob` trains and profiles (`run_trial`), a
Mix'n'Match `SupernetJob` (`tnas.workers.mixnmatch`) evaluates a submodel of a trained
supernet, a `FidelityJob` trains a trial to one rung of a multi-fidelity search, continuing from
its previous rung's checkpoint. Each kind has its own `run(key, config, cache)` and
`metric_names()`, so evaluators (`InlineEvaluator`, the Ray pool) run any job the same way, with
one `WorkerCache` per process.

>>> job = TrialJob(task="digits", budget=Budget(steps=2, batch_size=8), profile=None)
>>> sorted(job.metric_names())
['accuracy', 'accuracy_fp32', 'loss', 'loss_fp32', 'seconds', 'steps', 'train_loss']
>>> evaluator = InlineEvaluator(job)
>>> evaluator.submit("t0", ArchConfig(d_model=16, n_layers=1))
>>> evaluator.collect()[0]["status"]
'ok'
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from tnas.space.config import ArchConfig
from tnas.workers.reports import PROFILE_METRICS, failed, ok_report
from tnas.workers.train import (
    FP32_SUFFIX,
    Budget,
    TrialFailed,
    checkpoint_path,
    default_threads,
    delete_checkpoint,
    evaluate_quantized,
    save_checkpoint,
    train,
    training_threads,
)

if TYPE_CHECKING:
    from tnas.workers.tasks.base import Task


@dataclass(frozen=True)
class ProfileSettings:
    """Where and how latency is measured after training: the one measurement protocol of a
    study, the same in this process (`InlineEvaluator`) and on Ray workers, and the defaults
    of `tnas profile`. `seq_len` is cut to the config's `max_seq_len`; `threads` are torch's
    intra-op threads while timing, 1 by default whatever the machine (a latency measured on
    every core of a busy machine says more about the machine than about the model).

    >>> ProfileSettings()
    ProfileSettings(device='cpu', batch=1, seq_len=128, repeats=20, warmup=3, threads=1)
    """

    device: str = "cpu"
    batch: int = 1
    seq_len: int = 128
    repeats: int = 20
    warmup: int = 3
    threads: int = 1

    def __post_init__(self):
        if self.threads is None or self.threads < 1:
            raise ValueError(f"profile threads must be >= 1, got {self.threads}")


class Job(Protocol):
    """What each trial of a run does (`TrialJob`, `SupernetJob`): a picklable value that Ray
    actors receive with every trial. `task` is a `parse_task` spec."""

    task: str

    def metric_names(self) -> set[str]:
        """The metric names a successful trial reports, whatever the config's bits."""
        ...

    def run(self, key: str, config: ArchConfig, cache: WorkerCache) -> dict:
        """One trial's report; a failed trial is a report too, never an exception."""
        ...


class WorkerCache:
    """One process's caches, kept across its trials: `task(spec)` builds each task once, and
    `supernets` is the loaded Mix'n'Match supernet (a `SupernetCache`, which a `SupernetJob`
    makes when it first needs one; None until then). `stop`, once set, cuts the trial training
    in this process at its next step (failed, `interrupted`), and every later one at its first."""

    def __init__(self):
        self.tasks: dict[str, Task] = {}
        self.supernets = None
        self.stop = threading.Event()

    def task(self, spec: str) -> Task:
        """The task of `parse_task(spec)`, built on the first call for `spec`."""
        from tnas.workers.tasks import parse_task

        if spec not in self.tasks:
            self.tasks[spec] = parse_task(spec)
        return self.tasks[spec]


def evaluation_metric_names(task: Task, profiled: bool) -> set[str]:
    """What evaluating a model on `task` reports: the task's metrics with each layer's bits
    and in float (`<name>_fp32`), and the profile's metrics when `profiled`."""
    names = {metric.name for metric in task.metrics}
    names |= {name + FP32_SUFFIX for name in names}
    return names | set(PROFILE_METRICS) if profiled else names


LOCAL = (("local", None),)  # the default latency target: the worker that trained the trial


def latency_metric_names(job) -> set[str]:
    """The latency metrics a job's `targets` add: `latency_ms@NAME` each, and the profile's
    metrics of its `primary` target (none when the primary latency is predicted elsewhere)."""
    if job.profile is None:
        return set()
    names = {f"latency_ms@{name}" for name, _ in job.targets}
    return names | set(PROFILE_METRICS) if job.primary is not None else names


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a run does: the task (a `parse_task` spec), the budget, profiling.

    `targets` are where latency is measured with the `profile` protocol, `(name, resource)`
    each: resource None is this worker, else a Ray node that offers that custom resource
    (`tnas.workers.target`); each reports `latency_ms@name`. The `primary` target's profile
    also gives the plain `latency_ms`, `peak_mem_mb`, ... (None: no plain latency here)."""

    task: str = "digits"
    budget: Budget = field(default_factory=Budget)
    profile: ProfileSettings | None = field(default_factory=ProfileSettings)
    targets: tuple[tuple[str, str | None], ...] = LOCAL
    primary: str | None = "local"

    def metric_names(self) -> set[str]:
        """The metric names a successful trial reports, whatever the config's bits.

        >>> sorted(TrialJob(task="digits", profile=None).metric_names())
        ['accuracy', 'accuracy_fp32', 'loss', 'loss_fp32', 'seconds', 'steps', 'train_loss']
        """
        from tnas.workers.tasks import parse_task

        names = evaluation_metric_names(parse_task(self.task), False)
        return names | latency_metric_names(self) | {"train_loss", "steps", "seconds"}

    def run(self, key: str, config: ArchConfig, cache: WorkerCache) -> dict:
        """`run_trial` with the cache's task and stop event."""
        return run_trial(key, config, self, cache.task(self.task), stop=cache.stop)


RUNG_SEPARATOR = "@"  # in an evaluator key: `<trial key>@<rung>`


def rung_key(key: str, rung: int) -> str:
    """The evaluator key that asks a `FidelityJob` to train trial `key` to rung `rung`.

    >>> rung_key("12", 1), split_rung_key("12@1")
    ('12@1', ('12', 1))
    """
    if RUNG_SEPARATOR in key:
        raise ValueError(f"a trial key must not contain {RUNG_SEPARATOR!r}, got {key!r}")
    return f"{key}{RUNG_SEPARATOR}{rung}"


def split_rung_key(key: str) -> tuple[str, int]:
    """`(trial key, rung)` of a `rung_key`; a one-line ValueError for any other key."""
    trial, separator, rung = key.rpartition(RUNG_SEPARATOR)
    if not separator or not trial or not rung.isdigit():
        raise ValueError(f"{key!r} is not a rung key (<trial key>{RUNG_SEPARATOR}<rung>)")
    return trial, int(rung)


@dataclass(frozen=True, kw_only=True)
class FidelityJob:
    """One rung of a multi-fidelity trial: train to `rungs[r]` steps, continuing from the
    trial's checkpoint, evaluate, report; the evaluator key names the trial and the rung
    (`rung_key`: `"12@1"`), so the Ray pool and `InlineEvaluator` run it as any job.

    Every rung trains within `budget`, whose `steps` must be the last rung: the learning rate
    follows the schedule of the full training, and a trial that reaches the last rung equals
    a `TrialJob` trained for `budget.steps`. The checkpoint (`checkpoint(trial, config_hash)`
    in `checkpoint_dir`, named by `study`, the trial key and the config hash) is written at
    every rung but the last, where it is deleted unless `keep_checkpoints`; `discard` deletes
    a stopped trial's. A missing checkpoint means training from step 0 (the same result,
    slower; the report's `resumed_from` says 0).

    Profiling does not depend on training, so it runs once, on the trial's first rung, and its
    metrics and device fingerprint are stored in the checkpoint: later rungs report them again
    without measuring (no `profile_s` in their timings). Each report carries `rung`, `steps`
    (that rung's steps; `metrics["steps"]` is the step reached, lower only under
    `budget.max_seconds`) and `resumed_from`; a failed report carries `rung` and `steps` too.

    >>> import tempfile
    >>> job = FidelityJob(budget=Budget(steps=4, batch_size=8), rungs=(2, 4),
    ...                   checkpoint_dir=tempfile.mkdtemp(), profile=None)
    >>> cache, config = WorkerCache(), ArchConfig(d_model=16, n_layers=1)
    >>> [job.run(rung_key("7", r), config, cache)["steps"] for r in (0, 1)]
    [2, 4]
    """

    task: str = "digits"
    budget: Budget = field(default_factory=Budget)
    rungs: tuple[int, ...]
    checkpoint_dir: str
    profile: ProfileSettings | None = field(default_factory=ProfileSettings)
    study: str = ""  # names its checkpoints, so two studies may share a directory
    keep_checkpoints: bool = False
    targets: tuple[tuple[str, str | None], ...] = LOCAL  # as `TrialJob`'s
    primary: str | None = "local"

    def __post_init__(self):
        rungs = tuple(self.rungs)
        if not rungs or any(isinstance(s, bool) or not isinstance(s, int) for s in rungs):
            raise ValueError(f"rungs must be a non-empty sequence of step counts, got {rungs}")
        if rungs[0] < 1 or any(b <= a for a, b in zip(rungs, rungs[1:], strict=False)):
            raise ValueError(f"rungs must be positive and rising, got {list(rungs)}")
        if rungs[-1] != self.budget.steps:
            raise ValueError(
                f"the last rung ({rungs[-1]}) must equal budget.steps ({self.budget.steps})"
            )
        if not str(self.checkpoint_dir):
            raise ValueError("a fidelity job needs a checkpoint_dir")
        object.__setattr__(self, "rungs", rungs)

    def metric_names(self) -> set[str]:
        """The metric names a successful rung reports, whatever the config's bits: those of
        the equivalent `TrialJob`."""
        return TrialJob(
            task=self.task,
            budget=self.budget,
            profile=self.profile,
            targets=self.targets,
            primary=self.primary,
        ).metric_names()

    def checkpoint(self, trial: str, config_hash: str) -> Path:
        """The checkpoint file of trial `trial` (the key without its rung) of `config_hash`."""
        key = f"{self.study}-{trial}" if self.study else trial
        return checkpoint_path(self.checkpoint_dir, config_hash, key)

    def discard(self, trial: str, config_hash: str) -> bool:
        """Delete a stopped trial's checkpoint (unless `keep_checkpoints`); True if deleted."""
        if self.keep_checkpoints:
            return False
        key = f"{self.study}-{trial}" if self.study else trial
        return delete_checkpoint(self.checkpoint_dir, config_hash, key)

    def run(self, key: str, config: ArchConfig, cache: WorkerCache) -> dict:
        """`run_rung` with the cache's task and stop event."""
        return run_rung(key, config, self, cache.task(self.task), stop=cache.stop)


def run_rung(
    key: str,
    config: ArchConfig,
    job: FidelityJob,
    task: Task | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Train trial `key` (a `rung_key`) to its rung, continuing from its checkpoint; evaluate,
    profile on the first rung only, write the checkpoint; a report, never an exception."""
    from tnas.nn.quant import check_supported
    from tnas.workers.profile import device_fingerprint
    from tnas.workers.tasks import parse_task

    timings: dict = {}
    try:
        trial, rung = split_rung_key(key)
        if rung >= len(job.rungs):
            raise ValueError(f"rung {rung} does not exist; the job has {len(job.rungs)} rungs")
    except ValueError as err:
        return failure_report(err, key, config, timings)
    where = {"rung": rung, "steps": job.rungs[rung]}
    last = rung == len(job.rungs) - 1
    path = job.checkpoint(trial, config.hash)
    try:
        task = task or parse_task(job.task)
        device = deployment_device(job)
        check_supported(config, device)  # before training: no time spent on a trial that fails
        start = time.perf_counter()
        resume = path if path.is_file() else None
        until = job.rungs[rung]
        result = train(config, task, job.budget, stop, until=until, resume=resume, keep_state=True)
        timings["train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        metrics = evaluate_quantized(result, task, device)
        timings["quantized_eval_s"] = time.perf_counter() - start
        measured = result.measured
        if job.profile is not None and not measured:
            profiled: dict = {}
            try:
                fingerprint, latency = measure_latency(profiled, timings, result, job)
            except ProfileFailed as err:
                return profile_failure(key, config, err, metrics, result, timings) | where
            measured = {"metrics": profiled, "fingerprint": fingerprint, "latency": latency}
        if measured:
            metrics |= measured["metrics"]
            fingerprint = measured["fingerprint"]
        else:
            fingerprint = device_fingerprint(job.budget.device)
        if not last or job.keep_checkpoints:
            save_checkpoint(result, path, measured)
        else:
            path.unlink(missing_ok=True)
    except Exception as err:
        return failure_report(err, key, config, timings) | where
    report = ok_report(key, config, metrics, result.curve, fingerprint, timings)
    if measured and measured.get("latency"):
        report["latency"] = measured["latency"]
    return report | where | {"resumed_from": result.resumed_from}


def deployment_device(job: TrialJob | FidelityJob) -> str:
    """Where a trained model runs with its bits: the profiling device, else the training one."""
    return job.profile.device if job.profile is not None else job.budget.device


class ProfileFailed(Exception):
    """A latency target could not profile a trained model (`profile_failed`)."""


def profile_failure(key: str, config: ArchConfig, err, metrics, result, timings) -> dict:
    """The report of a trial trained but not profiled: `profile_failed`, with the training's
    metrics and curve kept."""
    curve = result.curve
    return failed(
        key, config, "profile_failed", str(err), metrics=metrics, curve=curve, timings=timings
    )


def measure_latency(metrics: dict, timings: dict, result, job) -> tuple[dict, dict]:
    """Profile the trained model of `result` on each of `job.targets` with `job.profile`: add
    `latency_ms@NAME` per target to `metrics`, and the primary target's whole profile
    (`latency_ms`, `peak_mem_mb`, ...); return the primary's device fingerprint (the training
    device's when the primary is not measured here) and where each latency came from. A
    target that cannot profile raises `ProfileFailed`."""
    from tnas.workers.profile import device_fingerprint
    from tnas.workers.target import Target, TargetError, measure

    fingerprint = device_fingerprint(job.budget.device)
    latency: dict = {}
    for name, resource in job.targets:
        if resource is None:
            profiled: dict = {}
            found = profile_into(profiled, timings, result.config, result.model, job.profile)
            latency[name] = {"kind": "measured", "device": found["id"]}
        else:
            start = time.perf_counter()
            try:
                [found_result] = measure(
                    Target(resource), [result.config], job.profile, models=[result.model]
                )
            except TargetError as err:
                raise ProfileFailed(str(err)) from None
            if "error" in found_result:
                raise ProfileFailed(f"node:{resource}: {found_result['error']}")
            timings[f"profile_{name}_s"] = time.perf_counter() - start
            profiled, found = found_result["metrics"], found_result["fingerprint"]
            latency[name] = {
                "kind": "node",
                "resource": resource,
                "node_ip": found_result["node_ip"],
                "device": found["id"],
            }
        metrics[f"latency_ms@{name}"] = profiled["latency_ms"]
        if name == job.primary:
            metrics |= profiled
            fingerprint = found
    if job.targets == LOCAL and job.primary == "local":
        latency = {}  # today's default: the trial's own fingerprint says it all
    return fingerprint, latency


def profile_into(metrics: dict, timings: dict, config: ArchConfig, model, settings) -> dict:
    """Profile `model` (built for `config`) with `settings` (a `ProfileSettings`), add its
    numbers to `metrics` and its time to `timings`; return the device fingerprint."""
    from tnas.workers.profile import profile

    start = time.perf_counter()
    measured = profile(
        config,
        device=settings.device,
        batch=settings.batch,
        seq_len=min(settings.seq_len, config.max_seq_len),
        repeats=settings.repeats,
        warmup=settings.warmup,
        threads=settings.threads,
        model=model,
    )
    timings["profile_s"] = time.perf_counter() - start
    fingerprint = measured.pop("fingerprint")
    metrics |= {k: v for k, v in measured.items() if isinstance(v, int | float)}
    return fingerprint


def failure_report(err: Exception, key: str, config: ArchConfig, timings: dict) -> dict:
    """The report for an exception raised by one trial: a failed trial never ends a search."""
    from tnas.nn.quant import UnsupportedQuantization

    if isinstance(err, TrialFailed):
        return failed(key, config, err.reason, err.message, timings=timings)
    if isinstance(err, UnsupportedQuantization):
        return failed(key, config, "unsupported_quantization", str(err), timings=timings)
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return failed(key, config, "out_of_memory", str(err) or "out of memory", timings=timings)
    return failed(key, config, "error", f"{type(err).__name__}: {err}", timings=timings)


def run_trial(
    key: str,
    config: ArchConfig,
    job: TrialJob,
    task: Task | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Train and profile one config; failures come back as a report, never as an exception.

    `task` is the already-built task for `job.task` (callers cache it); built when omitted.
    `stop`, when set, ends training at its next step: the report fails, `interrupted`.
    """
    from tnas.nn.quant import check_supported
    from tnas.workers.profile import device_fingerprint
    from tnas.workers.tasks import parse_task

    task = task or parse_task(job.task)
    timings = {}
    try:
        device = deployment_device(job)
        check_supported(config, device)  # before training: no time spent on a trial that fails
        start = time.perf_counter()
        result = train(config, task, job.budget, stop=stop)
        timings["train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        metrics = evaluate_quantized(result, task, device)
        timings["quantized_eval_s"] = time.perf_counter() - start
        fingerprint, latency = device_fingerprint(job.budget.device), {}
        if job.profile is not None:
            try:
                fingerprint, latency = measure_latency(metrics, timings, result, job)
            except ProfileFailed as err:
                return profile_failure(key, config, err, metrics, result, timings)
    except Exception as err:
        return failure_report(err, key, config, timings)
    report = ok_report(key, config, metrics, result.curve, fingerprint, timings)
    return report | {"latency": latency} if latency else report


class InlineEvaluator:
    """Runs each trial in this process when it is submitted: the direct-call baseline.

    It has the same `submit`/`collect`/`close` API as `RayPool`, with one slot. `job` is a
    `TrialJob` or a Mix'n'Match `SupernetJob`; `cache` is this process's `WorkerCache` (a new
    one by default), so a task is built and a supernet loaded once. The task is built here, so
    a bad task spec raises before any trial. Each trial runs with `threads` torch threads
    (default `default_threads(1)`: this process's cores), restored afterwards; its latency is
    still timed with the job's `ProfileSettings.threads`, as on Ray. `interrupt()` (from a
    signal handler) cuts the running trial at its next training step.
    """

    slots = 1

    def __init__(self, job: Job, cache: WorkerCache | None = None, threads: int | None = None):
        self.job = job
        self.cache = cache if cache is not None else WorkerCache()
        self.cache.task(job.task)
        self.threads = threads if threads is not None else default_threads(1)
        self.done: list[dict] = []

    def submit(self, key: str, config: ArchConfig) -> None:
        with training_threads(self.threads):
            self.done.append(self.job.run(key, config, self.cache))

    def interrupt(self) -> None:
        """Stop the trial running now at its next training step (it reports `interrupted`),
        and fail any later one the same way; safe to call from a signal handler."""
        self.cache.stop.set()

    def pending(self) -> int:
        return len(self.done)

    def collect(self, timeout: float | None = None) -> list[dict]:
        reports, self.done = self.done, []
        return reports

    def close(self) -> None:
        self.done = []


__all__ = [
    "FidelityJob",
    "InlineEvaluator",
    "Job",
    "ProfileSettings",
    "TrialJob",
    "WorkerCache",
    "evaluation_metric_names",
    "failure_report",
    "profile_into",
    "rung_key",
    "run_rung",
    "run_trial",
    "split_rung_key",
]
