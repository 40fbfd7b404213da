"""Joint MatFormer training of a supernet, with safetensors checkpoints, resume, and a Ray runner.

Each step draws one batch and sums the task loss of several submodels run on the supernet's
shared weights, then takes one AdamW step (warmup and cosine LR from `Budget.lr_at`, gradient
clipping, bf16 autocast on CUDA, as `tnas.workers.train.train` does):

- `strategy="all"`: every nested granularity (`tnas.elastic.Granularities.nested`), as in
  MatFormer's joint training of its g nested models;
- `strategy="sandwich"`: the largest and the smallest submodel always, plus `samples` random
  Mix'n'Match submodels (per-layer choices drawn from the supernet's space).

A checkpoint is two safetensors files, each written atomically: the supernet itself
(`tnas.elastic.save_supernet`, which `tnas extract --supernet` reads) and, beside it at
`training_state_path(checkpoint)`, the AdamW moments, the RNG states and the step. With
`resume=True` training continues from the checkpoint's step to the budget's, and the weights
equal those of a run that was never interrupted. A NaN or infinite loss raises
`TrialFailed("nan_loss")` before the step is applied, so the last checkpoint stays intact.
`train_supernet_job` is what `tnas supernet train` runs, here or as one Ray task.

>>> from tnas.space import DesignSpace
>>> from tnas.workers.tasks import create_task
>>> from tnas.workers.train import Budget
>>> space = DesignSpace.from_dict({"name": "tiny", "global": {"d_model": 16},
...     "shared": {"n_heads": 2}, "per_layer": {"ffn_dim": {"choices": [16, 32]}}})
>>> task = create_task("digits")
>>> supernet = build_supernet(space, task)
>>> result = train_supernet(supernet, task, Budget(steps=2, batch_size=8), space=space)
>>> result.step, sorted(result.metrics)
(2, ['largest_loss', 'seconds', 'smallest_loss', 'step', 'steps', 'train_loss'])
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tnas.elastic.extraction import extract, load_supernet, save_supernet
from tnas.elastic.granularities import Granularities
from tnas.elastic.submodel import Submodel, largest
from tnas.elastic.supernet import Supernet
from tnas.nn.checkpoint import (
    CheckpointError,
    json_header,
    read_safetensors,
    write_tensors,
)
from tnas.space.config import ArchConfig
from tnas.space.errors import one_line, unknown_name
from tnas.space.space import DesignSpace, load_space
from tnas.workers.tasks import parse_task
from tnas.workers.tasks.base import Task
from tnas.workers.train import Budget, TrialFailed

STRATEGIES = ("sandwich", "all")
STATE_KEY = "tnas.supernet_training"
STATE_VERSION = 1
RUN_FIELDS = ("config_hash", "strategy", "samples", "seed", "task", "batch_size", "space")


def training_state_path(checkpoint: str | Path) -> Path:
    """Where the training state of supernet checkpoint `checkpoint` lives.

    >>> training_state_path("runs/supernet.safetensors").name
    'supernet.train.safetensors'
    """
    path = Path(checkpoint)
    return path.with_name(f"{path.name.removesuffix('.safetensors')}.train.safetensors")


def build_supernet(space: DesignSpace | str, task: Task, seed: int = 0) -> Supernet:
    """A freshly initialised supernet (seeded) of `space`'s largest config, adapted to `task`.

    A space given by name or path is recorded as such, so `train_supernet` can reload it.
    """
    loaded = load_space(space) if isinstance(space, str) else space
    name = space if isinstance(space, str) else space.name
    torch.manual_seed(seed)
    return Supernet(task.adapt(largest(loaded)), space=name)


@dataclass(frozen=True)
class StepReport:
    """What one training step did; `on_step` receives it after the step (and its checkpoint)."""

    step: int
    lr: float
    submodels: tuple[Submodel, ...]  # the largest, then the smallest, then the others
    losses: tuple[float, ...]  # the training loss of each, in the same order


@dataclass
class SupernetTrainResult:
    supernet: Supernet = field(repr=False)
    start_step: int  # the step training resumed from (0 when fresh)
    step: int  # the last step done
    metrics: dict[str, float]  # train_loss (summed), largest_loss, smallest_loss, steps, ...
    curve: list[tuple[int, float]]  # (step, summed training loss)


def _resolve_space(supernet: Supernet, space: DesignSpace | str | None) -> DesignSpace | None:
    if space is None and not supernet.space:
        return None
    try:
        return load_space(space or supernet.space) if not isinstance(space, DesignSpace) else space
    except (ValueError, OSError) as err:
        raise ValueError(
            f"cannot load the supernet's space {space or supernet.space!r} ({one_line(err)}); "
            "pass space="
        ) from None


def _describe(sub: Submodel) -> str:
    widths = ",".join(str(layer.ffn_dim) for layer in sub.config.layers)
    heads = ",".join(str(layer.n_heads) for layer in sub.config.layers)
    return f"submodel kept={list(sub.kept)} ffn_dim=[{widths}] n_heads=[{heads}]"


def train_supernet(
    supernet: Supernet,
    task: Task,
    budget: Budget,
    *,
    strategy: str = "sandwich",
    samples: int = 2,
    space: DesignSpace | str | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
) -> SupernetTrainResult:
    """Train `supernet` in place on `task` for steps 1..`budget.steps` (the seed is
    `budget.seed`); see the module docstring for the strategies.

    `space` (a `DesignSpace`, preset name or YAML path) gives the granularities and the
    Mix'n'Match samples; by default the supernet's own `space`, and without one MatFormer's FFN
    granularities (`Granularities.of`). The supernet must be adapted to the task
    (`build_supernet`). With `checkpoint`, both checkpoint files are written every
    `checkpoint_every` steps and at the end; `resume=True` first loads them (a one-line
    `CheckpointError` if they are missing, corrupt, or from another run: a different
    supernet, task, strategy, samples, seed, batch size or space) and continues from their step.
    Raises `TrialFailed("nan_loss")` on a non-finite loss or gradient, before that step is
    applied or saved.
    """
    if strategy not in STRATEGIES:
        raise ValueError(unknown_name("strategy", strategy, STRATEGIES))
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    adapted = task.adapt(supernet.config)
    if adapted != supernet.config:
        raise ValueError(
            f"supernet {supernet.config.short_hash} is not adapted to task {task.name!r} "
            "(vocab_size, max_seq_len, head, n_classes); build it with build_supernet(space, task)"
        )
    loaded_space = _resolve_space(supernet, space)
    grains = Granularities.of(supernet, loaded_space)
    chain = grains.nested(supernet)
    fixed = [chain[-1], chain[0]] if len(chain) > 1 else [chain[0]]
    device = torch.device(budget.device)
    supernet.to(device).train()
    torch.manual_seed(budget.seed)
    data_rng = torch.Generator().manual_seed(budget.seed)
    pick_rng = np.random.default_rng(budget.seed)
    optimizer = torch.optim.AdamW(
        supernet.parameters(), lr=budget.lr, weight_decay=budget.weight_decay
    )
    state = TrainingState(
        optimizer,
        [name for name, _ in supernet.named_parameters()],
        {
            "config_hash": supernet.config.hash,
            "strategy": strategy,
            "samples": samples,
            "seed": budget.seed,
            "task": task.spec,
            "batch_size": budget.batch_size,
            "space": loaded_space.name if loaded_space is not None else "",
        },
        data_rng,
        pick_rng,
    )
    start_step = state.load(checkpoint, supernet) if resume else 0
    supernet.step = start_step
    saved_step = start_step if resume else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    curve: list[tuple[int, float]] = []
    extremes: list[tuple[float, float]] = []
    start = time.perf_counter()
    for step in range(start_step + 1, budget.steps + 1):
        lr = budget.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if strategy == "all":
            submodels = fixed + chain[1:-1]
        else:
            submodels = fixed + [grains.sample(supernet, pick_rng) for _ in range(samples)]
        inputs, targets = task.train_batch(budget.batch_size, data_rng)
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for sub in submodels:  # one backward each: the gradients sum, the activations do not
            with autocast:
                loss = task.loss(supernet(inputs, sub), targets)
            value = loss.item()
            if not math.isfinite(value):
                raise TrialFailed(
                    "nan_loss", f"training loss of {_describe(sub)} is {value} at step {step}"
                )
            loss.backward()
            losses.append(value)
        norm = nn.utils.clip_grad_norm_(supernet.parameters(), budget.grad_clip)
        if not torch.isfinite(norm):
            raise TrialFailed("nan_loss", f"gradient norm is {norm.item()} at step {step}")
        optimizer.step()
        supernet.step = step
        curve.append((step, sum(losses)))
        extremes.append((losses[0], losses[1 if len(losses) > 1 else 0]))
        if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
            state.save(checkpoint, supernet)
            saved_step = step
        if on_step is not None:
            on_step(StepReport(step, lr, tuple(submodels), tuple(losses)))
        if budget.max_seconds is not None and time.perf_counter() - start >= budget.max_seconds:
            break
    if checkpoint is not None and saved_step != supernet.step:
        state.save(checkpoint, supernet)
    seconds = time.perf_counter() - start
    metrics: dict[str, float] = {"step": supernet.step, "steps": len(curve), "seconds": seconds}
    if curve:
        tail = slice(-10, None)
        metrics |= {
            "train_loss": float(np.mean([loss for _, loss in curve[tail]])),
            "largest_loss": float(np.mean([big for big, _ in extremes[tail]])),
            "smallest_loss": float(np.mean([small for _, small in extremes[tail]])),
        }
    return SupernetTrainResult(supernet, start_step, supernet.step, metrics, curve)


@dataclass
class TrainingState:
    """What resuming needs besides the weights: AdamW moments (by parameter name), the RNG
    states, and the run's identity (`RUN_FIELDS`), which must match on resume."""

    optimizer: torch.optim.Optimizer
    names: list[str]  # parameter names, in the optimizer's order
    run: dict[str, object]
    data_rng: torch.Generator
    pick_rng: np.random.Generator

    def save(self, checkpoint: str | Path, supernet: Supernet) -> None:
        """The supernet, then its training state (a crash between them is caught on resume)."""
        save_supernet(supernet, checkpoint)
        tensors: dict[str, Tensor] = {
            "rng.data": self.data_rng.get_state(),
            "rng.torch": torch.get_rng_state(),
        }
        moments = self.optimizer.state_dict()["state"]
        for index, name in enumerate(self.names):
            for key, value in moments.get(index, {}).items():
                tensors[f"optim.{name}.{key}"] = torch.as_tensor(value).cpu()
        header = {
            "format_version": STATE_VERSION,
            "step": supernet.step,
            "run": self.run,
            "sampler_rng": self.pick_rng.bit_generator.state,
        }
        metadata = {STATE_KEY: json.dumps(header, sort_keys=True)}
        write_tensors(tensors, training_state_path(checkpoint), metadata)

    def load(self, checkpoint: str | Path, supernet: Supernet) -> int:
        """Load the checkpoint into `supernet`, the optimizer and the RNGs; its step."""
        saved = load_supernet(checkpoint, config=supernet.config)
        path = training_state_path(checkpoint)
        source = str(path)
        tensors, metadata = read_safetensors(path)
        header = self._header(metadata, source)
        if header["step"] != saved.step:
            raise CheckpointError(
                f"{source}: training state is at step {header['step']} but supernet {checkpoint} "
                f"is at step {saved.step} (interrupted while saving?)"
            )
        for key in RUN_FIELDS:
            theirs, mine = header["run"].get(key), self.run[key]
            if theirs != mine:
                raise CheckpointError(
                    f"{source}: this run has {key} {mine!r}, the checkpoint's had {theirs!r}"
                )
        self._load_moments(tensors, source)
        try:
            self.data_rng.set_state(tensors["rng.data"])
            torch.set_rng_state(tensors["rng.torch"])
            self.pick_rng.bit_generator.state = header["sampler_rng"]
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{source}: bad RNG state: {one_line(err)}") from None
        supernet.load_state_dict(saved.state_dict())
        return saved.step

    @staticmethod
    def _header(metadata: dict[str, str], source: str) -> dict:
        header = json_header(metadata, STATE_KEY, source, "supernet training state")
        if header.get("format_version") != STATE_VERSION:
            raise CheckpointError(
                f"{source}: training state format_version must be {STATE_VERSION}"
            )
        step, run = header.get("step"), header.get("run")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise CheckpointError(f"{source}: training step must be an integer >= 0, got {step!r}")
        if not isinstance(run, dict):
            raise CheckpointError(f"{source}: training header has no 'run' object")
        return header

    def _load_moments(self, tensors: dict[str, Tensor], source: str) -> None:
        params = dict(zip(self.names, self.optimizer.param_groups[0]["params"], strict=True))
        moments: dict[str, dict[str, Tensor]] = {}
        for key, tensor in tensors.items():
            if key.startswith("optim."):
                name, _, part = key.removeprefix("optim.").rpartition(".")
                if name not in params:
                    raise CheckpointError(f"{source}: optimizer state for unknown tensor {name}")
                moments.setdefault(name, {})[part] = tensor
        missing = [name for name in self.names if name not in moments]
        if moments and missing:
            raise CheckpointError(f"{source}: no optimizer state for {', '.join(missing)}")
        for name, parts in moments.items():
            for part, tensor in parts.items():
                if part != "step" and tensor.shape != params[name].shape:
                    raise CheckpointError(
                        f"{source}: optimizer {part} of {name} has shape {tuple(tensor.shape)}, "
                        f"expected {tuple(params[name].shape)}"
                    )
        state = {index: moments[name] for index, name in enumerate(self.names) if name in moments}
        groups = self.optimizer.state_dict()["param_groups"]
        try:
            self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{source}: bad optimizer state: {one_line(err)}") from None


def evaluate_submodel(
    supernet: Supernet, sub: ArchConfig | Submodel, task: Task
) -> dict[str, float]:
    """The task's validation metrics of submodel `sub`, cut out as a dense model."""
    device = next(supernet.parameters()).device
    return task.evaluate(extract(supernet, sub), str(device))


def run_training(
    space: DesignSpace | str,
    task_spec: str,
    budget: Budget,
    checkpoint: str,
    strategy: str,
    samples: int,
    checkpoint_every: int | None,
    resume: bool,
    threads: int,
) -> dict:
    """The body of `train_supernet_on_ray`'s Ray task: a plain report dict, never a raise for a
    failed run (`status` "failed", with `reason` and `message`)."""
    torch.set_num_threads(threads)
    task = parse_task(task_spec)
    loaded = load_space(space) if isinstance(space, str) else space
    supernet = build_supernet(space, task, seed=budget.seed)
    try:
        result = train_supernet(
            supernet,
            task,
            budget,
            strategy=strategy,
            samples=samples,
            space=loaded,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )
    except TrialFailed as err:
        return {"status": "failed", "reason": err.reason, "message": err.message}
    return {
        "status": "ok",
        "checkpoint": checkpoint,
        "start_step": result.start_step,
        "step": result.step,
        "metrics": result.metrics,
        "curve": result.curve,
    }


def train_supernet_on_ray(
    space: DesignSpace | str,
    task: Task | str,
    budget: Budget,
    *,
    checkpoint: str | Path,
    strategy: str = "sandwich",
    samples: int = 2,
    checkpoint_every: int | None = None,
    resume: bool = False,
    num_cpus: int = 1,
    num_gpus: float | None = None,
    address: str | None = None,
    ray_init: dict | None = None,
) -> dict:
    """`train_supernet` of a fresh `build_supernet(space, task, budget.seed)` as one Ray task
    reserving `num_cpus` CPUs (its torch threads) and `num_gpus` GPUs (default: 1 when
    `budget.device` is CUDA, else 0). Ray is started on loopback or joined at `address` as
    `tnas.workers.pool.connect` does, and shut down after if it was started here.

    `checkpoint` must be a path the Ray node can write (relative paths are made absolute here).
    Returns `{"status": "ok", "checkpoint", "start_step", "step", "metrics", "curve"}`; a failed
    run raises `TrialFailed`, and a bad checkpoint or argument its own error, on this side.
    """
    import ray
    import ray.exceptions

    from tnas.workers.pool import connect

    if strategy not in STRATEGIES:
        raise ValueError(unknown_name("strategy", strategy, STRATEGIES))
    spec = task if isinstance(task, str) else task.spec
    gpus = (1 if budget.device.startswith("cuda") else 0) if num_gpus is None else num_gpus
    path = str(Path(checkpoint).absolute())
    owns_ray = connect(address, **(ray_init or {}))
    try:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=gpus, max_retries=0)(run_training)
        ref = remote.remote(
            space, spec, budget, path, strategy, samples, checkpoint_every, resume, num_cpus
        )
        try:
            report = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
    finally:
        if owns_ray:
            ray.shutdown()
    if report["status"] != "ok":
        raise TrialFailed(report["reason"], report["message"])
    return report


def train_supernet_job(
    space: DesignSpace | str,
    task: str,
    budget: Budget,
    checkpoint: str | Path,
    *,
    strategy: str = "sandwich",
    samples: int = 2,
    checkpoint_every: int | None = None,
    resume: bool = False,
    threads: int = 1,
    ray: bool = False,
    address: str | None = None,
) -> dict:
    """What `tnas supernet train` runs: `train_supernet` of a fresh `build_supernet(space,
    task, budget.seed)` (`task` a `parse_task` spec), checkpointed at `checkpoint`; in this
    process with `threads` torch threads, or, when `ray` or `address` is given, as one Ray
    task reserving `threads` CPUs (`train_supernet_on_ray`, joining the cluster at `address`).

    Returns `{"status": "ok", "checkpoint", "start_step", "step", "metrics", "curve"}`; a
    failed run raises `TrialFailed`, a bad checkpoint `CheckpointError`, a bad argument
    `ValueError`.
    """
    if ray or address:
        return train_supernet_on_ray(
            space,
            task,
            budget,
            checkpoint=checkpoint,
            strategy=strategy,
            samples=samples,
            checkpoint_every=checkpoint_every,
            resume=resume,
            num_cpus=threads,
            address=address,
        )
    report = run_training(
        space, task, budget, str(checkpoint), strategy, samples, checkpoint_every, resume, threads
    )
    if report["status"] != "ok":
        raise TrialFailed(report["reason"], report["message"])
    return report


__all__ = [
    "STRATEGIES",
    "StepReport",
    "SupernetTrainResult",
    "TrainingState",
    "build_supernet",
    "evaluate_submodel",
    "run_training",
    "train_supernet",
    "train_supernet_job",
    "train_supernet_on_ray",
    "training_state_path",
]
