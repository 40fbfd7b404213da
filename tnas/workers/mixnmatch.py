"""Mix'n'Match trials: a submodel evaluated straight from a trained supernet, never trained.

A `SupernetJob` is what `tnas search launch --supernet CKPT` runs for each trial instead of a
`TrialJob`. `run_submodel_trial` adapts the config to the task, places it in the supernet
(`Supernet.resolve`: a config outside the supernet fails, `not_a_submodel`), and reports the
same plain dict as `run_trial` (`tnas.workers.reports`):

- the task's metrics of the float submodel from the supernet's sliced forward
  (`supernet(tokens, sub)`, run by `SlicedSubmodel` as an ordinary module), as `<name>_fp32`;
- the task's metrics with each layer at its `bits`, measured on the extracted dense model
  quantized (`evaluate_quantized`), or the float ones when every layer is 32-bit;
- latency, memory, params and FLOPs measured by `profile` on the extracted dense model with
  the config's bits, not on the sliced supernet.

Nothing is trained, so there is no `train_loss`, `steps`, `seconds` or learning curve. Each
process loads a checkpoint once: `job.load(cache)` keeps it in the process's `WorkerCache`
(a `SupernetCache`, keyed by path, size and mtime).

>>> import tempfile
>>> from pathlib import Path
>>> from tnas.elastic import Supernet, save_supernet
>>> from tnas.space import ArchConfig, LayerConfig
>>> from tnas.workers.tasks import create_task
>>> task = create_task("digits")
>>> big = task.adapt(ArchConfig(d_model=16, n_layers=2,
...                             layers=(LayerConfig(n_heads=2, ffn_dim=32),) * 2))
>>> path = Path(tempfile.mkdtemp()) / "supernet.safetensors"
>>> save_supernet(Supernet(big), path)
>>> job = SupernetJob(task="digits", supernet=str(path),
...                   profile=ProfileSettings(seq_len=16, repeats=2))
>>> small = big.replace(n_layers=1, layers=(LayerConfig(n_heads=2, ffn_dim=16),))
>>> report = run_submodel_trial("t0", small, job)
>>> report["status"], job.metric_names() <= set(report["metrics"]), report["curve"]
('ok', True, [])
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from tnas.elastic import (
    Submodel,
    SubmodelError,
    Supernet,
    extract,
    largest,
    load_supernet,
    resolve,
)
from tnas.space.config import ArchConfig
from tnas.workers.backend import (
    ProfileSettings,
    WorkerCache,
    evaluation_metric_names,
    failure_report,
    profile_into,
)
from tnas.workers.reports import failed, ok_report
from tnas.workers.train import TrainResult, TrialFailed, evaluate_quantized


@dataclass(frozen=True)
class SupernetJob:
    """What every Mix'n'Match trial of a run does: the task, the supernet checkpoint (a path),
    the device the sliced forward runs on, and profiling of the extracted model."""

    task: str
    supernet: str
    profile: ProfileSettings | None = field(default_factory=ProfileSettings)
    device: str = "cpu"

    def metric_names(self) -> set[str]:
        """The metric names a successful Mix'n'Match trial reports (no training metrics).

        >>> sorted(SupernetJob(task="digits", supernet="x", profile=None).metric_names())
        ['accuracy', 'accuracy_fp32', 'loss', 'loss_fp32']
        """
        from tnas.workers.tasks import parse_task

        return evaluation_metric_names(parse_task(self.task), self.profile is not None)

    def load(self, cache: WorkerCache) -> Supernet:
        """The supernet, loaded once per process into `cache.supernets` (made here if None)
        and again only when its file changes; the checkpoint's error if it cannot load."""
        if cache.supernets is None:
            cache.supernets = SupernetCache(self.device)
        return cache.supernets.get(self.supernet)

    def run(self, key: str, config: ArchConfig, cache: WorkerCache) -> dict:
        """`run_submodel_trial` with the cache's task and supernet."""
        return run_submodel_trial(key, config, self, cache)


class SupernetCache:
    """One process's loaded supernet: `get(path)` loads it once and again only when the file
    at `path` changes (its size or mtime), keeping one supernet at a time."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.key: tuple | None = None
        self.supernet: Supernet | None = None
        self.loads = 0

    def get(self, path: str | Path) -> Supernet:
        try:
            stat = os.stat(path)
            key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = None  # let load_supernet name the problem
        if key is None or key != self.key:
            self.supernet = self.key = None  # free the old one before loading the new one
            self.supernet = load_supernet(path).to(self.device).eval()
            self.key = key
            self.loads += 1
        return self.supernet


class SlicedSubmodel(nn.Module):
    """Submodel `sub` run on the supernet's weights as an ordinary module: `forward(tokens)`
    is `supernet(tokens, sub)`, so a task's `evaluate(model)` takes it unchanged."""

    def __init__(self, supernet: Supernet, sub: Submodel):
        super().__init__()
        self.supernet = supernet
        self.sub = sub
        self.config = sub.config

    def forward(self, tokens: Tensor) -> Tensor:
        return self.supernet(tokens, self.sub)


def supernet_space(path: str | Path) -> str:
    """The space a supernet checkpoint records (may be empty), read from its header alone."""
    from safetensors import SafetensorError, safe_open

    from tnas.elastic.extraction import read_header
    from tnas.nn.checkpoint import CheckpointError
    from tnas.space.errors import one_line

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        problem = one_line(err)
        raise CheckpointError(f"{path}: not a readable safetensors file ({problem})") from None
    return read_header(metadata, str(path)).get("space", "")


def check_space(supernet: ArchConfig, space, task) -> None:
    """Raise a one-line `ValueError` unless the supernet was built for `task` and every config
    of `space`, adapted to the task, is a submodel of it (true when its largest config is)."""
    adapted = task.adapt(supernet)
    if adapted != supernet:
        fields = ("vocab_size", "max_seq_len", "head", "n_classes")
        diffs = [
            f"{name} {getattr(supernet, name)!r} (task: {getattr(adapted, name)!r})"
            for name in fields
            if getattr(supernet, name) != getattr(adapted, name)
        ]
        raise ValueError(f"the supernet was not built for task {task.spec}: {', '.join(diffs)}")
    try:
        resolve(supernet, task.adapt(largest(space)))
    except SubmodelError as err:
        raise ValueError(f"space {space.name!r} does not fit the supernet: {err}") from None


def run_submodel_trial(
    key: str, config: ArchConfig, job: SupernetJob, cache: WorkerCache | None = None
) -> dict:
    """Evaluate one config from the supernet and profile its extracted model; failures come
    back as a report, never as an exception. `cache` is the caller's (a new one by default)."""
    from tnas.nn.quant import check_supported
    from tnas.workers.profile import device_fingerprint

    cache = cache if cache is not None else WorkerCache()
    timings: dict[str, float] = {}
    try:
        task = cache.task(job.task)
        deployment = job.profile.device if job.profile is not None else job.device
        start = time.perf_counter()
        supernet = job.load(cache)
        timings["load_s"] = time.perf_counter() - start
        try:
            sub = supernet.resolve(task.adapt(config))
        except SubmodelError as err:
            return failed(key, config, "not_a_submodel", f"not a submodel of the supernet: {err}")
        check_supported(sub.config, deployment)
        start = time.perf_counter()
        floats = task.evaluate(SlicedSubmodel(supernet, sub), job.device)
        timings["eval_s"] = time.perf_counter() - start
        bad = {name: value for name, value in floats.items() if not math.isfinite(value)}
        if bad:
            raise TrialFailed("nan_loss", f"validation metrics are not finite: {bad}")
        start = time.perf_counter()
        model = extract(supernet, sub)
        timings["extract_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = TrainResult(config=sub.config, metrics=floats, curve=[], model=model)
        metrics = evaluate_quantized(result, task, deployment)
        timings["quantized_eval_s"] = time.perf_counter() - start
        fingerprint = device_fingerprint(job.device)
        if job.profile is not None:
            fingerprint = profile_into(metrics, timings, sub.config, model, job.profile)
    except Exception as err:  # a bad checkpoint or a bug must not end the whole search
        return failure_report(err, key, config, timings)
    return ok_report(key, config, metrics, [], fingerprint, timings)


__all__ = [
    "SlicedSubmodel",
    "SupernetCache",
    "SupernetJob",
    "check_space",
    "run_submodel_trial",
    "supernet_space",
]
