"""Ranking metrics and K-fold selection of a predictor family.

>>> kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
(1.0, -1.0)
>>> mape([1.0, 2.0, 4.0], [1.0, 2.0, 4.0])
0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tnas.predictors.families import PREDICTORS, TARGET_TRANSFORMS, Predictor, create_predictor
from tnas.space.errors import unknown_name


def _pair(y, p, least: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.size} vs {p.size}")
    if y.size < least:
        raise ValueError(f"need at least {least} values, got {y.size}")
    return y, p


def kendall_tau(y, p) -> float:
    """Kendall's tau-b between targets and predictions; NaN when either is constant."""
    from scipy.stats import kendalltau

    return float(kendalltau(*_pair(y, p, 2)).statistic)


def spearman(y, p) -> float:
    """Spearman's rank correlation; NaN when either is constant."""
    from scipy.stats import spearmanr

    return float(spearmanr(*_pair(y, p, 2)).statistic)


def mape(y, p) -> float:
    """Mean absolute percentage error as a fraction (0.1 is 10 %); targets must be nonzero."""
    y, p = _pair(y, p, 1)
    if np.any(y == 0):
        raise ValueError("mape is undefined for zero targets")
    return float(np.mean(np.abs(y - p) / np.abs(y)))


METRICS = {"kendall": kendall_tau, "spearman": spearman, "mape": mape}
HIGHER_IS_BETTER = {"kendall": True, "spearman": True, "mape": False}


def select_family(
    X,
    y,
    families: Sequence[str] | None = None,
    metric: str = "kendall",
    folds: int = 5,
    seed: int = 0,
    targets: Sequence[str] = ("standard",),
) -> tuple[str, dict[str, float], Predictor]:
    """Score each family by shuffled, seeded K-fold CV (mean of the per-fold `metric`), then fit
    the best on all of `X, y`. Returns `(best_name, {name: score}, fitted_predictor)`.

    With several `targets` (from `TARGET_TRANSFORMS`) each family is scored under each on the
    same folds; a family's score is that of its best target, and the returned predictor is
    built with the winning pair (its `target` says which). NaN scores (a constant fold) rank
    last; ties go to the family listed first, then to the target listed first.

    >>> X = np.random.default_rng(0).random((60, 3))
    >>> name, scores, predictor = select_family(X, X.sum(axis=1), families=["ridge", "gbt"])
    >>> name, sorted(scores), predictor.target
    ('ridge', ['gbt', 'ridge'], 'standard')
    """
    from sklearn.model_selection import KFold

    if metric not in METRICS:
        raise ValueError(unknown_name("metric", metric, METRICS))
    names = list(PREDICTORS) if families is None else list(families)
    if not names:
        raise ValueError("families is empty")
    for name in names:
        if name not in PREDICTORS:
            raise ValueError(unknown_name("predictor", name, PREDICTORS))
    targets = list(targets)
    if not targets:
        raise ValueError("targets is empty")
    for target in targets:
        if target not in TARGET_TRANSFORMS:
            raise ValueError(unknown_name("target transform", target, TARGET_TRANSFORMS))
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"expected X (N, F) and y (N,), got {X.shape} and {y.shape}")
    if not 2 <= folds <= X.shape[0] // 2:
        raise ValueError(f"folds must be in 2..{X.shape[0] // 2} for {X.shape[0]} rows")
    score_fn = METRICS[metric]
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(X))
    pair_scores: dict[tuple[str, str], float] = {}
    for name in names:
        for target in targets:
            fold_scores = []
            for train, test in splits:
                predictor = create_predictor(name, seed=seed, target=target)
                predictor.fit(X[train], y[train])
                fold_scores.append(score_fn(y[test], predictor.predict(X[test])))
            pair_scores[name, target] = float(np.mean(fold_scores))

    def rank_key(pair: tuple[str, str]) -> float:
        score = pair_scores[pair]
        return -np.inf if np.isnan(score) else sign * score

    best_target = {name: max(((name, t) for t in targets), key=rank_key)[1] for name in names}
    scores = {name: pair_scores[name, best_target[name]] for name in names}
    best = max(names, key=lambda name: rank_key((name, best_target[name])))
    return best, scores, create_predictor(best, seed=seed, target=best_target[best]).fit(X, y)
