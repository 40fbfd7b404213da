"""A trial's lifecycle: adapt the config to the task, train it, profile it, report a plain dict.

Every evaluator (the Ray pool, a direct call, the replay table) reports the same dict:

    {"key": str, "config_hash": str, "status": "ok" | "failed", "reason": None | code,
     "error": None | one line, "metrics": {name: float}, "curve": [[step, loss], ...],
     "fingerprint": {...}, "attempts": int,
     "timings": {"train_s": float, "quantized_eval_s": float, "profile_s": float}}

`config_hash` is the hash of the config as submitted (the search's key); `metrics` holds the
task's metrics, `train_loss`, and the profile's `latency_ms`, `latency_iqr_ms`, `latency_cv`,
`peak_mem_mb`, `params`, `flops` and `model_bytes`. Failure reasons: `nan_loss`,
`unsupported_quantization`, `out_of_memory`, `timeout`, `worker_died`, `not_recorded` (replay),
`not_a_submodel` (a Mix'n'Match config outside the supernet), `error`. A trial run by the Ray
pool also says where it ran: `node_ip`, the address of its Ray node.

The task's metrics (`accuracy`, `loss`, ...) are those of the model as it runs with each
layer's `bits` (post-training quantization, `evaluate_quantized`), on the device latency is
measured on (`job.profile.device`, or the training device without profiling); the float
model's values come beside them as `accuracy_fp32`, `loss_fp32`, ..., equal to them when every
layer is 32-bit. Bits without a real kernel on that device fail the trial
(`unsupported_quantization`) before anything is trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from tnas.space.config import ArchConfig
from tnas.workers.train import FP32_SUFFIX, Budget, TrialFailed, evaluate_quantized, train

FAILURE_REASONS = (
    "nan_loss",
    "unsupported_quantization",
    "out_of_memory",
    "timeout",
    "worker_died",
    "not_recorded",
    "not_a_submodel",
    "error",
)


PROFILE_METRICS = (
    "latency_ms",
    "latency_iqr_ms",
    "latency_cv",
    "peak_mem_mb",
    "params",
    "flops",
    "model_bytes",
)


@dataclass(frozen=True)
class ProfileSettings:
    """Where and how latency is measured after training."""

    device: str = "cpu"
    batch: int = 1
    seq_len: int = 128
    repeats: int = 20
    threads: int | None = None


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a run does: the task (a `parse_task` spec), the budget, profiling."""

    task: str = "digits"
    budget: Budget = field(default_factory=Budget)
    profile: ProfileSettings | None = field(default_factory=ProfileSettings)


def reported_metrics(job) -> set[str]:
    """The metric names a successful trial of `job` reports, whatever the config's bits; a
    Mix'n'Match `SupernetJob` reports no training metrics (`supernet_metrics`).

    >>> sorted(reported_metrics(TrialJob(task="digits", profile=None)))
    ['accuracy', 'accuracy_fp32', 'loss', 'loss_fp32', 'seconds', 'steps', 'train_loss']
    """
    from tnas.workers.tasks import parse_task

    if not isinstance(job, TrialJob):
        from tnas.workers.mixnmatch import supernet_metrics

        return supernet_metrics(job)

    task_names = {m.name for m in parse_task(job.task).metrics}
    names = task_names | {name + FP32_SUFFIX for name in task_names}
    names |= {"train_loss", "steps", "seconds"}
    return names | set(PROFILE_METRICS) if job.profile is not None else names


def deployment_device(job: TrialJob) -> str:
    """Where a trained model runs with its bits: the profiling device, else the training one."""
    return job.profile.device if job.profile is not None else job.budget.device


def failed(key: str, config: ArchConfig, reason: str, error: str, **extra) -> dict:
    """The report of a trial that produced no metrics."""
    return {
        "key": key,
        "config_hash": config.hash,
        "status": "failed",
        "reason": reason,
        "error": error.splitlines()[0] if error else reason,
        "metrics": {},
        "curve": [],
        "fingerprint": {},
        "timings": {},
        "attempts": 1,
    } | extra


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


def ok_report(key, config: ArchConfig, metrics: dict, curve, fingerprint, timings) -> dict:
    return {
        "key": key,
        "config_hash": config.hash,
        "status": "ok",
        "reason": None,
        "error": None,
        "metrics": metrics,
        "curve": [list(point) for point in curve],
        "fingerprint": fingerprint,
        "timings": timings,
        "attempts": 1,
    }


def run_trial(key: str, config: ArchConfig, job: TrialJob, task=None) -> dict:
    """Train and profile one config; failures come back as a report, never as an exception.

    `task` is the already-built task for `job.task` (callers cache it); built when omitted.
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
        result = train(config, task, job.budget)
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


def run_job(key: str, config: ArchConfig, job, task=None, supernets=None) -> dict:
    """`run_trial` for a `TrialJob`; `run_submodel_trial` (no training) for a `SupernetJob`,
    with `supernets` the caller's `SupernetCache`."""
    if isinstance(job, TrialJob):
        return run_trial(key, config, job, task)
    from tnas.workers.mixnmatch import run_submodel_trial

    return run_submodel_trial(key, config, job, task, supernets)


class InlineEvaluator:
    """Runs each trial in this process when it is submitted: the direct-call baseline.

    It has the same `submit`/`collect`/`close` API as `RayPool`, with one slot. `job` is a
    `TrialJob` or a Mix'n'Match `SupernetJob`; `supernets` is a `SupernetCache` (made when
    needed), so a supernet is loaded once.
    """

    slots = 1

    def __init__(self, job, supernets=None):
        from tnas.workers.tasks import parse_task

        self.job = job
        self.task = parse_task(job.task)
        self.supernets = supernets
        if supernets is None and not isinstance(job, TrialJob):
            from tnas.workers.mixnmatch import SupernetCache

            self.supernets = SupernetCache(job.device)
        self.done: list[dict] = []

    def submit(self, key: str, config: ArchConfig) -> None:
        self.done.append(run_job(key, config, self.job, self.task, self.supernets))

    def pending(self) -> int:
        return len(self.done)

    def collect(self, timeout: float | None = None) -> list[dict]:
        reports, self.done = self.done, []
        return reports

    def close(self) -> None:
        self.done = []
