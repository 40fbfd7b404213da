"""`tnas pareto` on a 10,000-trial study, against reading the front through Optuna.

    python bench/query.py [--trials 10000] [--runs 5]

Builds a SQLite study of N completed two-objective trials (with tnas's trial attributes) and
its front snapshot, then times, each in a fresh process and including imports:
- `tnas pareto NAME --format json` (reads the snapshot tables only; goal < 1 s);
- the baseline: `optuna.load_study(...).best_trials`, which loads every trial.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from tnas.search.db import Database
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.space import load_space


def build(url: str, name: str, n_trials: int) -> int:
    """A study of `n_trials` completed trials and its front snapshot; returns the front size."""
    db = Database(url)
    study = optuna.create_study(
        study_name=name, storage=db.optuna_storage(), directions=["maximize", "minimize"]
    )
    objectives = [
        {"name": "accuracy", "direction": "max"},
        {"name": "latency_ms", "direction": "min"},
    ]
    study.set_user_attr("tnas", {"objectives": objectives, "space": "primer", "task": "digits"})
    space = load_space("primer")
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(200)]
    values = []
    trials = []
    for number in range(n_trials):
        config = configs[number % len(configs)]
        accuracy, latency = float(rng.uniform(0.5, 1.0)), float(rng.uniform(1.0, 50.0))
        values.append([accuracy, latency])
        trials.append(
            optuna.trial.create_trial(
                values=[accuracy, latency],
                user_attrs={
                    "config": config.to_dict(),
                    "config_hash": config.hash,
                    "metrics": {"accuracy": accuracy, "latency_ms": latency},
                },
            )
        )
    study.add_trials(trials)
    points = to_minimization(np.array(values), ["max", "min"])
    front = pareto_front(points)
    reference = reference_point(points)
    db.save_snapshot(
        name,
        objectives,
        n_trials,
        hypervolume(points[front], reference),
        [float(x) for x in reference],
        [
            {
                "trial_number": int(i),
                "config_hash": trials[i].user_attrs["config_hash"],
                "config": trials[i].user_attrs["config"],
                "values": values[i],
            }
            for i in front
        ],
    )
    db.close()
    return len(front)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tnas-bench-"))
    url = f"sqlite:///{folder / 'big.db'}"
    start = time.perf_counter()
    size = build(url, "big", args.trials)
    print(f"built {args.trials:,} trials, front of {size}, in {time.perf_counter() - start:.0f} s")
    ours = [
        timed(
            [
                sys.executable,
                "-m",
                "tnas.cli",
                "pareto",
                "big",
                "--storage",
                url,
                "--format",
                "json",
            ]
        )
        for _ in range(args.runs)
    ]
    code = (
        "import optuna, sys; s = optuna.load_study(study_name='big', storage=sys.argv[1]); "
        "print(len(s.best_trials))"
    )
    baseline = [timed([sys.executable, "-c", code, url]) for _ in range(args.runs)]
    print(
        f"tnas pareto (snapshot)        median {statistics.median(ours):6.3f} s "
        f"(min {min(ours):.3f}, max {max(ours):.3f}) goal < 1 s"
    )
    print(
        f"optuna best_trials (baseline) median {statistics.median(baseline):6.3f} s "
        f"(min {min(baseline):.3f}, max {max(baseline):.3f})"
    )


if __name__ == "__main__":
    main()
