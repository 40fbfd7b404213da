"""`linas`: predictor-guided search (LINAS, SimQ-NAS) as an Optuna sampler.

It starts with `n_initial` random configs. Then, each time its batch is used up, it runs one
round:

1. fit a predictor per objective on every evaluated trial of the study, the family and its
   target transform (`targets`: as is, or by rank through a quantile map) chosen by
   cross-validated Kendall tau among `families` (in round 1 and every `reselect_every` rounds;
   objectives that are derived quantities of a config, such as `params`, are computed exactly
   instead);
2. run NSGA-II over the design space on the predicted objectives for `generations`
   generations of `population` configs (thousands of cheap predictions), or rank the whole
   candidate pool when the search runs over a pool;
3. pick a batch of `batch_size` configs not yet evaluated: greedily, each adding the most
   hypervolume to the evaluated front, with objectives taken optimistically (the mean minus
   `exploration` times the MLP ensemble's spread), so the batch spreads along the front and
   reaches where the predictors are unsure;
4. hand the batch out, one config per trial, to whoever asks (the driver evaluates them for
   real, in a pool of workers or inline) and start the next round once it is used up.

At each round it first scores the previous round's predictors on the trials evaluated since
(trials held out from their fit): Kendall tau, Spearman and MAPE, passed to `on_round` (the
search stores them in the database; `tnas predictors report STUDY` shows them).

The sampler reads the evaluated trials from the study itself (their `config` user attribute
and values), so it resumes, and several drivers can share a study. Suggestions go through
`sample_independent`: the driver calls `DesignSpace.suggest(trial)` as for every sampler.

Multi-fidelity (`top_steps`, the top rung's training steps; `tnas.search.multifidelity`): few
trials reach the top rung during such a search, so it also learns from the rungs below. Every
trial with rung results (RUNNING, PRUNED or COMPLETE) is one example: its values at its highest
rung, with one more feature, the fidelity `log(steps) / log(top_steps)` (1 at the top rung).
Candidates are predicted at fidelity 1, and the evaluated configs enter the hypervolume of
step 3 with their measured values moved to the top rung by the predicted gain from their rung
(prediction at the top minus prediction at their rung). While every example comes from one
rung the fidelity is constant and left out. The quality report scores the previous round's
predictors on highest-rung values: the examples new since its fit (a config counts again when
it reaches a higher rung), each predicted at its own rung; Kendall and Spearman are taken within
each rung and averaged weighted by its size, so they rank configs, not rungs.

>>> from tnas.space import load_space
>>> LinasSampler(load_space("simq"), top_steps=162).fidelity([18, 162]).round(3).tolist()
[0.568, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tnas.predictors import PREDICTORS
from tnas.search.multifidelity import RUNGS_ATTR
from tnas.search.pareto import hypervolume, nondominated_sort, pareto_front, reference_point
from tnas.search.reference import usable_metric
from tnas.search.settings import NOT_EVALUATED, StudySettings
from tnas.space import ArchConfig, DesignSpace
from tnas.space.config import DERIVED_NAMES

DEFAULT_FAMILIES = tuple(PREDICTORS)  # every registered family competes in the selection


@dataclass
class Model:
    """One objective's predictor of one round, in minimisation form (maximised ones negated)."""

    objective: str
    sign: float  # +1 minimise, -1 maximise
    family: str  # "exact" for derived quantities
    cv_kendall: float
    target: str = "standard"  # the target transform the family was picked with
    mean: Any = None  # a fitted tnas.predictors.Predictor, or None when exact
    spread: Any = None  # the MLP ensemble giving the uncertainty (may be `mean` itself)
    uses_fidelity: bool = False  # fitted with the fidelity as its last feature column

    def predict(self, configs: Sequence[ArchConfig], X: np.ndarray):
        """Minimisation-form mean and spread, each (N,)."""
        if self.mean is None:
            values = np.array([c.derived()[self.objective] for c in configs], dtype=float)
            return self.sign * values, np.zeros(len(configs))
        mean = self.mean.predict(X)
        spread = self.spread.predict_with_std(X)[1] if self.spread is not None else 0.0
        return self.sign * mean, np.broadcast_to(spread, mean.shape).astype(float)


@dataclass
class Round:
    number: int
    models: list[Model]
    trained_on: frozenset[tuple[str, int | None]]  # (config hash, steps) of each example


@dataclass
class Example:
    """What one evaluated config teaches: its values (the objectives' own scale) at `steps`
    training steps (None in a single-fidelity study: the run's budget)."""

    config: ArchConfig
    values: list[float]
    steps: int | None = None

    @property
    def key(self) -> tuple[str, int | None]:
        return self.config.hash, self.steps


class LinasSampler(BaseSampler):
    """See the module docstring. `feasible(config)` filters proposals (the driver sets it to
    the run's constraints); `candidates`, when set, is the pool to pick from; `top_steps`, set
    in a multi-fidelity study, makes it learn from every rung with the rung as a feature."""

    def __init__(
        self,
        space: DesignSpace,
        seed: int = 0,
        batch_size: int = 8,
        n_initial: int | None = None,
        population: int = 64,
        generations: int = 60,
        exploration: float = 1.0,
        families: Sequence[str] = DEFAULT_FAMILIES,
        reselect_every: int = 3,
        targets: Sequence[str] = ("standard", "quantile"),
        feasible: Callable[[ArchConfig], bool] | None = None,
        candidates: Sequence[ArchConfig] | None = None,
        on_round: Callable[[dict], None] | None = None,
        top_steps: int | None = None,
    ):
        if batch_size < 1 or population < 4 or generations < 1:
            raise ValueError("batch_size >= 1, population >= 4 and generations >= 1 needed")
        if top_steps is not None and top_steps < 2:
            raise ValueError(f"top_steps must be >= 2 (the top rung's steps), got {top_steps}")
        self.space = space
        self.seed = seed
        self.batch_size = batch_size
        self.n_initial = max(10, 2 * batch_size) if n_initial is None else n_initial
        self.population = population
        self.generations = generations
        self.exploration = exploration
        self.families = tuple(families)
        self.reselect_every = reselect_every
        self.targets = tuple(targets)
        self.feasible = feasible or space.feasible
        self.candidates = candidates
        self.on_round = on_round
        self.top_steps = top_steps
        self.rng = np.random.default_rng(seed)
        self.random = RandomSampler(seed=seed)
        self.queue: list[ArchConfig] = []
        self.assigned: dict[int, dict[str, Any]] = {}
        self.last: Round | None = None
        self.rounds_done = 0  # rounds of earlier runs of the study (set on resume)
        self.rounds: list[dict] = []  # every quality record, as passed to on_round
        self._features: dict[str, np.ndarray] = {}

    # ---- Optuna's sampler interface ---------------------------------------------------------

    def reseed_rng(self) -> None:
        self.random.reseed_rng()
        self.rng = np.random.default_rng()

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def before_trial(self, study, trial: FrozenTrial) -> None:
        if "fixed_params" in trial.system_attrs:  # an enqueued trial: its config is given
            return
        if not self.queue:
            self.queue = self.next_batch(study)
        if self.queue:
            self.assigned[trial.number] = self.space.to_flat(self.queue.pop(0))

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        proposal = self.assigned.get(trial.number, {})
        if param_name in proposal:
            value = proposal[param_name]
            try:
                if param_distribution._contains(param_distribution.to_internal_repr(value)):
                    return value
            except (ValueError, TypeError):
                pass
        return self.random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.assigned.pop(trial.number, None)

    # ---- rounds --------------------------------------------------------------------------------

    def history(self, study) -> tuple[dict[str, Example], set[str], int]:
        """Evaluated configs by hash with what they teach, hashes not to propose again, and
        the number of trials in flight that teach nothing yet.

        A COMPLETE trial teaches its values. With `top_steps`, any trial but a failed one
        teaches its values at its highest rung with usable values (`rung_example`), and a
        RUNNING one that does is taken and counted as evaluated, not as in flight."""
        names = objective_names(study) if self.top_steps is not None else []
        done: dict[str, Example] = {}
        taken: set[str] = set()
        running = 0
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            digest = attrs.get("config_hash")
            if digest is None:
                continue
            example = None
            if "duplicate_of" not in attrs and "config" in attrs:
                if self.top_steps is not None and trial.state != TrialState.FAIL:
                    example = rung_example(trial, names, self.top_steps)
                elif trial.state == TrialState.COMPLETE:
                    example = Example(ArchConfig.from_dict(attrs["config"]), list(trial.values))
            if example is not None:
                known = done.get(digest)
                if known is None or (known.steps or 0) <= (example.steps or 0):
                    done[digest] = example
                taken.add(digest)
            elif trial.state == TrialState.RUNNING:
                running += 1
                taken.add(digest)
            elif trial.state == TrialState.COMPLETE:
                taken.add(digest)
            elif trial.state == TrialState.FAIL and attrs.get("reason") not in NOT_EVALUATED:
                taken.add(digest)
        return done, taken, running

    def next_batch(self, study) -> list[ArchConfig]:
        done, taken, running = self.history(study)
        started = len(done) + running
        if started < self.n_initial or len(done) < 4:
            return self.random_batch(taken, max(1, self.n_initial - started))
        names = objective_names(study)
        signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
        examples = list(done.values())
        configs = [example.config for example in examples]
        steps = [example.steps for example in examples]
        values = np.array([e.values for e in examples], dtype=float) * np.array(signs)
        number = self.rounds_done + 1 if self.last is None else self.last.number + 1
        models = self.fit(configs, values, names, signs, number, steps)
        self.report(number, models, done)
        self.last = Round(number, models, frozenset(e.key for e in examples))
        pool = self.search(models, configs, taken)
        return self.select(models, pool, self.at_top(models, configs, values, steps))

    def random_batch(self, taken: set[str], size: int) -> list[ArchConfig]:
        batch: list[ArchConfig] = []
        seen = set(taken)
        source = self.candidates
        for _ in range(50 * size):
            if len(batch) == size:
                break
            if source is not None:
                config = source[int(self.rng.integers(len(source)))]
            else:
                config = self.space.sample(self.rng)
            if config.hash not in seen and self.feasible(config):
                batch.append(config)
                seen.add(config.hash)
        return batch

    def features(self, configs: Sequence[ArchConfig]) -> np.ndarray:
        from tnas.predictors import feature_matrix

        missing = [c for c in configs if c.hash not in self._features]
        if missing:
            for config, row in zip(missing, feature_matrix(self.space, missing), strict=True):
                self._features[config.hash] = row
        return np.array([self._features[c.hash] for c in configs])

    def fidelity(self, steps: Sequence[int | None]) -> np.ndarray:
        """The fidelity feature of each step count, `log(steps) / log(top_steps)` (None: the
        top rung), (N,)."""
        top = float(self.top_steps)
        return np.array([1.0 if s is None else math.log(s) / math.log(top) for s in steps])

    def fit(
        self, configs, values: np.ndarray, names, signs, number: int, steps=None
    ) -> list[Model]:
        """One model per objective. The family is chosen by K-fold CV in round 1 and every
        `reselect_every` rounds after; in between the last choice is refitted on all trials.
        With `top_steps` and examples from more than one rung (`steps`), each model also takes
        the fidelity of its example as its last feature."""
        from tnas.predictors import create_predictor, select_family

        X = self.features(configs)
        uses_fidelity = self.top_steps is not None and len(set(steps or [None])) > 1
        if uses_fidelity:
            X = np.column_stack([X, self.fidelity(steps)])
        folds = min(5, len(configs) // 2)
        reselect = self.last is None or (number - 1) % self.reselect_every == 0
        models = []
        for j, (name, sign) in enumerate(zip(names, signs, strict=True)):
            if name in DERIVED_NAMES:
                models.append(Model(name, sign, "exact", 1.0))
                continue
            y = sign * values[:, j]  # back to the objective's own scale
            if reselect:
                family, scores, mean = select_family(
                    X, y, self.families, "kendall", folds, self.seed, self.targets
                )
                cv = scores[family]
            else:
                previous = self.last.models[j]
                family, cv = previous.family, previous.cv_kendall
                mean = create_predictor(family, seed=self.seed, target=previous.target)
                mean = mean.fit(X, y)
            spread = mean
            if family != "mlp_ensemble" and self.exploration > 0:
                spread = create_predictor("mlp_ensemble", seed=self.seed).fit(X, y)
            models.append(Model(name, sign, family, cv, mean.target, mean, spread, uses_fidelity))
        return models

    def predict(self, models: list[Model], configs: Sequence[ArchConfig], steps=None):
        """Minimisation-form means and spreads, each (N, objectives), at `steps` per config
        (None: at the top rung, where the proposals are judged)."""
        X = self.features(configs)
        with_fidelity = X
        if any(m.uses_fidelity for m in models):
            fidelity = self.fidelity(steps if steps is not None else [None] * len(configs))
            with_fidelity = np.column_stack([X, fidelity])
        pairs = [m.predict(configs, with_fidelity if m.uses_fidelity else X) for m in models]
        return np.stack([p[0] for p in pairs], axis=1), np.stack([p[1] for p in pairs], axis=1)

    def at_top(self, models, configs, values: np.ndarray, steps) -> np.ndarray:
        """The evaluated values (minimisation form) moved to the top rung: each plus the
        predicted gain from its rung to the top (zero at the top, and without fidelity)."""
        below = [i for i, s in enumerate(steps) if s is not None and s != self.top_steps]
        if not below or not any(m.uses_fidelity for m in models):
            return values
        chosen = [configs[i] for i in below]
        top = self.predict(models, chosen)[0]
        own = self.predict(models, chosen, [steps[i] for i in below])[0]
        moved = values.copy()
        moved[below] += top - own
        return moved

    def report(self, number: int, models: list[Model], done: dict[str, Example]) -> None:
        """Score the previous round's predictors on the examples new since its fit (a config
        is new again at a higher rung), each predicted at its own rung; Kendall and Spearman
        within each rung, averaged weighted by the rung's examples."""
        from tnas.predictors import mape

        trained_on = frozenset() if self.last is None else self.last.trained_on
        held = [] if self.last is None else [e for e in done.values() if e.key not in trained_on]
        configs = [example.config for example in held]
        actual = np.array([e.values for e in held], dtype=float).reshape(len(held), len(models))
        predicted = None
        if len(held) >= 2:
            steps = [example.steps for example in held]
            means = self.predict(self.last.models, configs, steps)[0]
            signs = np.array([m.sign for m in self.last.models])
            predicted = (means * signs).T
            rungs = np.array([-1 if s is None else s for s in steps])
        for j, model in enumerate(models):
            record = {
                "round": number,
                "objective": model.objective,
                "family": model.family,
                "n_train": len(done) - len(held),
                "n_test": len(held),
                "kendall": None,
                "spearman": None,
                "mape": None,
                "cv_kendall": model.cv_kendall,
            }
            if predicted is not None:
                y, p = actual[:, j], predicted[j]
                record["kendall"] = within_rungs("kendall", y, p, rungs)
                record["spearman"] = within_rungs("spearman", y, p, rungs)
                record["mape"] = mape(y, p) if np.all(y != 0) else None
            if number == 1:
                record["n_train"] = len(done)
            self.rounds.append(record)
            if self.on_round is not None:
                self.on_round(record)

    def search(self, models, evaluated: list[ArchConfig], taken: set[str]) -> list[ArchConfig]:
        """Candidates for the batch: the pool, or every config NSGA-II visited on predictions."""
        if self.candidates is not None:
            return [c for c in self.candidates if c.hash not in taken]
        archive: dict[str, ArchConfig] = {}
        scored: dict[str, np.ndarray] = {}

        def score(configs: list[ArchConfig]) -> None:
            new = [c for c in configs if c.hash not in scored]
            if new:
                means, _ = self.predict(models, new)
                for config, row in zip(new, means, strict=True):
                    scored[config.hash] = row
                    archive[config.hash] = config

        means = self.predict(models, evaluated)[0]
        elite = [evaluated[i] for i in pareto_front(means)][: self.population // 2]
        fresh = self.random_batch({c.hash for c in elite}, self.population - len(elite))
        population = elite + fresh
        score(population)
        for _ in range(self.generations):
            ranks, crowding = rank_and_crowd(np.array([scored[c.hash] for c in population]))
            children = []
            for _ in range(self.population):
                a = population[tournament(ranks, crowding, self.rng)]
                b = population[tournament(ranks, crowding, self.rng)]
                child = self.space.mutate(self.space.crossover(a, b, self.rng), self.rng)
                if self.feasible(child):
                    children.append(child)
            score(children)
            merged = list({c.hash: c for c in population + children}.values())
            points = np.array([scored[c.hash] for c in merged])
            population = [merged[i] for i in survivors(points, self.population)]
        return [c for h, c in archive.items() if h not in taken]

    def select(self, models, pool: list[ArchConfig], values: np.ndarray) -> list[ArchConfig]:
        """Greedy batch: each pick adds the most hypervolume, objectives taken optimistically;
        when no candidate adds any, the one farthest from the evaluated and picked points."""
        if not pool:
            return []
        means, spreads = self.predict(models, pool)
        fronts = nondominated_sort(means)
        keep = np.concatenate(fronts)[: max(8 * self.batch_size, len(fronts[0]))]
        means, spreads = means[keep], spreads[keep]
        pool = [pool[i] for i in keep]
        optimistic = means - self.exploration * spreads
        low = np.minimum(values.min(axis=0), optimistic.min(axis=0))
        scale = np.maximum(values.max(axis=0) - low, 1e-12)
        known = (values - low) / scale
        points = (optimistic - low) / scale
        reference = reference_point(known)
        chosen: list[int] = []
        for _ in range(min(self.batch_size, len(pool))):
            base_points = np.vstack([known, points[chosen]]) if chosen else known
            base = hypervolume(base_points[pareto_front(base_points)], reference)
            gains = np.full(len(pool), -np.inf)
            for i in range(len(pool)):
                if i not in chosen:
                    both = np.vstack([base_points, points[i]])
                    gains[i] = hypervolume(both[pareto_front(both)], reference) - base
            if gains.max() <= 1e-12:  # nothing improves: spread out instead
                distance = np.min(
                    np.linalg.norm(points[:, None, :] - base_points[None, :, :], axis=2), axis=1
                )
                distance[chosen] = -np.inf
                gains = distance
            chosen.append(int(np.argmax(gains)))
        return [pool[i] for i in chosen]


def objective_names(study) -> list[str]:
    return StudySettings.of_study(study).objective_names


def rung_example(trial: FrozenTrial, names: Sequence[str], top_steps: int) -> Example | None:
    """What a trial of a multi-fidelity study teaches: its values at its highest rung where
    every objective has a usable value, or, a COMPLETE trial without rungs, its values at
    `top_steps`; None when it has neither."""
    config = ArchConfig.from_dict(trial.user_attrs["config"])
    rungs = trial.user_attrs.get(RUNGS_ATTR)
    if isinstance(rungs, dict):
        for steps in sorted((int(s) for s in rungs), reverse=True):
            metrics = rungs[str(steps)]
            values = [metrics.get(name) for name in names] if isinstance(metrics, dict) else []
            if values and all(usable_metric(v) for v in values):
                return Example(config, [float(v) for v in values], steps)
    if trial.state == TrialState.COMPLETE:
        return Example(config, list(trial.values), top_steps)
    return None


def within_rungs(metric: str, y: np.ndarray, p: np.ndarray, rungs: np.ndarray) -> float:
    """Kendall tau or Spearman of `p` against `y` within each rung with two examples or more,
    averaged weighted by their sizes (NaN where no rung has a defined value). Pooled, the
    example below would score 0.67 from the rung effect alone.

    >>> within_rungs("kendall", np.array([1.0, 2, 10, 20]), np.array([2.0, 1, 11, 12]),
    ...              np.array([18, 18, 54, 54]))
    0.0
    """
    from tnas.predictors import kendall_tau, spearman

    score = {"kendall": kendall_tau, "spearman": spearman}[metric]
    total, weight = 0.0, 0
    for rung in np.unique(rungs):
        inside = rungs == rung
        if inside.sum() >= 2:
            value = score(y[inside], p[inside])
            if math.isfinite(value):
                total, weight = total + inside.sum() * value, weight + inside.sum()
    return float(total / weight) if weight else float("nan")


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front (boundary points get infinity)."""
    n, m = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return distance


def rank_and_crowd(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranks = np.zeros(len(points), dtype=int)
    crowding = np.zeros(len(points))
    for rank, front in enumerate(nondominated_sort(points)):
        ranks[front] = rank
        crowding[front] = crowding_distance(points[front])
    return ranks, crowding


def survivors(points: np.ndarray, size: int) -> list[int]:
    """NSGA-II's environmental selection: whole fronts, the last cut by crowding distance.

    >>> survivors(np.array([[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [3.0, 3.0], [5.0, 5.0]]), 4)
    [0, 1, 2, 3]
    """
    chosen: list[int] = []
    for front in nondominated_sort(points):
        if len(chosen) + len(front) <= size:
            chosen.extend(int(i) for i in front)
            continue
        order = np.argsort(-crowding_distance(points[front]), kind="stable")
        chosen.extend(int(front[i]) for i in order[: size - len(chosen)])
        break
    return sorted(chosen)


def tournament(ranks: np.ndarray, crowding: np.ndarray, rng: np.random.Generator) -> int:
    """Binary tournament: the lower rank wins, then the larger crowding distance."""
    i, j = (int(k) for k in rng.integers(len(ranks), size=2))
    if ranks[i] != ranks[j]:
        return i if ranks[i] < ranks[j] else j
    return i if crowding[i] >= crowding[j] else j


__all__ = ["LinasSampler", "crowding_distance", "survivors"]
