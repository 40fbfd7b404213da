"""Multi-fidelity search: the rungs of a trial's training, and which trials go on (no torch).

A trial trains to rung r, at `min_steps * eta**r` steps (the last rung capped at `max_steps`),
and reports its objectives there. `AshaScheduler` decides which trials continue, ASHA style
(Li et al. 2020, asynchronous successive halving, its promotion variant): a trial at rung r is
promotable as soon as it ranks in the top `floor(n / eta)` of the `n` results rung r has seen
so far, whatever is still running, so no worker waits for a rung to fill. The ranking is
multi-objective, as in Syne Tune's MO-ASHA: non-dominated sorting first, then, within a front,
hypervolume contribution (the front that straddles the cut is thinned greedily, least
contributor out first, as in SMS-EMOA; remaining ties go to the smaller trial id).

The scheduler holds nothing that storage does not: `records()` lists every result and every
promotion still waiting for its result, and `AshaScheduler.from_records` rebuilds the same
state from them, so a driver that crashed continues its pending promotions.

>>> rungs = Rungs(min_steps=100, max_steps=2700, eta=3)
>>> rungs.steps
(100, 300, 900, 2700)
>>> asha = AshaScheduler(rungs, ["max", "min"])            # accuracy, latency_ms
>>> asha.report(0, 0, [0.50, 9.0]); asha.report(1, 0, [0.70, 8.0])
>>> asha.promotable(0)                                      # floor(2 / 3) = 0 places
[]
>>> asha.report(2, 0, [0.60, 8.5])
>>> asha.promotable(0)                                      # trial 1 dominates trial 0
[1]
>>> asha.promote(1)
1
>>> asha.pending()
{1: 1}
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tnas.search.pareto import hypervolume, nondominated_sort, reference_point, to_minimization


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Rungs:
    """The training steps of each rung: `min_steps * eta**r` while below `max_steps`, then
    `max_steps` itself, which is always the last rung (reached exactly, or as a cap).

    >>> Rungs(100, 2700, 3).steps
    (100, 300, 900, 2700)
    >>> Rungs(100, 2000, 3).steps
    (100, 300, 900, 2000)
    >>> Rungs(100, 100, 3).steps
    (100,)
    >>> Rungs(0, 100, 3)
    Traceback (most recent call last):
    ...
    ValueError: min_steps must be >= 1, got 0
    """

    min_steps: int
    max_steps: int
    eta: int = 3
    steps: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self):
        min_steps = _integer("min_steps", self.min_steps)
        max_steps = _integer("max_steps", self.max_steps)
        eta = _integer("eta", self.eta)
        if min_steps < 1:
            raise ValueError(f"min_steps must be >= 1, got {min_steps}")
        if eta < 2:
            raise ValueError(f"eta must be >= 2, got {eta}")
        if max_steps < min_steps:
            raise ValueError(f"max_steps ({max_steps}) must be >= min_steps ({min_steps})")
        steps = [min_steps]
        while steps[-1] * eta < max_steps:
            steps.append(steps[-1] * eta)
        if steps[-1] != max_steps:
            steps.append(max_steps)
        object.__setattr__(self, "steps", tuple(steps))

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def top(self) -> int:
        """The index of the last rung, where a trial is finished."""
        return len(self.steps) - 1

    def rung_of(self, steps: int) -> int:
        """The rung trained to exactly `steps`; a one-line ValueError for any other count.

        >>> Rungs(100, 2700, 3).rung_of(900)
        2
        """
        try:
            return self.steps.index(steps)
        except ValueError:
            raise ValueError(f"{steps} steps is not a rung; rungs: {list(self.steps)}") from None


@dataclass(frozen=True)
class Record:
    """One stored fact about a trial: its objective `values` at `rung`, or, with `values`
    None, that it was promoted to `rung` and that rung's result is not in yet."""

    trial: Hashable
    rung: int
    values: tuple[float, ...] | None


def hv_contributions(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each point's exclusive hypervolume: what the set loses without it. `points` are one
    front (minimised, none dominating another; equal points allowed, each then contributes
    0), all strictly better than `reference`. Two objectives: O(n log n) from each point's
    neighbours; more: one hypervolume per point left out.

    >>> hv_contributions(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), np.array([4.0, 4.0]))
    array([1., 1., 1.])
    """
    points = np.asarray(points, dtype=float)
    n, m = points.shape
    if n == 1:
        return np.array([float(np.prod(reference - points[0]))])
    if m == 2:
        order = np.lexsort((points[:, 1], points[:, 0]))  # first objective up, second down
        firsts, seconds = points[order, 0], points[order, 1]
        widths = np.append(firsts[1:], reference[0]) - firsts
        heights = np.insert(seconds[:-1], 0, reference[1]) - seconds
        contributions = np.empty(n)
        contributions[order] = widths * heights
        return contributions
    total = hypervolume(points, reference)
    everyone = np.ones(n, dtype=bool)
    contributions = np.empty(n)
    for i in range(n):
        everyone[i] = False
        contributions[i] = total - hypervolume(points[everyone], reference)
        everyone[i] = True
    return contributions


def best(values: Sequence[Sequence[float]], directions: Sequence[str], k: int) -> list[int]:
    """The row indices of the `k` best rows of `values`, best first: whole non-dominated
    fronts in order, each ordered by hypervolume contribution (largest first); the front that
    does not fit whole is thinned by removing its least contributor, recomputed after each
    removal. The reference point is `reference_point` of all rows. Equal keys go to the
    smaller row index.

    >>> best([[0.9, 10.0], [0.8, 5.0], [0.7, 9.0], [0.85, 6.0]], ["max", "min"], 2)
    [3, 1]
    """
    k = min(k, len(values))
    if k <= 0:
        return []
    points = to_minimization(values, directions)
    reference = reference_point(points)
    chosen: list[int] = []
    for front in nondominated_sort(points):
        front = front.tolist()
        need = k - len(chosen)
        while len(front) > need:  # thin the straddling front, least contributor out first
            contributions = hv_contributions(points[front], reference)
            worst = min(range(len(front)), key=lambda j: (contributions[j], -front[j]))
            front.pop(worst)
        contributions = hv_contributions(points[front], reference)
        chosen += [row for _, row in sorted(zip(-contributions, front, strict=True))]
        if len(chosen) == k:
            break
    return chosen


class AshaScheduler:
    """Asynchronous successive halving over several objectives.

    `report(trial, rung, values)` records a trial's objective values at a rung (`directions`
    says which are maximised); `promotable(rung)` lists, best first, the trials of that rung
    in its top `floor(n / eta)` that are neither promoted nor stopped; `promote(trial)` moves
    one to its next rung; `next_promotion()` is the one to run next (highest rung first, as
    ASHA). `stop(trial)` takes a trial out for good (it failed, or the driver stopped it);
    its results still count in their rungs. Trial ids are any hashable, mutually ordered
    values (trial numbers, config hashes): equal rankings go to the smaller id, so the
    state never depends on the order results arrived in.

    >>> asha = AshaScheduler(Rungs(1, 9, 3), ["min"])
    >>> for trial, loss in enumerate([0.3, 0.1, 0.2]):
    ...     asha.report(trial, 0, [loss])
    >>> asha.next_promotion()
    (1, 0)
    >>> asha.promote(1), asha.promotable(0)
    (1, [])
    """

    def __init__(self, rungs: Rungs, directions: Sequence[str]):
        to_minimization(np.zeros((0, len(directions))), directions)  # validates them
        self.rungs = rungs
        self.directions = tuple(directions)
        self.results: list[dict[Hashable, tuple[float, ...]]] = [{} for _ in rungs.steps]
        self.promoted: list[set[Hashable]] = [set() for _ in rungs.steps]
        self.stopped: set[Hashable] = set()
        self._top: dict[int, list[Hashable]] = {}  # rung -> its ranked top, until it changes

    def _check_rung(self, rung: int) -> int:
        rung = _integer("rung", rung)
        if not 0 <= rung <= self.rungs.top:
            raise ValueError(f"rung {rung} does not exist; rungs are 0..{self.rungs.top}")
        return rung

    def rung_of(self, trial: Hashable) -> int | None:
        """The highest rung `trial` reported at, or None if it has reported nothing."""
        reported = [r for r, results in enumerate(self.results) if trial in results]
        return reported[-1] if reported else None

    def report(self, trial: Hashable, rung: int, values: Sequence[float]) -> None:
        """Record `trial`'s objective values at `rung`. Rung 0 takes any new trial; a later
        rung only a trial promoted to it. Values must be finite, one per direction."""
        rung = self._check_rung(rung)
        values = tuple(float(v) for v in values)
        if len(values) != len(self.directions):
            raise ValueError(
                f"trial {trial!r} reported {len(values)} values for "
                f"{len(self.directions)} objectives"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"trial {trial!r} reported non-finite values {list(values)}")
        if trial in self.results[rung]:
            raise ValueError(f"trial {trial!r} already reported at rung {rung}")
        if rung > 0 and trial not in self.promoted[rung - 1]:
            raise ValueError(f"trial {trial!r} reported at rung {rung} without a promotion to it")
        if rung == 0 and self.rung_of(trial) is not None:
            raise ValueError(f"trial {trial!r} reported at rung 0 after a later rung")
        self.results[rung][trial] = values
        self._top.pop(rung, None)

    def top(self, rung: int) -> list[Hashable]:
        """The trials in the top `floor(n / eta)` of rung `rung`'s `n` results, best first,
        promoted or not (`best` of the rung's values)."""
        rung = self._check_rung(rung)
        if rung not in self._top:
            results = self.results[rung]
            trials = sorted(results)
            k = len(trials) // self.rungs.eta
            rows = best([results[t] for t in trials], self.directions, k) if k else []
            self._top[rung] = [trials[row] for row in rows]
        return list(self._top[rung])

    def promotable(self, rung: int) -> list[Hashable]:
        """The trials of rung `rung` in its top `floor(n / eta)`, best first, that are not yet
        promoted and not stopped; none at the last rung."""
        if self._check_rung(rung) == self.rungs.top:
            return []
        done = self.promoted[rung] | self.stopped
        return [trial for trial in self.top(rung) if trial not in done]

    def next_promotion(self) -> tuple[Hashable, int] | None:
        """`(trial, rung)` of the best promotable trial of the highest rung that has one
        (ASHA: finish trials before starting new ones), or None: start a new trial."""
        for rung in reversed(range(self.rungs.top)):
            candidates = self.promotable(rung)
            if candidates:
                return candidates[0], rung
        return None

    def promote(self, trial: Hashable) -> int:
        """Move `trial` from its highest reported rung to the next; return the rung it now
        trains to. The driver promotes what `promotable` or `next_promotion` gives."""
        rung = self.rung_of(trial)
        if rung is None:
            raise ValueError(f"trial {trial!r} has reported nothing: it cannot be promoted")
        if trial in self.stopped:
            raise ValueError(f"trial {trial!r} is stopped: it cannot be promoted")
        if rung == self.rungs.top:
            raise ValueError(f"trial {trial!r} is at the last rung: it cannot be promoted")
        if trial in self.promoted[rung]:
            raise ValueError(f"trial {trial!r} is already promoted from rung {rung}")
        self.promoted[rung].add(trial)
        return rung + 1

    def stop(self, trial: Hashable) -> None:
        """Take `trial` out for good: never promoted again, no longer pending."""
        self.stopped.add(trial)

    def pending(self) -> dict[Hashable, int]:
        """Promoted trials whose next rung has not reported, not stopped: trial -> that rung
        (what a resumed driver submits again)."""
        return {
            trial: rung + 1
            for rung, promoted in enumerate(self.promoted)
            for trial in sorted(promoted)
            if trial not in self.results[rung + 1] and trial not in self.stopped
        }

    def paused(self) -> list[Hashable]:
        """Trials below the last rung that are neither promoted nor stopped: each waits at its
        rung for a place in that rung's top, and is stopped when the search ends."""
        return [
            trial
            for rung in range(self.rungs.top)
            for trial in sorted(self.results[rung])
            if trial not in self.promoted[rung] and trial not in self.stopped
        ]

    def finished(self) -> list[Hashable]:
        """Trials with a result at the last rung."""
        return sorted(self.results[self.rungs.top])

    def trained_steps(self) -> int:
        """The training steps behind the results so far: per trial, the steps of its highest
        reported rung (each rung continues the one before, so nothing is trained twice).

        >>> asha = AshaScheduler(Rungs(100, 900, 3), ["min"])
        >>> for trial in range(3):
        ...     asha.report(trial, 0, [trial])
        >>> asha.promote(0)
        1
        >>> asha.report(0, 1, [0.5]); asha.trained_steps()
        500
        """
        highest = {}
        for rung, results in enumerate(self.results):
            highest |= dict.fromkeys(results, self.rungs.steps[rung])
        return sum(highest.values())

    def records(self) -> list[Record]:
        """Every result, rung by rung, then every promotion whose result is not in (values
        None; pending, or stopped there): with the stopped trials, what `from_records` rebuilds
        this state from."""
        results = [
            Record(trial, rung, values)
            for rung, rung_results in enumerate(self.results)
            for trial, values in sorted(rung_results.items())
        ]
        waiting = [
            Record(trial, rung + 1, None)
            for rung, promoted in enumerate(self.promoted)
            for trial in sorted(promoted)
            if trial not in self.results[rung + 1]
        ]
        return results + waiting

    def state(self) -> dict:
        """Everything the scheduler decides from, in canonical order (for comparing two)."""
        return {
            "steps": self.rungs.steps,
            "eta": self.rungs.eta,
            "directions": self.directions,
            "results": [sorted(results.items()) for results in self.results],
            "promoted": [sorted(promoted) for promoted in self.promoted],
            "stopped": sorted(self.stopped),
        }

    @classmethod
    def from_records(
        cls,
        rungs: Rungs,
        directions: Sequence[str],
        records: Iterable[Record | tuple],
        stopped: Iterable[Hashable] = (),
    ) -> AshaScheduler:
        """The scheduler that holds `records` (in any order): each result at rung r > 0, and
        each record with values None at rung r, means a promotion from rung r - 1. `stopped`
        are the trials the driver stopped (told pruned or failed)."""
        scheduler = cls(rungs, directions)
        records = [r if isinstance(r, Record) else Record(*r) for r in records]
        for record in sorted(records, key=lambda record: record.rung):
            rung = scheduler._check_rung(record.rung)
            if rung > 0 and record.trial not in scheduler.promoted[rung - 1]:
                if scheduler.rung_of(record.trial) != rung - 1:
                    raise ValueError(
                        f"trial {record.trial!r} has a record at rung {rung} "
                        f"but no result at rung {rung - 1}"
                    )
                scheduler.promote(record.trial)
            if record.values is not None:
                scheduler.report(record.trial, rung, record.values)
        for trial in stopped:
            scheduler.stop(trial)
        return scheduler


__all__ = ["AshaScheduler", "Record", "Rungs", "best", "hv_contributions"]
