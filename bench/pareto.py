"""Pareto sorting and hypervolume timings beside a brute-force baseline measured in the same run.

    python bench/pareto.py [--n 10000 --baseline-n 2000 --repeats 5 --seed 0]

The baseline is the O(m n^2) brute-force dominance check: the full (n, n) dominance matrix,
then fronts peeled off by domination counts (Deb et al.'s fast non-dominated sort, vectorised
with numpy). Its memory grows as n^2, so it runs on `--baseline-n` points and its time is
extrapolated to n quadratically; that figure is labelled as extrapolated.

1. 2 objectives, n uniform random points (many fronts) and n points on a front (one front):
   `nondominated_sort`, `pareto_front` and `hypervolume` beside the baseline.
2. 3 objectives, 200 points on a front (and 4 objectives, 50): the same.

Before timing, it checks the fronts against the baseline and the hypervolume against a count of
dominated unit cells on an integer grid; it refuses to report otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from tnas.search.pareto import hypervolume, nondominated_sort, pareto_front, reference_point


def brute_force_fronts(points: np.ndarray) -> list[np.ndarray]:
    """Fronts from the full dominance matrix, peeled by domination counts: O(m n^2)."""
    no_worse = np.all(points[:, None, :] <= points[None, :, :], axis=2)  # (n, n)
    better = np.any(points[:, None, :] < points[None, :, :], axis=2)  # (n, n)
    dominates = no_worse & better  # [i, j]: row i dominates row j
    counts = dominates.sum(axis=0)
    fronts = []
    current = np.flatnonzero(counts == 0)
    while len(current):
        fronts.append(current)
        counts = counts - dominates[current].sum(axis=0)
        counts[current] = -1  # peeled
        current = np.flatnonzero(counts == 0)
    return fronts


def dominated_cells(points: np.ndarray, reference: np.ndarray) -> int:
    """Hypervolume of integer points in [0, reference] by counting dominated unit cells."""
    corners = np.indices(tuple(int(r) for r in reference)).reshape(len(reference), -1).T
    return int(np.all(points[None] <= corners[:, None], axis=2).any(axis=1).sum())


def random_points(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return rng.random((n, m))


def front_points(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Points on the positive part of the unit sphere: no one dominates another."""
    directions = np.abs(rng.normal(size=(n, m)))
    return 1.0 - directions / np.linalg.norm(directions, axis=1, keepdims=True)


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check(rng: np.random.Generator, baseline_n: int) -> None:
    for m in (2, 3, 4):
        for points in (random_points(rng, baseline_n // 4, m), front_points(rng, 200, m)):
            points = np.vstack([points, np.round(points[:50] * 4) / 4])  # ties and duplicates
            ours = [front.tolist() for front in nondominated_sort(points)]
            theirs = [front.tolist() for front in brute_force_fronts(points)]
            if ours != theirs:
                raise SystemExit(f"refusing to report: fronts differ from the baseline (m={m})")
            if pareto_front(points).tolist() != ours[0]:
                raise SystemExit(f"refusing to report: pareto_front is not front 0 (m={m})")
        integers = rng.integers(0, 6, size=(30, m)).astype(float)
        reference = np.full(m, 7.0)
        if hypervolume(integers, reference) != dominated_cells(integers, reference):
            raise SystemExit(f"refusing to report: hypervolume differs from the cell count (m={m})")


def report(name: str, points: np.ndarray, baseline_n: int, repeats: int) -> None:
    n, m = points.shape
    reference = reference_point(points)
    fronts = nondominated_sort(points)
    sort_s = median_seconds(lambda: nondominated_sort(points), repeats)
    front_s = median_seconds(lambda: pareto_front(points), repeats)
    volume_s = median_seconds(lambda: hypervolume(points, reference), repeats)
    baseline_points = points[:baseline_n]
    baseline_s = median_seconds(lambda: brute_force_fronts(baseline_points), repeats)
    print(f"{name}: n={n:,}, m={m}, {len(fronts)} fronts, {len(fronts[0]):,} points on front 0")
    print(f"  nondominated_sort         {sort_s * 1e3:10.2f} ms")
    print(f"  pareto_front              {front_s * 1e3:10.2f} ms")
    print(f"  hypervolume               {volume_s * 1e3:10.2f} ms")
    measured_n = len(baseline_points)
    print(
        f"  baseline (brute force)    {baseline_s * 1e3:10.2f} ms measured at n={measured_n:,} "
        f"({baseline_s / measured_n * 1e6:.2f} us/point)"
    )
    if measured_n < n:
        extrapolated_s = baseline_s * (n / measured_n) ** 2
        print(
            f"  baseline (brute force)    {extrapolated_s * 1e3:10.2f} ms EXTRAPOLATED to "
            f"n={n:,} (x{(n / measured_n) ** 2:.0f} for O(n^2): per-point time grows with n)"
        )
    else:
        extrapolated_s = baseline_s
    print(f"  speed-up of nondominated_sort over the baseline: {extrapolated_s / sort_s:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--baseline-n", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    check(rng, args.baseline_n)
    report(
        "2 objectives, uniform random", random_points(rng, args.n, 2), args.baseline_n, args.repeats
    )
    report("2 objectives, on a front", front_points(rng, args.n, 2), args.baseline_n, args.repeats)
    report("3 objectives, on a front", front_points(rng, 200, 3), args.baseline_n, args.repeats)
    report("4 objectives, on a front", front_points(rng, 50, 4), args.baseline_n, args.repeats)
    report(
        "3 objectives, uniform random", random_points(rng, 2_000, 3), args.baseline_n, args.repeats
    )


if __name__ == "__main__":
    main()
