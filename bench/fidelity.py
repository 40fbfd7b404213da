"""Multi-fidelity search (MO-ASHA over training steps) against full-budget search, same steps.

    python bench/fidelity.py [--seeds 3] [--workers 2] [--trials 10] [--max-steps 162]
                             [--min-steps 18] [--eta 3] [--sampler random] [--quick]
    python bench/fidelity.py --record bench/data/fidelity-simq-digits.jsonl --record-configs 120
    python bench/fidelity.py --replay bench/data/fidelity-simq-digits.jsonl --seeds 10 [...]

`--record TABLE` trains `--record-configs` simq configs (drawn with seed 0) through every rung
(`tnas.launch.record_curves`, on `--workers` Ray workers) and writes their learning curves:
each row's metrics at every rung, latency measured once. `--replay TABLE` then runs both arms
on the recorded curves (`--evaluator replay:TABLE`, the search picking among the table's
configs), in seconds instead of minutes, so many seeds and settings can be compared; its
rungs must be among the recorded ones. bench/data/fidelity-simq-digits.jsonl was recorded by
the first command above (rungs 18, 54, 162; 1,832 s on 2 workers of a loaded 2-core machine).

Real training on `digits,tokens=patch` (scikit-learn's 8x8 digits as 16 patch tokens), space
`simq`, objectives accuracy (max; of the model quantized to its bits) and latency_ms (min),
trials on a Ray pool of `--workers` actors (one torch thread each; `--workers 0`: this
process). For each seed, two searches with the same sampler and seed (sampler and training):

1. full budget: `--trials` configs, each trained `--max-steps` steps (the baseline);
2. multi-fidelity: `fidelity="steps"`, rungs `--min-steps * eta**r` up to `--max-steps`,
   with as many configs started as fit the full-budget search's total steps in a simulation
   of the same asynchronous MO-ASHA scheduler (`--configs` overrides). The steps reported
   are those it really trained: per trial, its highest rung's (a promoted trial continues
   from its checkpoint).

Both arms measure latency with one protocol: the run's profile defaults (batch 1, 3 warm-up
runs, one thread) with `--repeats` timed runs, beside the other worker's training;
multi-fidelity measures it once, at a trial's first rung. The random sampler is the default:
it proposes the same configs in the same order in both arms (multi-fidelity starts more of
them), so the comparison is paired and sampler learning does not enter; `--sampler nsga2`
runs both arms with NSGA-II.

Per search: its total training steps; the hypervolume of its front of COMPLETE trials (the
top rung for multi-fidelity), against ONE reference point for every search of the run
(accuracy 0, latency 1.1x the largest latency_ms of any trial of any search, all rungs);
that hypervolume when the search had trained no more than the full-budget search's steps;
and the wall time. While a search runs, the study is read at each driver update, so its
hypervolume is known against the steps trained so far. The goal line is the steps at which
multi-fidelity first reaches the full-budget search's final hypervolume, over the full-budget
search's steps (the issue's goal: at most 1/3), per seed and as the median. `--quick` is a
smoke run: one seed, 4 full-budget trials, rungs 6, 18, 54.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from tnas.launch import RunError, launch
from tnas.search.db import Database, StorageError
from tnas.search.fidelity import AshaScheduler, Rungs
from tnas.search.multifidelity import RUNGS_ATTR
from tnas.search.pareto import hypervolume, pareto_front, to_minimization

OBJECTIVES = ["accuracy:max", "latency_ms:min"]
DIRECTIONS = ["max", "min"]
GOAL = 1 / 3


@dataclass
class Search:
    """One search's outcome: its arm, the trace of (steps trained, seconds, top-rung values)
    at each driver update, every trial's values (all rungs), and its totals."""

    arm: str
    seed: int
    configs: int = 0
    complete: int = 0
    steps: int = 0
    seconds: float = 0.0
    trace: list[tuple[int, float, list[list[float]]]] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)  # every rung result, for the ref

    @property
    def final(self) -> list[list[float]]:
        return self.trace[-1][2] if self.trace else []


def trained_steps(trial, steps: int) -> int:
    """The steps behind a trial's results: its highest rung's (a promoted trial continues
    from its checkpoint), or `steps` for a completed full-budget trial."""
    rungs = trial.user_attrs.get(RUNGS_ATTR)
    if rungs:
        return max(int(s) for s in rungs)
    evaluated = trial.state == TrialState.COMPLETE and "duplicate_of" not in trial.user_attrs
    return steps if evaluated else 0


def top_values(trials) -> list[list[float]]:
    return [list(t.values) for t in trials if t.state == TrialState.COMPLETE and t.values]


class Tracer:
    """A `launch` progress callback: at each driver update, reads the study and, when the
    steps trained changed, records (steps, seconds since start, values of COMPLETE trials)."""

    def __init__(self, search: Search, storage: str, study: str, steps: int):
        self.search, self.storage, self.name, self.steps = search, storage, study, steps
        self.study = None
        self.start = time.perf_counter()

    def __call__(self, _progress) -> None:
        if self.study is None:
            self.db = Database(self.storage)
            self.study = optuna.load_study(study_name=self.name, storage=self.db.optuna_storage())
        trials = self.study.get_trials(deepcopy=False)
        steps = sum(trained_steps(t, self.steps) for t in trials)
        top = top_values(trials)
        if not self.search.trace or (steps, len(top)) != (
            self.search.trace[-1][0],
            len(self.search.trace[-1][2]),
        ):
            self.search.trace.append((steps, time.perf_counter() - self.start, top))

    def close(self) -> None:
        if self.study is not None:
            self.db.close()


def simulated_steps(rungs: Rungs, configs: int, slots: int, rng: np.random.Generator) -> int:
    """The steps an asynchronous MO-ASHA search of `configs` configs on `slots` workers trains,
    simulated with `AshaScheduler` as the driver uses it (promotions first, then new configs):
    each trial has random values, the same at every rung, and a rung lasts its extra steps."""
    asha = AshaScheduler(rungs, DIRECTIONS)
    steps = (0, *rungs.steps)
    values = rng.random((configs, len(DIRECTIONS)))
    running: list[tuple[int, int, int]] = []  # heap of (finish, trial, rung)
    clock = started = 0
    while True:
        while len(running) < slots:
            promotion = asha.next_promotion()
            if promotion is not None:
                trial = promotion[0]
                rung = asha.promote(trial)
            elif started < configs:
                trial, rung, started = started, 0, started + 1
            else:
                break
            heapq.heappush(running, (clock + steps[rung + 1] - steps[rung], trial, rung))
        if not running:
            return asha.trained_steps()
        clock, trial, rung = heapq.heappop(running)
        asha.report(trial, rung, values[trial])


def planned_configs(rungs: Rungs, budget: int, slots: int, draws: int = 20) -> int:
    """The most configs whose simulated multi-fidelity search trains at most `budget` steps on
    average over `draws` draws. Asynchronous promotion promotes more than `floor(n / eta)`
    per rung (a trial promoted while its rung had few results stays promoted), so this is
    fewer configs than the synchronous plan."""
    rng = np.random.default_rng(0)
    configs = 1
    while True:
        mean = statistics.mean(
            simulated_steps(rungs, configs + 1, slots, rng) for _ in range(draws)
        )
        if mean > budget:
            return configs
        configs += 1


def run_search(args, arm: str, seed: int, configs: int, folder: Path) -> Search:
    """One search through `tnas.launch`, in its own SQLite file and checkpoint directory."""
    storage = f"sqlite:///{folder / f'{arm}-s{seed}.db'}"
    name = f"{arm}-s{seed}"
    search = Search(arm, seed)
    settings = {
        "space": "simq",
        "task": args.task,
        "objectives": OBJECTIVES,
        "trials": configs,
        "workers": args.workers,
        "sampler": args.sampler,
        "seed": seed,
        "steps": args.max_steps,
        "batch_size": args.batch_size,
        "profile_repeats": args.repeats,
        "study": name,
        "storage": storage,
    }
    if args.replay:  # the recorded learning curves answer both arms
        settings["evaluator"] = f"replay:{args.replay}"
    if arm == "fidelity":
        checkpoints = folder / f"checkpoints-s{seed}"
        settings |= {
            "fidelity": "steps",
            "min_steps": args.min_steps,
            "max_steps": args.max_steps,
            "eta": args.eta,
            "checkpoint_dir": str(checkpoints),
        }
    tracer = Tracer(search, storage, name, args.max_steps)
    start = time.perf_counter()
    try:
        launch(progress=tracer, **settings)
        tracer(None)  # the final state, pruning included
    except (RunError, StorageError) as err:
        raise SystemExit(str(err)) from None
    finally:
        tracer.close()
    search.seconds = time.perf_counter() - start
    db = Database(storage)
    trials = optuna.load_study(study_name=name, storage=db.optuna_storage()).get_trials()
    db.close()
    search.configs = len(trials)
    search.complete = len(top_values(trials))
    search.steps = sum(trained_steps(t, args.max_steps) for t in trials)
    for trial in trials:
        rungs = trial.user_attrs.get(RUNGS_ATTR) or {}
        rows = list(rungs.values()) or ([trial.user_attrs.get("metrics")] if trial.values else [])
        search.values += [
            [row["accuracy"], row["latency_ms"]]
            for row in rows
            if row and all(isinstance(row.get(k), int | float) for k in ("accuracy", "latency_ms"))
        ]
    return search


def volume(values: list[list[float]], reference: np.ndarray) -> float:
    if not values:
        return 0.0
    points = to_minimization(np.array(values), DIRECTIONS)
    return hypervolume(points[pareto_front(points)], reference)


def reach(search: Search, target: float, reference: np.ndarray) -> tuple[int, float] | None:
    """(steps, seconds) at which `search`'s top-rung hypervolume first reached `target`."""
    for steps, seconds, values in search.trace:
        if values and volume(values, reference) >= target * (1 - 1e-12):
            return steps, seconds
    return None


def volume_at(search: Search, steps: int, reference: np.ndarray) -> float:
    """The top-rung hypervolume of `search` when it had trained at most `steps` steps."""
    within = [values for trained, _, values in search.trace if trained <= steps]
    return volume(within[-1], reference) if within else 0.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def record(args) -> None:
    """Train `--record-configs` distinct simq configs (drawn with seed 0) through every rung and
    write their learning curves to `--record`, a replay table for `--replay`."""
    from tnas.launch import record_curves
    from tnas.space import load_space

    space = load_space("simq")
    rng = np.random.default_rng(0)
    configs: dict[str, object] = {}
    while len(configs) < args.record_configs:
        config = space.sample(rng)
        configs.setdefault(config.hash, config)
    folder = Path(tempfile.mkdtemp(prefix="tnas-curves-"))
    if args.workers:
        from tnas.workers.pool import connect

        connect(None, num_cpus=os.cpu_count(), _temp_dir=str(folder / "ray"))
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"{done}/{total} configs, {time.perf_counter() - start:.0f} s", flush=True)

    recorded = record_curves(
        list(configs.values()),
        args.record,
        space="simq",
        task=args.task,
        objectives=OBJECTIVES,
        workers=args.workers,
        steps=args.max_steps,
        batch_size=args.batch_size,
        profile_repeats=args.repeats,
        fidelity="steps",
        min_steps=args.min_steps,
        max_steps=args.max_steps,
        eta=args.eta,
        checkpoint_dir=str(folder / "checkpoints"),
        study="curves",
        progress=progress,
    )
    print(
        f"{recorded} of {len(configs)} configs recorded at rungs "
        f"{list(Rungs(args.min_steps, args.max_steps, args.eta).steps)} in {args.record} "
        f"({time.perf_counter() - start:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits,tokens=patch")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors; 0: this process")
    parser.add_argument("--trials", type=int, default=10, help="full-budget search's configs")
    parser.add_argument("--configs", type=int, default=0, help="multi-fidelity configs (0: plan)")
    parser.add_argument("--max-steps", type=int, default=162, help="full budget, top rung")
    parser.add_argument("--min-steps", type=int, default=18, help="first rung")
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--sampler", default="random", help="a name in tnas.search.samplers")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats per profile")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny rungs")
    parser.add_argument("--record", metavar="TABLE", help="record learning curves, then stop")
    parser.add_argument("--record-configs", type=int, default=96, help="configs to --record")
    parser.add_argument("--replay", metavar="TABLE", help="replay recorded curves, no training")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.max_steps, args.min_steps = 1, 4, 54, 6
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.record:
        return record(args)
    rungs = Rungs(args.min_steps, args.max_steps, args.eta)
    budget = args.trials * args.max_steps
    configs = args.configs or planned_configs(rungs, budget, max(1, args.workers))
    where = "this process" if args.workers == 0 else f"{args.workers} Ray workers"
    if args.replay:
        where = f"replaying {args.replay} on {max(1, args.workers)} slots"
    print(
        f"fidelity on {args.task}, space simq, {' '.join(OBJECTIVES)}; sampler {args.sampler}, "
        f"seeds 0..{args.seeds - 1}, {where}, {os.cpu_count()} logical cores, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"full budget: {args.trials} configs x {args.max_steps} steps = {budget:,} steps; "
        f"multi-fidelity: {configs} configs, rungs {list(rungs.steps)} (eta {args.eta}); "
        f"latency: batch 1, {args.repeats} timed repeats, both arms",
        flush=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="tnas-fidelity-"))
    if args.workers and not args.replay:
        from tnas.workers.pool import connect

        # one local Ray for every search: each search's pool starts its actors, not Ray
        connect(None, num_cpus=os.cpu_count(), _temp_dir=str(folder / "ray"))
    start = time.perf_counter()
    runs: list[tuple[Search, Search]] = []
    for seed in range(args.seeds):
        full = run_search(args, "full", seed, args.trials, folder)
        print(f"seed {seed}: full budget done in {full.seconds:.0f} s", flush=True)
        fidelity = run_search(args, "fidelity", seed, configs, folder)
        print(f"seed {seed}: multi-fidelity done in {fidelity.seconds:.0f} s", flush=True)
        runs.append((full, fidelity))
    if args.workers and not args.replay:
        import ray

        ray.shutdown()
    latencies = [v[1] for pair in runs for search in pair for v in search.values]
    reference = np.array([0.0, 1.1 * max(latencies)])  # minimised: -accuracy, latency
    print(
        f"hypervolume reference (all searches): accuracy 0, latency {reference[1]:.3f} ms "
        f"(1.1x the largest latency of any trial, any rung); {time.perf_counter() - start:.0f} s"
    )
    head = (
        f"{'seed':>4s} {'arm':14s} {'configs':>7s} {'top':>4s} {'steps':>7s} {'HV':>8s} "
        f"{'HV@full steps':>13s} {'wall s':>6s} {'steps to full HV':>16s} {'ratio':>6s} "
        f"{'s to full HV':>12s}"
    )
    print(head)
    ratios, table = [], {"full budget": [], "multi-fidelity": []}
    for full, fidelity in runs:
        target = volume(full.final, reference)
        for arm, search in (("full budget", full), ("multi-fidelity", fidelity)):
            hv = volume(search.final, reference)
            matched = volume_at(search, full.steps, reference)
            reached = reach(search, target, reference)
            ratio = reached[0] / full.steps if reached else math.inf
            if search is fidelity:
                ratios.append(ratio)
            table[arm].append((search.steps, hv, matched, search.seconds))
            reached_text = f"{reached[0]:16,d}" if reached else f"{'never':>16s}"
            seconds_text = f"{reached[1]:12.0f}" if reached else f"{'-':>12s}"
            print(
                f"{search.seed:4d} {arm:14s} {search.configs:7d} {search.complete:4d} "
                f"{search.steps:7,d} {hv:8.4f} {matched:13.4f} {search.seconds:6.0f} "
                f"{reached_text} {ratio:6.2f} {seconds_text}"
            )
    for arm, rows in table.items():
        steps, hv, matched, seconds = (median([row[i] for row in rows]) for i in range(4))
        reach_text = f"; steps to full HV / full steps {median(ratios):.2f}"
        print(
            f"median {arm:14s}: {steps:,.0f} steps, HV {hv:.4f} (at the full budget's steps "
            f"{matched:.4f}), {seconds:.0f} s wall{reach_text if arm == 'multi-fidelity' else ''}"
        )
    met, ratio = sum(r <= GOAL for r in ratios), median(ratios)
    if ratio <= GOAL:
        verdict = f"met ({ratio:.2f})"
    elif math.isinf(ratio):
        verdict = "missed: not reached at all in most seeds"
    else:
        verdict = f"missed: {ratio:.2f}, {ratio / GOAL:.1f}x the allowed steps"
    print(
        "goal: multi-fidelity reaches full-budget search's final HV with at most one third of "
        f"its training steps: {verdict} (median ratio; met in {met} of {len(ratios)} seeds)"
    )


if __name__ == "__main__":
    main()
