"""Feature vectors for predictors: a space's encoding followed by derived quantities.

`encode(space, config)` is a fixed-length vector in [0, 1] per design space: numbers scaled
over their domain, strings one-hot, one block per possible layer with an `active` flag, zeros
where a layer is inactive or a value unused; fixed knobs are left out. `feature_matrix` appends
quantities derived from the config (parameters, size in MB, ...).

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
from tnas.space.domains import Domain, same_value

# Prefixed so they never clash with `encoded_names(space)` (which has `n_layers`, scaled).
DERIVED_FEATURES = (
    "derived.log10_params",
    "derived.log10_weight_mb",
    "derived.n_layers",
    "derived.total_heads",
    "derived.mean_ffn_dim",
    "derived.mean_bits",
    "derived.attention_layers",
)


def _encoded(space: DesignSpace) -> list[tuple[str, Domain | None]]:
    """(key, domain) of every encoded value, in order; `key` may be `layer3.ffn_dim`, and a
    layer's `active` flag has no domain."""
    layer_knobs = space.searched("per_layer")
    entries = [(k, space.domain(k)) for k in space.searched("global") + space.searched("shared")]
    for i in range(space.max_depth):
        entries.append((f"layer{i}.active", None))
        entries += [(f"layer{i}.{k}", space.domain(k)) for k in layer_knobs]
    return entries


def encoded_names(space: DesignSpace) -> list[str]:
    """Names of `encode`'s entries: `d_model`, `norm=rmsnorm`, `layer0.active`, ...

    >>> from tnas.space import load_space
    >>> encoded_names(load_space("mixers"))[2:5]
    ['norm=layernorm', 'norm=rmsnorm', 'activation=gelu']
    """
    names = []
    for key, domain in _encoded(space):
        if domain is None or not domain.categorical:
            names.append(key)
        else:
            names += [f"{key}={choice}" for choice in domain.values]
    return names


def encode(space: DesignSpace, config: ArchConfig) -> np.ndarray:
    """A fixed-length float vector in [0, 1] for predictors: numbers scaled over their domain,
    strings one-hot, one block per possible layer with an `active` flag, zeros where a
    layer is inactive or a value unused; fixed knobs are left out.

    >>> from tnas.space import load_space
    >>> space = load_space("mixers")
    >>> vector = encode(space, space.sample(np.random.default_rng(0)))
    >>> vector.shape == (len(encoded_names(space)),), float(vector.min()), float(vector.max())
    (True, 0.0, 1.0)
    """
    flat = space.to_flat(config)
    values: list[float] = []
    for key, domain in _encoded(space):
        if domain is None:  # `layer{i}.active`
            values.append(float(int(key.split(".")[0].removeprefix("layer")) < config.n_layers))
        elif domain.categorical:
            value = flat.get(key)
            values += [float(key in flat and same_value(value, c)) for c in domain.values]
        else:
            values.append(domain.scale(flat[key]) if key in flat else 0.0)
    return np.asarray(values, dtype=np.float64)


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
    """Column names of `feature_matrix(space, ...)`: `encoded_names(space)`, then derived ones."""
    return encoded_names(space) + list(DERIVED_FEATURES)


def feature_matrix(space: DesignSpace, configs: Sequence[ArchConfig]) -> np.ndarray:
    """One row per config, `(N, len(feature_names(space)))` float64: `encode(space, config)`
    (values in [0, 1]) followed by `DERIVED_FEATURES` (unscaled; predictors standardise)."""
    width = len(feature_names(space))
    rows = [np.concatenate([encode(space, c), _derived_features(c)]) for c in configs]
    if not rows:
        return np.zeros((0, width), dtype=np.float64)
    return np.asarray(rows, dtype=np.float64)
