"""What the claim scripts share: running independent training jobs over worker processes, and
a headless matplotlib figure.

A claim script runs as `python bench/claims/<claim>.py`, so this folder is on `sys.path` (and
is passed on to spawned workers) and `from common import ...` works without a package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def run_jobs(
    function: Callable, jobs: Iterable[tuple[Hashable, tuple]], workers: int
) -> dict[Hashable, object]:
    """`{key: function(*args)}` for each `(key, args)` of `jobs`, over `workers` spawned
    processes (0: in this process, in order). `function` must be importable at module level.
    Prints how long the jobs took."""
    jobs = list(jobs)
    start = time.perf_counter()
    if workers == 0:
        results = {key: function(*args) for key, args in jobs}
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {key: pool.submit(function, *args) for key, args in jobs}
            results = {key: future.result() for key, future in futures.items()}
    print(f"{len(results)} runs in {time.perf_counter() - start:.0f} s")
    return results


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def verdict(held: bool, reason: str) -> None:
    """The script's last word: whether the claim held at this scale, and why, on one line."""
    print(f"verdict: claim {'held' if held else 'did not hold'} at this scale: {reason}")
