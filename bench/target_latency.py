"""Searching for another device's latency from a calibrated table (`--latency table:FILE`)
against searching with latency measured live (`--latency measured`), both fronts re-measured.

    python bench/target_latency.py [--trials 40] [--steps 60] [--budget 200] [--workers 2]
                                   [--repeats 10] [--seeds 1] [--quick]

On this CPU, for each seed:
1. calibrate a latency table of space `simq` for the task (`digits,tokens=patch`) with at most
   `--budget` measurements, under the search's protocol (batch 1, one thread, `--repeats`
   timed runs after 3 warm-up runs);
2. search twice with the random sampler and the same seed, `--trials` trials of `--steps`
   training steps on `--workers` Ray workers: once with latency measured on the worker
   (`measured`, the baseline), once predicted from the table (`table:FILE`). The random
   sampler proposes the same configs in the same order and training is seeded, so the two
   searches see the same configs with the same accuracy: they differ only by latency;
3. re-measure both fronts' members for real here (`tnas pareto --measure local`), and compute
   each front's hypervolume from the re-measured latencies and the stored accuracies, against
   ONE reference point (accuracy 0, latency 1.1x the largest re-measured latency).

Reported: each front's size and hypervolume, their ratio (goal: the table's front reaches at
least 0.97 of the measured front's hypervolume), and the predictor's accuracy on the fronts'
members (share within +-10 % of the re-measured latency; the issue 5 goal is 99 %), MAPE and
Kendall's tau. `--quick`: 12 trials of 10 steps, a 60-measurement table.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from tnas.launch import launch, measure_front
from tnas.predictors.latency import LatencyPredictor, LatencyTable
from tnas.predictors.selection import kendall_tau
from tnas.search.pareto import hypervolume, pareto_front, to_minimization
from tnas.space import ArchConfig, load_space
from tnas.workers.calibrate import calibrate, task_adapter

SPACE = "simq"
TASK = "digits,tokens=patch"
GOAL = 0.97


def search(args, seed: int, latency: str, folder: Path, name: str) -> tuple[list[dict], float]:
    """One search; its front, re-measured here: rows with accuracy and `measured_ms`."""
    storage = f"sqlite:///{folder / f'{name}.db'}"
    start = time.perf_counter()
    launch(
        space=SPACE,
        task=TASK,
        objectives=["accuracy:max", "latency_ms:min"],
        trials=args.trials,
        workers=args.workers,
        sampler="random",
        seed=seed,
        steps=args.steps,
        profile_repeats=args.repeats,
        latency=[latency],
        study=name,
        storage=storage,
    )
    seconds = time.perf_counter() - start
    rows, _ = measure_front(name, "local", storage=storage)
    study = optuna.load_study(study_name=name, storage=storage)
    by_number = {t.number: t for t in study.get_trials()}
    for row in rows:
        trial = by_number[row["number"]]
        row["accuracy"] = trial.values[0]
        row["config"] = trial.user_attrs["config"]
    return rows, seconds


def volume(rows: list[dict], reference: np.ndarray) -> float:
    points = to_minimization(
        np.array([[row["accuracy"], row["measured_ms"]] for row in rows]), ["max", "min"]
    )
    return hypervolume(points[pareto_front(points)], reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--budget", type=int, default=200, help="table measurements, at most")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.steps, args.budget = 12, 10, 60
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="tnas-target-"))
    print(
        f"target latency: space {SPACE}, task {TASK}, {args.trials} trials x {args.steps} steps, "
        f"{args.workers} Ray workers, table of <= {args.budget} measurements, {args.repeats} "
        f"timed repeats; {os.cpu_count()} logical cores, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    ratios, shares = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        table = calibrate(
            load_space(SPACE), budget=args.budget, repeats=args.repeats, seed=100 + seed,
            task=TASK,
        )  # fmt: skip
        path = folder / f"simq-s{seed}.json"
        table.save(path)
        print(
            f"seed {seed}: table of {table.measurements} measurements in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        measured, measured_s = search(args, seed, "measured", folder, f"measured-s{seed}")
        predicted, predicted_s = search(args, seed, f"table:{path}", folder, f"table-s{seed}")
        largest = max(row["measured_ms"] for row in measured + predicted)
        reference = np.array([0.0, 1.1 * largest])  # minimised: -accuracy, latency
        hv_measured, hv_table = volume(measured, reference), volume(predicted, reference)
        ratio = hv_table / hv_measured
        ratios.append(ratio)
        predictor = LatencyPredictor(LatencyTable.load(path))
        members = {row["number"]: row for row in measured + predicted}.values()
        adapt = task_adapter(TASK)  # the model a trial deploys, as the table was calibrated
        configs = [adapt(ArchConfig.from_dict(row["config"])) for row in members]
        truth = np.array([row["measured_ms"] for row in members])
        guess = np.array([predictor.predict(c, 1, min(128, c.max_seq_len)) for c in configs])
        errors = np.abs(guess - truth) / truth
        share = float(np.mean(errors <= 0.10))
        tau = f"{kendall_tau(truth, guess):.3f}" if len(truth) > 1 else "- (one member)"
        shares.append(share)
        print(
            f"seed {seed}: measured front {len(measured)} members, HV {hv_measured:.4f} "
            f"({measured_s:.0f} s); table front {len(predicted)} members, HV {hv_table:.4f} "
            f"({predicted_s:.0f} s); ratio {ratio:.3f}"
        )
        print(
            f"seed {seed}: predictor on the {len(truth)} front members: {share:.1%} within "
            f"+-10%, MAPE {100 * errors.mean():.1f}%, Kendall tau {tau}; reference latency "
            f"{reference[1]:.3f} ms",
            flush=True,
        )
    ratio, share = statistics.median(ratios), statistics.median(shares)
    verdict = "met" if ratio >= GOAL else f"missed by {GOAL - ratio:.3f}"
    print(
        f"goal: table-driven front >= {GOAL} of the measured front's HV: {verdict} (median "
        f"{ratio:.3f} over {len(ratios)} seeds); predictor within +-10%: median {share:.1%} "
        "(issue 5 goal 99%)"
    )


if __name__ == "__main__":
    main()
