"""`tnas demo`: pick a small config from a space, summarise it, and train it once on `textlm`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tnas.space import ArchConfig, DesignSpace


def sample_small(space: DesignSpace, seed: int, max_params: float) -> ArchConfig:
    """A feasible config of the space with at most `max_params` parameters."""
    rng = np.random.default_rng(seed)
    for _ in range(10_000):
        config = space.sample(rng)
        if config.derived()["params"] <= max_params:
            return config
    raise ValueError(f"space {space.name!r} has no config with params <= {max_params:g}")


@dataclass
class Demo:
    config: ArchConfig  # as sampled from the space
    summary: object  # tnas.nn.Summary of the config adapted to textlm
    result: object  # the TrainResult


def run_demo(
    space: DesignSpace,
    steps: int,
    seed: int,
    max_params: float,
    on_sampled: Callable[[ArchConfig, object], None] | None = None,
) -> Demo:
    """Sample a small config (`sample_small`), summarise it, then train it on `textlm` for
    `steps` steps; `on_sampled(config, summary)` is called before the training starts. A
    failed training raises `TrialFailed`."""
    from tnas.nn import summary
    from tnas.workers.tasks import create_task
    from tnas.workers.train import Budget, train

    config = sample_small(space, seed, max_params)
    task = create_task("textlm")
    described = summary(task.adapt(config))
    if on_sampled:
        on_sampled(config, described)
    result = train(config, task, Budget(steps=steps, batch_size=8, lr=3e-3, seed=seed))
    return Demo(config, described, result)
