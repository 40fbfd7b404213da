"""Pareto sorting and hypervolume against brute-force oracles: an O(n^2 m) dominance check for
the fronts, and a count of dominated unit cells on integer grids for the hypervolume."""

from __future__ import annotations

import subprocess
import sys

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnas.search.pareto import (
    hypervolume,
    nondominated_sort,
    pareto_front,
    reference_point,
    to_minimization,
)

OBJECTIVE_COUNTS = pytest.mark.parametrize("m", [2, 3, 4], ids=lambda m: f"m={m}")


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def brute_force_fronts(points: np.ndarray) -> list[list[int]]:
    """Peel off the rows no remaining row dominates, checking every pair each time."""
    points = np.asarray(points, dtype=float)
    remaining = np.arange(len(points))
    fronts = []
    while len(remaining):
        others = points[remaining]  # (r, m)
        dominated = [
            np.any(np.all(others <= points[i], axis=1) & np.any(others < points[i], axis=1))
            for i in remaining
        ]
        fronts.append(remaining[~np.array(dominated)].tolist())
        remaining = remaining[np.array(dominated)]
    return fronts


def dominated_cells(points: np.ndarray, reference: np.ndarray) -> int:
    """Unit cells [c, c + 1) of the grid from 0 to `reference` that some integer point
    is <= at its lower corner c, i.e. the hypervolume of integer points in [0, reference]."""
    corners = (
        np.indices(tuple(int(r) for r in reference)).reshape(len(reference), -1).T
    )  # (cells, m)
    if len(points) == 0:
        return 0
    covered = np.all(points[None, :, :] <= corners[:, None, :], axis=2).any(axis=1)
    return int(covered.sum())


def integer_points(m: int, max_rows: int = 12, high: int = 4):
    """Small integer point sets, so that ties and duplicates are common."""
    shape = st.tuples(st.integers(0, max_rows), st.just(m))
    return hnp.arrays(np.int64, shape, elements=st.integers(0, high)).map(lambda a: a.astype(float))


def as_lists(fronts: list[np.ndarray]) -> list[list[int]]:
    return [front.tolist() for front in fronts]


@OBJECTIVE_COUNTS
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fronts_match_the_brute_force_dominance_check(m, data):
    points = data.draw(integer_points(m))
    fronts = nondominated_sort(points)
    n = len(points)

    assert sorted(np.concatenate(fronts).tolist() if fronts else []) == list(range(n))
    for front in fronts:
        assert front.tolist() == sorted(front.tolist())
        for i in front:
            assert not any(dominates(points[j], points[i]) for j in front)
    for previous, front in zip(fronts, fronts[1:], strict=False):
        for i in front:
            assert any(dominates(points[j], points[i]) for j in previous)
    assert as_lists(fronts) == brute_force_fronts(points)
    expected_front = fronts[0].tolist() if fronts else []
    assert pareto_front(points).tolist() == expected_front


@pytest.mark.parametrize("m", [2, 3], ids=lambda m: f"m={m}")
def test_many_random_points_match_the_brute_force_dominance_check(m):
    rng = np.random.default_rng(m)
    points = rng.integers(0, 30, size=(300, m)).astype(float)
    fronts = nondominated_sort(points)
    assert len(fronts) > 10
    assert as_lists(fronts) == brute_force_fronts(points)


def test_two_objective_sweep_agrees_with_the_general_sort():
    rng = np.random.default_rng(0)
    points = np.round(rng.normal(size=(2000, 2)), 1)  # rounded: many ties and duplicates
    padded = np.column_stack([points, np.zeros(len(points))])  # same dominance, general path
    assert as_lists(nondominated_sort(points)) == as_lists(nondominated_sort(padded))
    assert pareto_front(points).tolist() == pareto_front(padded).tolist()


@pytest.mark.parametrize("m", [1, 2, 3], ids=lambda m: f"m={m}")
def test_equal_points_share_one_front(m):
    points = np.ones((5, m))
    assert as_lists(nondominated_sort(points)) == [[0, 1, 2, 3, 4]]
    assert pareto_front(points).tolist() == [0, 1, 2, 3, 4]


def test_one_objective_fronts_are_the_distinct_values_in_order():
    points = [[3.0], [1.0], [2.0], [1.0]]
    assert as_lists(nondominated_sort(points)) == [[1, 3], [2], [0]]
    assert pareto_front(points).tolist() == [1, 3]


def test_negative_zero_equals_zero_and_infinities_sort():
    points = [[0.0, 1.0], [-0.0, 1.0], [np.inf, -np.inf], [-np.inf, np.inf], [1.0, np.inf]]
    assert as_lists(nondominated_sort(points)) == brute_force_fronts(np.array(points))
    assert as_lists(nondominated_sort(points))[0] == [0, 1, 2, 3]


@pytest.mark.parametrize("m", [2, 3], ids=lambda m: f"m={m}")
def test_rows_with_nan_form_the_last_front(m):
    points = np.array([[2.0] * m, [np.nan] + [0.0] * (m - 1), [1.0] * m, [np.nan] * m])
    assert as_lists(nondominated_sort(points)) == [[2], [0], [1, 3]]
    assert pareto_front(points).tolist() == [2]
    assert pareto_front(points[[1, 3]]).tolist() == [0, 1]


def test_empty_input():
    assert nondominated_sort(np.empty((0, 2))) == []
    assert pareto_front(np.empty((0, 3))).tolist() == []
    assert hypervolume(np.empty((0, 2)), [1.0, 1.0]) == 0.0


@pytest.mark.parametrize("shape", [(3,), (2, 0), (2, 2, 2)], ids=str)
def test_points_must_be_two_dimensional(shape):
    with pytest.raises(ValueError, match=r"points must be an \(n, m\) array"):
        nondominated_sort(np.zeros(shape))


@pytest.mark.parametrize("m", [2, 3, 4], ids=lambda m: f"m={m}")
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_hypervolume_matches_the_cell_count(m, data):
    points = data.draw(integer_points(m, max_rows=10, high=5))
    reference = np.array(data.draw(st.lists(st.integers(1, 6), min_size=m, max_size=m)))
    assert hypervolume(points, reference) == dominated_cells(points, reference)


@pytest.mark.parametrize("m, size", [(3, 19), (4, 5)], ids=["m=3,210 points", "m=4,56 points"])
def test_hypervolume_of_a_large_integer_front_matches_the_cell_count(m, size):
    grid = np.indices((size + 1,) * (m - 1)).reshape(m - 1, -1).T
    grid = grid[grid.sum(axis=1) <= size]
    front = np.column_stack([grid, size - grid.sum(axis=1)]).astype(float)  # coordinates sum
    assert len(pareto_front(front)) == len(front)
    reference = np.full(m, size + 1)
    assert hypervolume(front, reference) == dominated_cells(front, reference)


@pytest.mark.parametrize(
    "points, reference, expected",
    [
        ([[1, 2]], [3, 3], 2.0),
        ([[1, 3], [2, 1]], [4, 4], 7.0),
        ([[1, 3], [2, 2], [3, 1]], [4, 4], 6.0),
        ([[i, 10 - i] for i in range(1, 10)], [10, 10], 45.0),
        ([[0, 0, 0]], [1, 2, 3], 6.0),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [2, 2, 2], 7.0),
        ([[0.5, 0.5, 0.5, 0.5]], [1, 1, 1, 1], 0.0625),
        ([[2], [5]], [10], 8.0),
    ],
    ids=[
        "one point",
        "two points",
        "staircase of 3",
        "staircase of 9",
        "3-D box",
        "3-D corners",
        "4-D box",
        "1-D",
    ],
)
def test_known_hypervolumes(points, reference, expected):
    assert hypervolume(points, reference) == expected


@OBJECTIVE_COUNTS
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_hypervolume_invariances(m, data):
    points = data.draw(integer_points(m, max_rows=10, high=5).filter(len))
    reference = np.full(m, 6.0)
    volume = hypervolume(points, reference)

    permutation = data.draw(st.permutations(range(len(points))))
    assert hypervolume(points[list(permutation)], reference) == volume
    row = data.draw(st.integers(0, len(points) - 1))
    duplicated = np.vstack([points, points[row]])
    assert hypervolume(duplicated, reference) == volume
    dominated = points[row] + data.draw(hnp.arrays(float, m, elements=st.sampled_from([0, 1])))
    assert hypervolume(np.vstack([points, dominated]), reference) == volume
    outside = np.minimum(points[row], 0.0)
    outside[data.draw(st.integers(0, m - 1))] = 6.0  # on the reference: not strictly inside
    assert hypervolume(np.vstack([points, outside]), reference) == volume


def test_hypervolume_of_float_points_is_permutation_invariant():
    rng = np.random.default_rng(1)
    for m in (2, 3, 4):
        points = rng.random((40, m))
        volume = hypervolume(points, np.ones(m))
        assert hypervolume(points[rng.permutation(40)], np.ones(m)) == pytest.approx(volume)


def test_hypervolume_ignores_points_outside_the_reference_and_nan_rows():
    assert hypervolume([[5, 0], [0, 5], [4, 4]], [4, 4]) == 0.0
    assert hypervolume([[1, 1], [np.nan, 0], [0, np.nan]], [2, 2]) == 1.0


@pytest.mark.parametrize("reference", [[1.0], [1.0, 1.0, 1.0], [[1.0, 1.0]]], ids=str)
def test_hypervolume_reference_must_have_one_value_per_objective(reference):
    with pytest.raises(ValueError, match=r"need one value per objective, shape \(2,\)"):
        hypervolume([[0.0, 0.0]], reference)


def test_hypervolume_refuses_a_nan_reference():
    with pytest.raises(ValueError, match="reference has a NaN"):
        hypervolume([[0.0, 0.0]], [1.0, np.nan])


def test_to_minimization_negates_max_columns_and_copies():
    values = np.array([[0.9, 12.0, 3.0], [0.7, 10.0, -1.0]])
    result = to_minimization(values, ["max", "min", "max"])
    assert result.tolist() == [[-0.9, 12.0, -3.0], [-0.7, 10.0, 1.0]]
    assert values[0, 0] == 0.9
    assert to_minimization([1, 2], ("min", "max")).tolist() == [1.0, -2.0]
    assert to_minimization(values, ["min"] * 3).tolist() == values.tolist()
    assert to_minimization(values, ["min"] * 3) is not values


@pytest.mark.parametrize(
    "directions, message",
    [
        (["max", "maximize"], "direction 1 is 'maximize'; each must be 'min' or 'max'"),
        (["MIN", "max"], "direction 0 is 'MIN'"),
        (["min"], r"got 1 directions for values of shape \(2, 2\)"),
        (["min", "min", "max"], "need one per objective"),
        ("min", "not the single string 'min'"),
    ],
    ids=["unknown", "case", "too few", "too many", "string"],
)
def test_to_minimization_errors(directions, message):
    with pytest.raises(ValueError, match=message):
        to_minimization(np.zeros((2, 2)), directions)


def test_reference_point_adds_a_margin_of_the_range():
    points = [[1.0, -4.0], [3.0, -2.0], [2.0, -3.0]]
    assert reference_point(points).tolist() == pytest.approx([3.2, -1.8])
    assert reference_point(points, margin=0.5).tolist() == pytest.approx([4.0, -1.0])
    assert reference_point(points, margin=0.0).tolist() == [3.0, -2.0]


def test_reference_point_falls_back_to_the_magnitude_then_the_margin():
    points = [[5.0, -2.0, 0.0], [5.0, -2.0, 0.0]]
    assert reference_point(points, margin=0.1).tolist() == pytest.approx([5.5, -1.8, 0.1])


def test_reference_point_bounds_every_point_strictly():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(50, 3))
    reference = reference_point(points)
    assert np.all(points < reference)
    assert hypervolume(points, reference) > 0


def test_reference_point_ignores_nan_rows_and_reports_errors():
    assert reference_point([[1.0, 1.0], [np.nan, 9.0], [0.0, 0.0]]).tolist() == [1.1, 1.1]
    with pytest.raises(ValueError, match="at least one point without a NaN"):
        reference_point([[np.nan, 1.0]])
    with pytest.raises(ValueError, match="margin must be non-negative, got -0.1"):
        reference_point([[1.0, 1.0]], margin=-0.1)


def test_import_does_not_load_torch():
    code = "import sys, tnas.search.pareto\nassert 'torch' not in sys.modules, 'torch imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True)
