"""`train(config, task, budget)`: a short, honest training run of one candidate, and
`evaluate_quantized(result, task, device)`: its metrics with each layer at its `bits`.

AdamW with linear warmup and cosine decay, gradient clipping, a seed, and bf16 autocast on CUDA.
A NaN or infinite loss stops training at once with `TrialFailed("nan_loss")`, and a set `stop`
event at the next step with `TrialFailed("interrupted")`. Training is in float; quantization is
post-training (`tnas.nn.quant.quantize`), so the accuracy a trial reports is that of the network
as it runs with its bits, and the float one is kept beside it. `Budget.threads` sets torch's
threads for the run (never more than this process's cores); `default_threads(workers)` divides
the cores among workers. `save_trained` writes the trained network for `tnas.load_model`.

Continuation, for multi-fidelity search: `train(..., until=s)` stops at step `s` of a schedule
made for `budget.steps`, and `save_checkpoint` writes where it stopped (weights, optimizer,
step, the batch generator's and torch's RNG states, the learning curve) to one safetensors file
with a JSON header, never a pickle. `train(..., resume=path)` continues from it; training
0 -> 100, then 100 -> 300 gives the same network, bit for bit on CPU, as 0 -> 300 in one go.
`checkpoint_path` names a trial's file in a checkpoint directory, `delete_checkpoint` removes it.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from tnas.nn import build_model
from tnas.nn.checkpoint import CheckpointError
from tnas.nn.quant import quantize
from tnas.space.config import ArchConfig
from tnas.space.errors import one_line
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
class TrainingState:
    """Where a training stopped, beyond the model's weights: what `save_checkpoint` writes so
    that `train(..., resume=path)` continues exactly. `rng` is torch's global RNG state and
    `cuda_rng` the CUDA one (None on CPU), both taken right after the last step."""

    step: int
    budget: Budget  # the one it trains within: its schedule is that of `budget.steps`
    optimizer: torch.optim.Optimizer = field(repr=False)
    generator: torch.Generator = field(repr=False)  # draws the training batches
    rng: torch.Tensor = field(repr=False)
    cuda_rng: torch.Tensor | None = field(repr=False)
    seconds: float  # training time of every segment so far


@dataclass
class TrainResult:
    config: ArchConfig  # as adapted to the task
    metrics: dict[str, float]  # the task's validation metrics plus train_loss, steps, seconds
    curve: list[tuple[int, float]]  # (step, training loss), from step 1 even when resumed
    model: nn.Module = field(repr=False)
    state: TrainingState | None = field(default=None, repr=False)  # with `keep_state`
    resumed_from: int = 0  # the step of the checkpoint it continued from; 0: from scratch
    # What the checkpoint it continued from carried besides the training (`save_checkpoint`'s
    # `measured`: the first rung's profile); empty when trained from scratch.
    measured: dict = field(default_factory=dict)


def train(
    config: ArchConfig,
    task: Task,
    budget: Budget,
    stop: threading.Event | None = None,
    *,
    until: int | None = None,
    resume: str | Path | None = None,
    keep_state: bool = False,
) -> TrainResult:
    """Train `config`, adapted to `task`, within `budget`; evaluate it on the validation set.

    Runs with `budget.threads` torch threads (`training_threads`; restored afterwards). `stop`
    is checked before every step: once it is set, training ends with
    `TrialFailed("interrupted")`, so a Ctrl-C costs at most one step.

    `until` (default `budget.steps`) ends training at that step, the learning rate following
    the schedule of `budget.steps` all the same; `resume` continues from a checkpoint that
    `save_checkpoint` wrote for the same config and budget (a one-line `CheckpointError`
    otherwise, or when it is past `until`). `metrics["steps"]` is the step reached and
    `metrics["seconds"]` the training time of every segment; `budget.max_seconds` caps each
    call alone. `keep_state` keeps the optimizer and RNG states on the result (`state`), for
    `save_checkpoint`; without it they are freed when training ends.

    >>> from tnas.space import ArchConfig, LayerConfig
    >>> from tnas.workers.tasks import create_task
    >>> layer = LayerConfig(n_heads=2, ffn_dim=32)
    >>> result = train(ArchConfig(d_model=16, n_layers=1, layers=(layer,)),
    ...                create_task("digits"), Budget(steps=3, batch_size=8))
    >>> sorted(result.metrics)
    ['accuracy', 'loss', 'seconds', 'steps', 'train_loss']
    """
    until = budget.steps if until is None else until
    if isinstance(until, bool) or not isinstance(until, int) or not 1 <= until <= budget.steps:
        raise ValueError(f"until must be a step in 1..{budget.steps}, got {until!r}")
    device = check_device(budget.device)
    with training_threads(budget.threads):
        result = _train(task.adapt(config), task, budget, device, stop, until, resume)
    if not keep_state:
        result.state = None
    return result


def _train(
    config: ArchConfig,
    task: Task,
    budget: Budget,
    device: torch.device,
    stop: threading.Event | None,
    until: int,
    resume: str | Path | None,
) -> TrainResult:
    torch.manual_seed(budget.seed)
    generator = torch.Generator().manual_seed(budget.seed)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    curve: list[tuple[int, float]] = []
    first, seconds_before, measured = 1, 0.0, {}
    if resume is not None:
        saved = _restore(Path(resume), config, budget, model, optimizer, generator, device)
        if saved["step"] > until:
            raise CheckpointError(
                f"{resume}: checkpoint is at step {saved['step']}, past the target {until}"
            )
        first, seconds_before = saved["step"] + 1, saved["seconds"]
        curve, measured = saved["curve"], saved["measured"]
    start = time.perf_counter()
    model.train()
    for step in range(first, until + 1):
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
    seconds = seconds_before + time.perf_counter() - start
    state = TrainingState(
        step=curve[-1][0],
        budget=budget,
        optimizer=optimizer,
        generator=generator,
        rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        seconds=seconds,
    )
    with autocast:
        metrics = task.evaluate(model, str(device))
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    if bad:
        raise TrialFailed("nan_loss", f"validation metrics are not finite: {bad}")
    tail = [loss for _, loss in curve[-10:]]
    metrics |= {
        "train_loss": sum(tail) / len(tail),
        "steps": state.step,
        "seconds": seconds,
    }
    return TrainResult(
        config=config,
        metrics=metrics,
        curve=curve,
        model=model,
        state=state,
        resumed_from=first - 1,
        measured=measured,
    )


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


CHECKPOINT_KIND = "training_state"  # the `tnas.kind` of a continuation checkpoint
STATE_KEY = "tnas.training_state"  # the JSON header: step, curve, seconds, budget, measured
STATE_VERSION = 1
# The budget fields a checkpoint must share with the run that continues it: the schedule,
# the batches and the optimizer. Device, threads and the wall-clock cap may change.
RESUMABLE_FIELDS = ("steps", "batch_size", "lr", "warmup", "weight_decay", "grad_clip", "seed")
CHECKPOINT_SUFFIX = ".safetensors"
ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")  # per parameter, after a first step


def checkpoint_path(directory: str | Path, config_hash: str, key: str = "") -> Path:
    """Where the continuation checkpoint of a trial lives: `<key>-<config_hash>.safetensors`
    in `directory` (`<config_hash>.safetensors` without a key). `key` (a study and trial,
    say) keeps two searches that share a directory apart; characters other than letters,
    digits, `_`, `.` and `-` become `_`, so a key never names a path outside `directory`.

    >>> checkpoint_path("ckpt", "3f2a9c", "demo/12").as_posix()
    'ckpt/demo_12-3f2a9c.safetensors'
    """
    if not re.fullmatch(r"[0-9a-f]+", config_hash):
        raise ValueError(f"config_hash must be a lowercase hex digest, got {config_hash!r}")
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", key) + "-" if key else ""
    return Path(directory) / f"{prefix}{config_hash}{CHECKPOINT_SUFFIX}"


def delete_checkpoint(directory: str | Path, config_hash: str, key: str = "") -> bool:
    """Remove a trial's checkpoint (`checkpoint_path`); True if there was one.

    >>> import tempfile
    >>> delete_checkpoint(tempfile.mkdtemp(), "3f2a9c", "demo/12")
    False
    """
    path = checkpoint_path(directory, config_hash, key)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _resumable(budget: Budget) -> dict:
    return {name: getattr(budget, name) for name in RESUMABLE_FIELDS}


def save_checkpoint(result: TrainResult, path: str | Path, measured: dict | None = None) -> Path:
    """Write where `result`'s training stopped to `path`, atomically, and return `path`: one
    safetensors file with the model (`model.<name>`), AdamW's moments and step per parameter
    (`optimizer.<name>.<part>`), the batch generator's and torch's RNG states (`rng.*`), and a
    JSON header with the step, the learning curve, the training time, the budget it was made
    for, and `measured`: measurements that do not depend on training (the first rung's
    profile) for later rungs to reuse. Never a pickle.

    >>> import tempfile
    >>> from tnas.workers.tasks import create_task
    >>> task, config = create_task("digits"), ArchConfig(d_model=16, n_layers=1)
    >>> budget = Budget(steps=4, batch_size=8)
    >>> first = train(config, task, budget, until=2, keep_state=True)
    >>> path = save_checkpoint(first, tempfile.mkdtemp() + "/c")
    >>> resumed = train(config, task, budget, resume=path)
    >>> resumed.resumed_from, resumed.curve == train(config, task, budget).curve
    (2, True)
    """
    from tnas.nn.checkpoint import shared_names, write_tensors

    state = result.state
    if state is None:
        raise ValueError("result has no training state to save: train it with keep_state=True")
    skip = shared_names(result.model)
    tensors = {
        f"model.{name}": tensor.detach().cpu()
        for name, tensor in result.model.state_dict().items()
        if name not in skip
    }
    moments = state.optimizer.state_dict()["state"]
    for index, (name, _) in enumerate(result.model.named_parameters()):  # the optimizer's order
        for part, value in moments.get(index, {}).items():
            tensors[f"optimizer.{name}.{part}"] = torch.as_tensor(value).detach().cpu()
    tensors["rng.batches"] = state.generator.get_state()
    tensors["rng.torch"] = state.rng
    if state.cuda_rng is not None:
        tensors["rng.cuda"] = state.cuda_rng.cpu()
    header = {
        "format_version": STATE_VERSION,
        "step": state.step,
        "seconds": state.seconds,
        "curve": [[step, loss] for step, loss in result.curve],
        "budget": _resumable(state.budget),
        "measured": measured or {},
    }
    metadata = {
        "tnas.kind": CHECKPOINT_KIND,
        "tnas.config_hash": result.config.hash,
        STATE_KEY: json.dumps(header),
    }
    path = Path(path)
    write_tensors(tensors, path, metadata)
    return path


def _restore(
    path: Path,
    config: ArchConfig,
    budget: Budget,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
) -> dict:
    """Load a `save_checkpoint` file into the freshly built `model`, `optimizer` and
    `generator`, and set torch's RNG states; return its step, seconds, curve and measured.
    Anything that does not fit the run is a one-line `CheckpointError`."""
    from tnas.nn.checkpoint import json_header, load_tensors, read_safetensors

    tensors, metadata = read_safetensors(path)
    source = str(path)
    if metadata.get("tnas.kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{source}: not a training checkpoint (tnas.kind is not {CHECKPOINT_KIND})"
        )
    if metadata.get("tnas.config_hash") != config.hash:
        raise CheckpointError(
            f"{source}: checkpoint is of config {metadata.get('tnas.config_hash', '?')[:12]}, "
            f"not {config.short_hash}"
        )
    header = _header(json_header(metadata, STATE_KEY, source, "training"), source)
    if header["budget"] != _resumable(budget):
        raise CheckpointError(
            f"{source}: checkpoint was made with budget {header['budget']}, "
            f"this run has {_resumable(budget)}"
        )
    weights = {
        name.removeprefix("model."): tensor
        for name, tensor in tensors.items()
        if name.startswith("model.")
    }
    load_tensors(model, weights, source)
    _load_moments(optimizer, model, tensors, source)
    try:
        generator.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: bad RNG state: {one_line(err)}") from None
    return header


def _header(header: dict, source: str) -> dict:
    """The checked header: step >= 1, a curve of one loss per step from 1, numbers."""
    if header.get("format_version") != STATE_VERSION:
        raise CheckpointError(f"{source}: training state format_version must be {STATE_VERSION}")
    step = header.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise CheckpointError(f"{source}: training step must be an integer >= 1, got {step!r}")
    try:
        curve = [(int(s), float(loss)) for s, loss in header["curve"]]
        seconds = float(header["seconds"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: bad curve or seconds: {one_line(err)}") from None
    if [s for s, _ in curve] != list(range(1, step + 1)):
        raise CheckpointError(f"{source}: the curve does not run from step 1 to {step}")
    measured = header.get("measured")
    if not isinstance(measured, dict) or not isinstance(header.get("budget"), dict):
        raise CheckpointError(f"{source}: training header needs 'budget' and 'measured' objects")
    return header | {"step": step, "curve": curve, "seconds": seconds}


def _load_moments(
    optimizer: torch.optim.Optimizer, model: nn.Module, tensors: dict, source: str
) -> None:
    """AdamW's state from `optimizer.<name>.<part>` tensors, checked against the parameters;
    the parameter groups are the fresh optimizer's (the budget made both alike)."""
    names = [name for name, _ in model.named_parameters()]  # the optimizer's order
    params = dict(model.named_parameters())
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith("optimizer."):
            name, _, part = key.removeprefix("optimizer.").rpartition(".")
            if name not in params:
                raise CheckpointError(f"{source}: optimizer state for unknown tensor {name}")
            if part != "step" and tensor.shape != params[name].shape:
                raise CheckpointError(
                    f"{source}: optimizer {part} of {name} has shape {tuple(tensor.shape)}, "
                    f"expected {tuple(params[name].shape)}"
                )
            moments.setdefault(name, {})[part] = tensor
    incomplete = [name for name in names if set(moments.get(name, ())) != set(ADAMW_STATE)]
    if incomplete:
        expected = ", ".join(ADAMW_STATE)
        raise CheckpointError(f"{source}: optimizer state of {incomplete[0]} is not {expected}")
    state = {index: moments[name] for index, name in enumerate(names)}
    groups = optimizer.state_dict()["param_groups"]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: bad optimizer state: {one_line(err)}") from None
