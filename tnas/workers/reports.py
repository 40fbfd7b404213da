"""The plain dict every evaluator reports for a trial, built here and nowhere else (no torch).

Every evaluator (the Ray pool, a direct call, the replay table) reports the same dict:

    {"key": str, "config_hash": str, "status": "ok" | "failed", "reason": None | code,
     "error": None | one line, "metrics": {name: float}, "curve": [[step, loss], ...],
     "fingerprint": {...}, "attempts": int,
     "timings": {"train_s": float, "quantized_eval_s": float, "profile_s": float}}

`config_hash` is the hash of the config as submitted (the search's key); `metrics` holds the
task's metrics, `train_loss`, and the profile's `latency_ms`, `latency_iqr_ms`, `latency_cv`,
`peak_mem_mb`, `params`, `flops` and `model_bytes`. Failure reasons: `nan_loss`,
`unsupported_quantization`, `out_of_memory`, `timeout`, `worker_died`, `not_recorded` (replay),
`not_a_submodel` (a Mix'n'Match config outside the supernet), `interrupted` (Ctrl-C or a stop
request cut its training), `bad_metric` (a metric that is not a finite number), `profile_failed`
(the latency target could not profile the trained model; the training's metrics are kept),
`error`. A trial run by the Ray pool also says where it ran: `node_ip`, the address of its Ray
node. With latency sources other than the training worker (`tnas.search.latency`), `latency`
says where each `latency_ms@NAME` came from: `{NAME: {"kind": "measured" | "node" |
"predicted", "node_ip", "device", ...}}`.

The task's metrics (`accuracy`, `loss`, ...) are those of the model as it runs with each
layer's `bits` (post-training quantization, `evaluate_quantized`), on the device latency is
measured on (`job.profile.device`, or the training device without profiling); the float
model's values come beside them as `accuracy_fp32`, `loss_fp32`, ..., equal to them when every
layer is 32-bit. Bits without a real kernel on that device fail the trial
(`unsupported_quantization`) before anything is trained.

>>> from tnas.space import ArchConfig
>>> report = failed("t0", ArchConfig(n_layers=1), "timeout", "ran past 60 s\\nstack...")
>>> report["status"], report["reason"], report["error"]
('failed', 'timeout', 'ran past 60 s')
"""

from __future__ import annotations

from tnas.space.config import ArchConfig

FAILURE_REASONS = (
    "nan_loss",
    "unsupported_quantization",
    "out_of_memory",
    "timeout",
    "worker_died",
    "not_recorded",
    "not_a_submodel",
    "interrupted",
    "bad_metric",
    "profile_failed",
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


def failed(key: str, config: ArchConfig, reason: str, error: str, **extra) -> dict:
    """The report of a trial that produced no metrics; `error` is cut to its first line and
    `extra` (`timings`, `attempts`, ...) overrides the defaults."""
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


def ok_report(
    key: str,
    config: ArchConfig,
    metrics: dict[str, float],
    curve=(),
    fingerprint: dict | None = None,
    timings: dict | None = None,
) -> dict:
    """The report of a trial that produced `metrics` (and a learning `curve` of (step, loss))."""
    return {
        "key": key,
        "config_hash": config.hash,
        "status": "ok",
        "reason": None,
        "error": None,
        "metrics": metrics,
        "curve": [list(point) for point in curve],
        "fingerprint": fingerprint or {},
        "timings": timings or {},
        "attempts": 1,
    }


__all__ = ["FAILURE_REASONS", "PROFILE_METRICS", "failed", "ok_report"]
