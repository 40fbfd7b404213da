"""Predictor families: scikit-learn regressors behind one small base, a registry, and safe files.

Each family wraps one or more fitted scikit-learn estimators; `predict_with_std` returns the
mean over them and, for ensembles, their standard deviation (zeros for a single model).
scikit-learn and skops are imported inside functions, so `import tnas.predictors` stays fast.

Every family takes `target`, one of `TARGET_TRANSFORMS`: "standard" fits on the targets as they
are (standardised where the model is not scale-free), "quantile" fits on the targets mapped
through their empirical quantiles onto a standard normal and maps predictions back, so a skewed
target (accuracy with a long tail of broken networks) weighs on the fit by rank, not by distance;
predictions then stay within the training targets' range.

>>> import numpy as np
>>> X = np.random.default_rng(0).random((40, 3))
>>> y = X @ np.array([1.0, 2.0, -1.0])
>>> predictor = create_predictor("ridge").fit(X, y)
>>> mean, std = predictor.predict_with_std(X[:2])
>>> mean.shape, bool((std == 0).all())
((2,), True)
>>> skewed = np.exp(4.0 * y)  # same order as y, long upper tail
>>> ranked = create_predictor("svr", target="quantile").fit(X, skewed).predict(X)
>>> bool(skewed.min() <= ranked.min() and ranked.max() <= skewed.max())
True
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tnas.space.errors import unknown_name

FORMAT_VERSION = 1
TARGET_TRANSFORMS = ("standard", "quantile")
# Types beyond skops' defaults that our own files hold, as `skops.io.get_untrusted_types`
# reports them for every family (GradientBoostingRegressor's trees); anything else is refused.
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


class Predictor:
    """Base of every family: `_make_models` returns unfitted scikit-learn regressors.

    Subclasses set `name` and implement `_make_models`; everything else is shared.
    """

    name: ClassVar[str]

    def __init__(self, seed: int = 0, target: str = "standard"):
        if target not in TARGET_TRANSFORMS:
            raise ValueError(unknown_name("target transform", target, TARGET_TRANSFORMS))
        self.seed = seed
        self.target = target
        self.models: list[Any] = []
        self.n_features: int | None = None

    def _make_models(self) -> list[Any]:
        raise NotImplementedError

    def fit(self, X, y) -> Predictor:
        """Fit on `X` of shape (N, F) and `y` of shape (N,); returns self."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ValueError(f"expected X (N, F) and y (N,), got {X.shape} and {y.shape}")
        if X.shape[0] < 2:
            raise ValueError(f"need at least 2 samples to fit, got {X.shape[0]}")
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise ValueError("X and y must be finite (no NaN or inf)")
        from sklearn.exceptions import ConvergenceWarning

        models = self._make_models()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # QuantileTransformer uses min(n_quantiles, N) quantiles, and says so on small data
            warnings.filterwarnings("ignore", "n_quantiles", UserWarning)
            for model in models:
                model.fit(X, y)
        self.models = models
        self.n_features = X.shape[1]
        return self

    def _check_X(self, X) -> np.ndarray:
        if not self.models:
            raise RuntimeError(f"{self.name} predictor is not fitted; call fit(X, y) first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected X of shape (N, {self.n_features}), got {X.shape}")
        return X

    def predict_with_std(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over the fitted models, each of shape (N,)."""
        X = self._check_X(X)
        predictions = np.stack([np.asarray(m.predict(X), dtype=np.float64) for m in self.models])
        return predictions.mean(axis=0), predictions.std(axis=0)

    def predict(self, X) -> np.ndarray:
        """Predicted targets, shape (N,)."""
        return self.predict_with_std(X)[0]

    def save(self, path: str | Path) -> None:
        """Write a skops file (no pickle) holding the fitted models and a small JSON header."""
        import skops.io

        if not self.models:
            raise RuntimeError(f"{self.name} predictor is not fitted; nothing to save")
        meta = {
            "format": FORMAT_VERSION,
            "family": self.name,
            "n_features": self.n_features,
            "seed": self.seed,
            "params": self._params(),
        }
        skops.io.dump({"meta": json.dumps(meta), "models": list(self.models)}, Path(path))

    def _params(self) -> dict[str, Any]:
        """Constructor keywords other than `seed`, so `load_predictor` rebuilds an equal object."""
        state = {"seed", "models", "n_features"}
        return {k: v for k, v in vars(self).items() if k not in state}

    def __repr__(self) -> str:
        state = f"n_features={self.n_features}" if self.models else "unfitted"
        return f"{type(self).__name__}(seed={self.seed}, {state})"


def _with_target(regressor, target: str, scale_free: bool = False) -> Any:
    """`regressor` fitted on targets transformed as `target` says (see the module docstring);
    a `scale_free` regressor (ridge, trees) is left bare for "standard", where scaling is moot."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.preprocessing import QuantileTransformer, StandardScaler

    if target == "standard" and scale_free:
        return regressor
    if target == "standard":
        return TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())
    quantiles = QuantileTransformer(n_quantiles=1000, output_distribution="normal")
    # the quantile map is inverted by interpolation, exact only up to float error
    return TransformedTargetRegressor(
        regressor=regressor, transformer=quantiles, check_inverse=False
    )


def _scaled_target(regressor, target: str) -> Any:
    """`regressor` after a StandardScaler, fitted on targets transformed as `target` says."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _with_target(make_pipeline(StandardScaler(), regressor), target)


class RidgePredictor(Predictor):
    """StandardScaler + ridge regression, alpha chosen by leave-one-out CV (`RidgeCV`)."""

    name = "ridge"

    def _make_models(self) -> list[Any]:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        return [_with_target(ridge, self.target, scale_free=True)]


class SVRPredictor(Predictor):
    """StandardScaler + RBF support-vector regression on standardised targets."""

    name = "svr"

    def __init__(
        self, seed: int = 0, target: str = "standard", C: float = 10.0, epsilon: float = 0.05
    ):
        super().__init__(seed, target)
        self.C = C
        self.epsilon = epsilon

    def _make_models(self) -> list[Any]:
        from sklearn.svm import SVR

        return [_scaled_target(SVR(kernel="rbf", C=self.C, epsilon=self.epsilon), self.target)]


class GBTPredictor(Predictor):
    """Gradient-boosted regression trees (scikit-learn's `GradientBoostingRegressor`)."""

    name = "gbt"

    def __init__(
        self, seed: int = 0, target: str = "standard", n_estimators: int = 200, max_depth: int = 3
    ):
        super().__init__(seed, target)
        self.n_estimators = n_estimators
        self.max_depth = max_depth

    def _make_models(self) -> list[Any]:
        from sklearn.ensemble import GradientBoostingRegressor

        trees = GradientBoostingRegressor(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=0.05,
            subsample=0.8,
            random_state=self.seed,
        )
        return [_with_target(trees, self.target, scale_free=True)]


class MLPEnsemblePredictor(Predictor):
    """`members` StandardScaler + MLP (64, 64) regressors with seeds `seed, seed + 1, ...`, on
    standardised targets; the std of their predictions is the uncertainty."""

    name = "mlp_ensemble"

    def __init__(
        self,
        seed: int = 0,
        target: str = "standard",
        members: int = 5,
        hidden: tuple[int, ...] = (64, 64),
    ):
        super().__init__(seed, target)
        if members < 2:
            raise ValueError(f"an ensemble needs members >= 2, got {members}")
        self.members = members
        self.hidden = tuple(hidden)

    def _make_models(self) -> list[Any]:
        from sklearn.neural_network import MLPRegressor

        return [
            _scaled_target(
                MLPRegressor(
                    hidden_layer_sizes=self.hidden,
                    solver="lbfgs",  # full-batch: fast and steady on a few hundred rows
                    alpha=1e-3,
                    max_iter=500,
                    random_state=self.seed + member,
                ),
                self.target,
            )
            for member in range(self.members)
        ]


PREDICTORS: dict[str, type[Predictor]] = {
    "ridge": RidgePredictor,
    "svr": SVRPredictor,
    "gbt": GBTPredictor,
    "mlp_ensemble": MLPEnsemblePredictor,
}


def create_predictor(name: str, seed: int = 0, **kw) -> Predictor:
    """An unfitted predictor of family `name`; the error lists the valid names.

    >>> create_predictor("gbt", seed=1)
    GBTPredictor(seed=1, unfitted)
    >>> create_predictor("xgb")
    Traceback (most recent call last):
    ...
    ValueError: unknown predictor 'xgb'; valid: ridge, svr, gbt, mlp_ensemble
    """
    if name not in PREDICTORS:
        raise ValueError(unknown_name("predictor", name, PREDICTORS))
    return PREDICTORS[name](seed=seed, **kw)


def load_predictor(path: str | Path) -> Predictor:
    """Read a file written by `Predictor.save`. Files holding types outside skops' defaults and
    `TRUSTED_TYPES`, or not laid out as ours, are refused with a one-line ValueError."""
    import skops.io

    path = Path(path)
    try:
        data = path.read_bytes()
        untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    except OSError as err:
        raise ValueError(f"{path}: cannot read: {err}") from None
    except Exception as err:
        raise ValueError(f"{path}: not a tnas predictor file ({type(err).__name__})") from None
    if untrusted:
        raise ValueError(f"{path}: refusing to load untrusted types: {', '.join(untrusted)}")
    try:
        content = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
        meta = json.loads(content["meta"])
        family, n_features, models = meta["family"], meta["n_features"], content["models"]
        if meta["format"] != FORMAT_VERSION or not isinstance(models, list) or not models:
            raise ValueError("bad layout")
        if not all(hasattr(model, "predict") for model in models):
            raise ValueError("bad layout")
        params = dict(meta.get("params", {}))
    except Exception as err:
        raise ValueError(f"{path}: not a tnas predictor file ({type(err).__name__})") from None
    if family not in PREDICTORS:
        raise ValueError(f"{path}: {unknown_name('predictor', family, PREDICTORS)}")
    try:
        predictor = PREDICTORS[family](seed=int(meta["seed"]), **params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad {family} parameters: {err}") from None
    predictor.models = models
    predictor.n_features = int(n_features)
    return predictor
