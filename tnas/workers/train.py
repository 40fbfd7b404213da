"""`train(config, task, budget)`: a short, honest training run of one candidate, and
`evaluate_quantized(result, task, device)`: its metrics with each layer at its `bits`.

AdamW with linear warmup and cosine decay, gradient clipping, a seed, and bf16 autocast on CUDA.
A NaN or infinite loss stops training at once with `TrialFailed("nan_loss")`, and a set `stop`
event at the next step with `TrialFailed("interrupted")`. Training is in float; quantization is
post-training (`tnas.nn.quant.quantize`), so the accuracy a trial reports is that of the network
as it runs with its bits, and the float one is kept beside it. `Budget.threads` sets torch's
threads for the run (never more than this process's cores); `default_threads(workers)` divides
the cores among workers. `save_trained` writes the trained network for `tnas.load_model`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from tnas.nn import build_model
from tnas.nn.quant import quantize
from tnas.space.config import ArchConfig
from tnas.workers.profile import _num_threads, check_device
from tnas.workers.tasks.base import Task

FP32_SUFFIX = "_fp32"  # `accuracy_fp32`: a task metric of the float model, before quantization


class TrialFailed(Exception):
    """A trial that cannot produce metrics; `reason` is a short code such as `nan_loss`."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Budget:
    """How much training a candidate gets. `max_seconds` caps wall-clock time on top of `steps`.

    >>> Budget(steps=100).warmup
    10
    """

    steps: int = 300
    max_seconds: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int | None = None  # default: 10% of the steps, at most 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch threads while training; None: leave the process's

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(100, self.steps // 10)

    def lr_at(self, step: int) -> float:
        """Learning rate at `step` (1-based): linear warmup, then cosine decay to 10%."""
        if step <= self.warmup:
            return self.lr * step / max(1, self.warmup)
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def to_dict(self) -> dict:
        return asdict(self)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_threads(workers: int = 1) -> int:
    """Torch threads each of `workers` processes gets when they share this machine's cores:
    the cores this process may use divided among them, at least 1.

    >>> default_threads(10**6)
    1
    >>> default_threads(1) == available_cores()
    True
    """
    return max(1, available_cores() // max(1, workers))


@contextmanager
def training_threads(threads: int | None) -> Iterator[None]:
    """Torch intra-op threads set to `threads` (at most `available_cores()`, so training never
    oversubscribes the cores) for the block, restored afterwards; None leaves them as they are.

    >>> before = torch.get_num_threads()
    >>> with training_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    with _num_threads(None if threads is None else min(threads, available_cores())):
        yield


@dataclass
class TrainResult:
    config: ArchConfig  # as adapted to the task
    metrics: dict[str, float]  # the task's validation metrics plus train_loss, steps, seconds
    curve: list[tuple[int, float]]  # (step, training loss)
    model: nn.Module = field(repr=False)


def train(
    config: ArchConfig, task: Task, budget: Budget, stop: threading.Event | None = None
) -> TrainResult:
    """Train `config`, adapted to `task`, within `budget`; evaluate it on the validation set.

    Runs with `budget.threads` torch threads (`training_threads`; restored afterwards). `stop`
    is checked before every step: once it is set, training ends with
    `TrialFailed("interrupted")`, so a Ctrl-C costs at most one step.

    >>> from tnas.space import ArchConfig, LayerConfig
    >>> from tnas.workers.tasks import create_task
    >>> layer = LayerConfig(n_heads=2, ffn_dim=32)
    >>> result = train(ArchConfig(d_model=16, n_layers=1, layers=(layer,)),
    ...                create_task("digits"), Budget(steps=3, batch_size=8))
    >>> sorted(result.metrics)
    ['accuracy', 'loss', 'seconds', 'steps', 'train_loss']
    """
    device = check_device(budget.device)
    with training_threads(budget.threads):
        return _train(task.adapt(config), task, budget, device, stop)


def _train(
    config: ArchConfig,
    task: Task,
    budget: Budget,
    device: torch.device,
    stop: threading.Event | None,
) -> TrainResult:
    torch.manual_seed(budget.seed)
    generator = torch.Generator().manual_seed(budget.seed)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    curve: list[tuple[int, float]] = []
    start = time.perf_counter()
    model.train()
    for step in range(1, budget.steps + 1):
        if stop is not None and stop.is_set():
            raise TrialFailed("interrupted", f"stopped before step {step} of {budget.steps}")
        for group in optimizer.param_groups:
            group["lr"] = budget.lr_at(step)
        inputs, targets = task.train_batch(budget.batch_size, generator)
        with autocast:
            loss = task.loss(model(inputs.to(device)), targets.to(device))
        value = loss.item()
        if not math.isfinite(value):
            raise TrialFailed("nan_loss", f"training loss is {value} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), budget.grad_clip)
        optimizer.step()
        curve.append((step, value))
        if budget.max_seconds is not None and time.perf_counter() - start >= budget.max_seconds:
            break
    seconds = time.perf_counter() - start
    with autocast:
        metrics = task.evaluate(model, str(device))
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    if bad:
        raise TrialFailed("nan_loss", f"validation metrics are not finite: {bad}")
    tail = [loss for _, loss in curve[-10:]]
    metrics |= {
        "train_loss": sum(tail) / len(tail),
        "steps": len(curve),
        "seconds": seconds,
    }
    return TrainResult(config=config, metrics=metrics, curve=curve, model=model)


def evaluate_quantized(result: TrainResult, task: Task, device: str = "cpu") -> dict[str, float]:
    """`result.metrics` with the task's metrics measured on the model quantized to each layer's
    `bits` on `device`, and the float model's values kept as `<name>_fp32`.

    Post-training quantization: `quantize(result.model, result.config, device)` (int8 dynamic
    linears, bf16/fp16 blocks), then `task.evaluate` on the validation set. A config whose
    layers are all 32-bit is not quantized: its `<name>_fp32` equal `<name>`, so every trial
    of a task reports the same metric names and `accuracy - accuracy_fp32` is the quantization
    cost (0 in float). `train_loss` and the learning curve are always the float model's.
    Raises `UnsupportedQuantization` for bits without a real kernel on `device`, and
    `TrialFailed("nan_loss")` if a quantized metric is not finite.

    >>> from tnas.space import ArchConfig, LayerConfig
    >>> from tnas.workers.tasks import create_task
    >>> task = create_task("digits")
    >>> layer = LayerConfig(n_heads=2, ffn_dim=32, bits=8)
    >>> result = train(ArchConfig(d_model=16, n_layers=1, layers=(layer,)),
    ...                task, Budget(steps=3, batch_size=8))
    >>> metrics = evaluate_quantized(result, task)
    >>> sorted(metrics)
    ['accuracy', 'accuracy_fp32', 'loss', 'loss_fp32', 'seconds', 'steps', 'train_loss']
    >>> metrics["loss_fp32"] == result.metrics["loss"]
    True
    """
    names = [metric.name for metric in task.metrics]
    floats = {f"{name}{FP32_SUFFIX}": result.metrics[name] for name in names}
    if all(layer.bits == 32 for layer in result.config.layers):
        return result.metrics | floats
    qmodel = quantize(result.model, result.config, device)  # an eval-mode copy on `device`
    measured = task.evaluate(qmodel, str(torch.device(device)))
    quantized = {name: measured[name] for name in names}
    bad = {name: value for name, value in quantized.items() if not math.isfinite(value)}
    if bad:
        raise TrialFailed("nan_loss", f"quantized validation metrics are not finite: {bad}")
    return result.metrics | quantized | floats


def train_quantized(
    config: ArchConfig, task: Task, budget: Budget, stop: threading.Event | None = None
) -> tuple[TrainResult, dict]:
    """`train`, then `evaluate_quantized` on the training device: what `tnas train` reports,
    the training result and its metrics (with each layer's bits, the float ones beside)."""
    result = train(config, task, budget, stop=stop)
    return result, evaluate_quantized(result, task, budget.device)


def save_trained(result: TrainResult, directory: str | Path, **provenance: str) -> Path:
    """Write the trained float network of `result` into `directory` as `model.safetensors` and
    `config.json` (the config as adapted to its task), which `tnas.load_model` reads back;
    `provenance` (the task, the study and trial it retrains, ...) goes into the header.
    Each layer's `bits` are in the config: quantization is applied when the model is deployed
    (`tnas.nn.quant.quantize`), as after a trial. Returns `directory`.

    >>> import tempfile
    >>> from tnas import load_model
    >>> from tnas.workers.tasks import create_task
    >>> result = train(ArchConfig(d_model=16, n_layers=1), create_task("digits"),
    ...                Budget(steps=2, batch_size=8))
    >>> load_model(save_trained(result, tempfile.mkdtemp())).config == result.config
    True
    """
    from tnas.nn.checkpoint import save_model

    directory = Path(directory)
    save_model(result.model, directory, **{k: str(v) for k, v in provenance.items()})
    return directory
