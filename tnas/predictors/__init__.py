"""Learned stand-ins for evaluation: features of a config, predictor families, selection.

Imports no torch and no scikit-learn at import time (they load when a predictor is built).

>>> import numpy as np
>>> from tnas.space import load_space
>>> space = load_space("primer")
>>> rng = np.random.default_rng(0)
>>> X = feature_matrix(space, [space.sample(rng) for _ in range(60)])
>>> y = X[:, feature_names(space).index("derived.log10_params")]
>>> predictor = create_predictor("ridge").fit(X[:40], y[:40])
>>> kendall_tau(y[40:], predictor.predict(X[40:])) > 0.7
True
"""

from tnas.predictors.families import (
    PREDICTORS,
    TRUSTED_TYPES,
    Predictor,
    create_predictor,
    load_predictor,
)
from tnas.predictors.features import (
    DERIVED_FEATURES,
    encode,
    encoded_names,
    feature_matrix,
    feature_names,
)
from tnas.predictors.selection import kendall_tau, mape, select_family, spearman

__all__ = [
    "DERIVED_FEATURES",
    "PREDICTORS",
    "TRUSTED_TYPES",
    "Predictor",
    "create_predictor",
    "encode",
    "encoded_names",
    "feature_matrix",
    "feature_names",
    "kendall_tau",
    "load_predictor",
    "mape",
    "select_family",
    "spearman",
]
