"""Feature vectors for predictors: a space's encoding followed by derived quantities.

>>> from tnas.space import load_space
>>> import numpy as np
>>> space = load_space("primer")
>>> configs = [space.sample(np.random.default_rng(seed)) for seed in range(3)]
>>> matrix = feature_matrix(space, configs)
>>> matrix.shape == (3, len(feature_names(space)))
True
>>> feature_names(space)[-2:]
['derived.mean_bits', 'derived.attention_layers']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tnas.space import ArchConfig, DesignSpace

# Prefixed so they never clash with `space.feature_names()` (which has `n_layers`, scaled).
DERIVED_FEATURES = (
    "derived.log10_params",
    "derived.log10_weight_mb",
    "derived.n_layers",
    "derived.total_heads",
    "derived.mean_ffn_dim",
    "derived.mean_bits",
    "derived.attention_layers",
)


def _derived_features(config: ArchConfig) -> list[float]:
    quantities = config.derived()
    return [
        math.log10(max(quantities["params"], 1)),
        math.log10(max(quantities["weight_mb"], 1e-9)),
        float(quantities["n_layers"]),
        float(quantities["total_heads"]),
        float(quantities["mean_ffn_dim"]),
        float(quantities["mean_bits"]),
        float(quantities["attention_layers"]),
    ]


def feature_names(space: DesignSpace) -> list[str]:
    """Column names of `feature_matrix(space, ...)`: `space.feature_names()`, then derived ones."""
    return space.feature_names() + list(DERIVED_FEATURES)


def feature_matrix(space: DesignSpace, configs: Sequence[ArchConfig]) -> np.ndarray:
    """One row per config, `(N, len(feature_names(space)))` float64: `space.encode(config)`
    (values in [0, 1]) followed by `DERIVED_FEATURES` (unscaled; predictors standardise)."""
    width = len(feature_names(space))
    rows = [np.concatenate([space.encode(c), _derived_features(c)]) for c in configs]
    if not rows:
        return np.zeros((0, width), dtype=np.float64)
    return np.asarray(rows, dtype=np.float64)
