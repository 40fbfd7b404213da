"""Pareto fronts and hypervolume of minimised objectives, in numpy alone (no torch).

Points are an (n, m) float array: n points, m objectives, every objective minimised (turn
maximised ones round with `to_minimization`). A point dominates another when it is no worse in
every objective and strictly better in at least one, so equal points never dominate each other
and always share a front.

Rows holding a NaN (a failed trial, say) dominate nothing and are dominated by every complete
row: `nondominated_sort` gathers them into one extra front after all the others,
`pareto_front` leaves them out unless no row is complete, and `hypervolume` and
`reference_point` ignore them.

>>> accuracy_latency = [[0.75, 12.0], [0.5, 8.0], [0.25, 10.0]]
>>> points = to_minimization(accuracy_latency, ["max", "min"])
>>> [front.tolist() for front in nondominated_sort(points)]
[[0, 1], [2]]
>>> hypervolume(points, reference=[0.0, 16.0])
5.0
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

DIRECTIONS = ("min", "max")


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """A float copy of `values` with the columns whose direction is "max" negated.

    `directions` holds one "min" or "max" per objective, the last axis of `values`.

    >>> to_minimization([[0.9, 12.0], [0.7, 10.0]], ["max", "min"]).tolist()
    [[-0.9, 12.0], [-0.7, 10.0]]
    """
    if isinstance(directions, str):
        raise ValueError(
            f"directions must be a sequence with one 'min' or 'max' per objective, "
            f"not the single string {directions!r}"
        )
    values = np.asarray(values, dtype=float)
    if values.ndim == 0 or values.shape[-1] != len(directions):
        raise ValueError(
            f"got {len(directions)} directions for values of shape {values.shape}: "
            f"need one per objective (the last axis)"
        )
    for position, direction in enumerate(directions):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {position} is {direction!r}; each must be 'min' or 'max'")
    maximised = np.array([direction == "max" for direction in directions])
    return np.where(maximised, -values, values)


def nondominated_sort(points: np.ndarray) -> list[np.ndarray]:
    """The fronts of `points`, front 0 first, each an ascending array of row indices.

    Front 0 holds the rows no row dominates; front k the rows dominated only by rows of
    earlier fronts. Together the fronts partition the row indices; rows with a NaN form one
    last front. With two objectives this takes O(n log n); with more, an efficient
    non-dominated sort (each point is placed by a binary search over the fronts, tested
    against a front in one numpy call), O(m n^2) at worst.

    >>> points = [[1, 4], [2, 2], [3, 3], [2, 2], [4, 1], [5, 5]]
    >>> [front.tolist() for front in nondominated_sort(points)]
    [[0, 1, 3, 4], [2], [5]]
    """
    points = _as_points(points)
    complete = ~np.isnan(points).any(axis=1)
    rows = np.flatnonzero(complete)
    fronts = []
    if len(rows):
        unique, inverse = _sorted_unique_rows(points[rows])
        if unique.shape[1] == 1:
            unique_ranks = np.arange(len(unique))
        elif unique.shape[1] == 2:
            unique_ranks = _front_ranks_2d(unique)
        else:
            unique_ranks = _front_ranks(unique)
        ranks = unique_ranks[inverse]
        by_rank = np.argsort(ranks, kind="stable")  # stable: indices stay ascending in a front
        ends = np.cumsum(np.bincount(ranks))[:-1]
        fronts = [rows[front] for front in np.split(by_rank, ends)]
    if not complete.all():
        fronts.append(np.flatnonzero(~complete))
    return fronts


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The ascending row indices of the non-dominated points: front 0 of `nondominated_sort`.

    With two objectives this is one O(n log n) sweep. Empty input gives an empty array.

    >>> pareto_front([[1, 4], [2, 2], [3, 3], [2, 2], [4, 1]]).tolist()
    [0, 1, 3, 4]
    """
    points = _as_points(points)
    complete = ~np.isnan(points).any(axis=1)
    rows = np.flatnonzero(complete)
    if len(rows) == 0:
        return np.flatnonzero(~complete)  # every row has a NaN: they form the only front
    unique, inverse = _sorted_unique_rows(points[rows])
    on_front = np.zeros(len(unique), dtype=bool)
    on_front[0] = True  # the lexicographically first row: nothing comes before it
    if unique.shape[1] == 2:
        # a row is on the front when its second objective beats every row sorted before it
        on_front[1:] = unique[1:, 1] < np.minimum.accumulate(unique[:-1, 1])
    elif unique.shape[1] > 2:
        on_front = _front_ranks(unique, first_front_only=True) == 0
    return rows[on_front[inverse]]


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The exact volume dominated by `points` and bounded by `reference`.

    Points not strictly better than `reference` in every objective (and rows with a NaN) add
    nothing. One objective: the distance from the best point to the reference; two: an
    O(n log n) sweep; more: slices along the first objective, each slice's cross-section
    computed recursively on the points non-dominated so far, with the 2-D sweep at the base,
    O(n^(m-1) log n) at worst (a 200-point front in 3-D or a 50-point one in 4-D takes
    milliseconds).

    >>> hypervolume([[1, 3], [2, 2], [3, 1]], reference=[4, 4])
    6.0
    >>> hypervolume([[1, 0, 0], [0, 1, 0], [0, 0, 1]], reference=[2, 2, 2])
    7.0
    """
    points = _as_points(points)
    reference = np.asarray(reference, dtype=float)
    if reference.shape != (points.shape[1],):
        raise ValueError(
            f"reference has shape {reference.shape}; need one value per objective, "
            f"shape ({points.shape[1]},)"
        )
    if np.isnan(reference).any():
        raise ValueError(f"reference has a NaN: {reference.tolist()}")
    inside = np.all(points < reference, axis=1)  # NaN compares False, so those rows drop out
    return float(_hypervolume(points[inside], reference))


def reference_point(points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """A reference point just worse than every point: per objective the worst (largest)
    value plus `margin` times the objective's range, or times the value's magnitude when the
    range is 0, or plus `margin` itself when that is 0 too. Rows with a NaN are ignored.

    >>> reference_point([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0]]).tolist()
    [3.2, 5.5, 0.1]
    """
    points = _as_points(points)
    if not margin >= 0:  # also refuses NaN
        raise ValueError(f"margin must be non-negative, got {margin!r}")
    complete = points[~np.isnan(points).any(axis=1)]
    if len(complete) == 0:
        raise ValueError("reference_point needs at least one point without a NaN")
    worst = complete.max(axis=0)
    spread = worst - complete.min(axis=0)
    scale = np.where(spread > 0, spread, np.where(worst != 0, np.abs(worst), 1.0))
    return worst + margin * scale


def _as_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] == 0:
        raise ValueError(
            f"points must be an (n, m) array with at least one objective, got shape {points.shape}"
        )
    return points


def _sorted_unique_rows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows in lexicographic order, and where each input row went among them.

    In that order a row can only be dominated by rows before it, and, rows being distinct,
    a row before it dominates it exactly when it is <= in every objective.
    """
    order = np.lexsort(points.T[::-1])  # lexsort's last key is the primary one
    ordered = points[order]
    is_new = np.ones(len(points), dtype=bool)
    is_new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    inverse = np.empty(len(points), dtype=np.intp)
    inverse[order] = np.cumsum(is_new) - 1
    return ordered[is_new], inverse


def _front_ranks_2d(unique: np.ndarray) -> np.ndarray:
    """Front of each distinct, lexicographically sorted 2-objective row, in O(n log n).

    Within a front, rows in this order have strictly falling second objectives, so a front
    dominates the next row exactly when its last second objective is <= the row's; those
    last values rise with the front index, so a binary search finds the first front that
    does not dominate the row.
    """
    ranks = np.empty(len(unique), dtype=np.intp)
    last_seconds: list[float] = []  # per front, the second objective of its latest row
    for position, second in enumerate(unique[:, 1].tolist()):
        rank = bisect.bisect_right(last_seconds, second)
        if rank == len(last_seconds):
            last_seconds.append(second)
        else:
            last_seconds[rank] = second
        ranks[position] = rank
    return ranks


def _front_ranks(unique: np.ndarray, first_front_only: bool = False) -> np.ndarray:
    """Front of each distinct, lexicographically sorted row, for any number of objectives.

    Efficient non-dominated sort with binary search (Zhang et al., 2015): if front k does not
    dominate a row, no later front does either (a dominator there would be dominated from
    front k), so the row's front is found by a binary search over the fronts. With
    `first_front_only`, rows off front 0 get rank 1 and later fronts are not built.
    """
    n, m = unique.shape
    ranks = np.empty(n, dtype=np.intp)
    fronts: list[np.ndarray] = []  # growable buffers, filled up to sizes[k]
    sizes: list[int] = []
    for position, point in enumerate(unique):
        low, high = 0, min(len(fronts), 1) if first_front_only else len(fronts)
        while low < high:
            middle = (low + high) // 2
            if np.any(np.all(fronts[middle][: sizes[middle]] <= point, axis=1)):
                low = middle + 1
            else:
                high = middle
        ranks[position] = low
        if first_front_only and low > 0:
            continue
        if low == len(fronts):
            fronts.append(np.empty((8, m)))
            sizes.append(0)
        if sizes[low] == len(fronts[low]):
            fronts[low] = np.concatenate([fronts[low], np.empty_like(fronts[low])])
        fronts[low][sizes[low]] = point
        sizes[low] += 1
    return ranks


def _hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of points that are all strictly better than `reference`."""
    n, m = points.shape
    if n == 0:
        return 0.0
    if m == 1:
        return float(reference[0] - points[:, 0].min())
    if m == 2:
        return _hypervolume_2d(points, reference)
    points = points[np.argsort(points[:, 0], kind="stable")]
    firsts = points[:, 0]
    depths = np.append(firsts[1:], reference[0]) - firsts  # 0 between rows sharing a value
    volume = 0.0
    section_front = np.empty((0, m - 1))  # non-dominated projections of the rows so far
    section = 0.0
    stale = False
    for point, depth in zip(points[:, 1:], depths.tolist(), strict=True):
        if not np.any(np.all(section_front <= point, axis=1)):  # else it adds nothing
            still_on_front = ~np.all(point <= section_front, axis=1)
            section_front = np.concatenate([section_front[still_on_front], point[None]])
            stale = True
        if depth > 0:
            if stale:
                section = _hypervolume(section_front, reference[1:])
                stale = False
            volume += depth * section
    return volume


def _hypervolume_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """Sum of horizontal strips: sorted by the first objective, each point that lowers the
    best second objective so far adds a strip from itself to the reference's first value."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    firsts, seconds = points[order, 0], points[order, 1]
    ceilings = np.minimum.accumulate(np.concatenate([reference[1:], seconds[:-1]]))
    heights = np.maximum(ceilings - seconds, 0.0)
    return float(np.sum((reference[0] - firsts) * heights))
