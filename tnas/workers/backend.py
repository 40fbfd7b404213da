"""A trial's lifecycle: adapt the config to the task, train it, profile it, report a plain dict.

What a trial reports is described in `tnas.workers.reports`, which builds every report. A job
says what each trial of a run does: a `TrialJob` trains and profiles (`run_trial`), a
Mix'n'Match `SupernetJob` (`tnas.workers.mixnmatch`) evaluates a submodel of a trained
supernet. Each kind has its own `run(key, config, cache)` and `metric_names()`, so evaluators
(`InlineEvaluator`, the Ray pool) run any job the same way, with one `WorkerCache` per process.

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
from typing import TYPE_CHECKING, Protocol

import torch

from tnas.space.config import ArchConfig
from tnas.workers.reports import PROFILE_METRICS, failed, ok_report
from tnas.workers.train import (
    FP32_SUFFIX,
    Budget,
    TrialFailed,
    default_threads,
    evaluate_quantized,
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


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a run does: the task (a `parse_task` spec), the budget, profiling."""

    task: str = "digits"
    budget: Budget = field(default_factory=Budget)
    profile: ProfileSettings | None = field(default_factory=ProfileSettings)

    def metric_names(self) -> set[str]:
        """The metric names a successful trial reports, whatever the config's bits.

        >>> sorted(TrialJob(task="digits", profile=None).metric_names())
        ['accuracy', 'accuracy_fp32', 'loss', 'loss_fp32', 'seconds', 'steps', 'train_loss']
        """
        from tnas.workers.tasks import parse_task

        names = evaluation_metric_names(parse_task(self.task), self.profile is not None)
        return names | {"train_loss", "steps", "seconds"}

    def run(self, key: str, config: ArchConfig, cache: WorkerCache) -> dict:
        """`run_trial` with the cache's task and stop event."""
        return run_trial(key, config, self, cache.task(self.task), stop=cache.stop)


def deployment_device(job: TrialJob) -> str:
    """Where a trained model runs with its bits: the profiling device, else the training one."""
    return job.profile.device if job.profile is not None else job.budget.device


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
        fingerprint = device_fingerprint(job.budget.device)
        if job.profile is not None:
            fingerprint = profile_into(metrics, timings, result.config, result.model, job.profile)
    except Exception as err:
        return failure_report(err, key, config, timings)
    return ok_report(key, config, metrics, result.curve, fingerprint, timings)


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
    "InlineEvaluator",
    "Job",
    "ProfileSettings",
    "TrialJob",
    "WorkerCache",
    "evaluation_metric_names",
    "failure_report",
    "profile_into",
    "run_trial",
]
