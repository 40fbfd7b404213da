"""`tnas demo`: pick a small config from a space, to summarise and train it once."""

from __future__ import annotations

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
