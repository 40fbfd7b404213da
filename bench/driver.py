"""The search driver's own cost, each figure beside the code path it replaced, in the same run.

    python bench/driver.py [--quick] [--only lookup,table,study] [--synchronous full]

1. lookup: ms per proposal of a pool search's lookup with pools of 10,000 and 100,000 configs
   (space primer): `PoolIndex` (the pool encoded once, then array operations) against the
   per-member loop the driver ran before (every member encoded at every proposal). Goal:
   < 10 ms at 100,000. The two must return the same members, else nothing is reported.
2. table: seconds to read a replay table of 100,000 rows of flat configs that is also the
   pool: `launch.prepare` (the table read once, by `ConfigReader`) against the reader before
   (`space.from_flat` and the hash per row, once for the pool and once for the evaluator).
   Goal: < 5 s.
3. study: ms per trial of a replay study (random sampler, SQLite, one slot, the table as the
   pool) over trials 100-200 and 9,000-10,000 (goal: within 1.5x), split into the sampler's
   own time (`study.ask` and `space.suggest`: Optuna stores each parameter), the evaluator's,
   and what the driver adds (goal: < 20 ms per trial): its reads of the study (`recorded`,
   `claimed_elsewhere`), its writes (`store`: a trial's attributes and constraint values in
   one transaction, twice per trial; `tell`) and the rest. Beside it, in the same run:
   - `before`: the driver as it was before its writes were batched: one commit per attribute
     and per constraint (`set_user_attr`, `set_constraint`, about 12 per trial), the study
     read at every `recorded` (now a read less than 0.1 s old, with no write since, is kept:
     `fill` right after `snapshot`), and SQLite's default `synchronous=FULL` (an fsync per
     commit; tnas now sets NORMAL on its WAL databases);
   - `reads before`: the driver's bookkeeping before that (every trial read at every ask and
     snapshot, the front recomputed from all of them; with the new pool lookup, which would
     otherwise dominate), with the writes of `before`.
   The late study is grown to 9,000 trials by inserting recorded trials (not timed), and
   copied for the drivers before; each window is then driven in 5 runs, the six (three
   drivers, two windows) taking turns so that a busy machine weighs on all alike; a run's
   first trial (the driver's start: its first read of the study) is not counted. `reads
   before` runs 200 late trials only (it is slow there). The last lines give the driver's
   share in each window against `before`'s.

`--quick`: pools of 2,000 and 10,000, a 10,000-row table, a 2,000-trial study (windows 100-200
and 1,900-2,000). `--synchronous full` runs the driver (not only the drivers before) with
SQLite's `synchronous=FULL`, to show what the fsync per commit costs it; the default is tnas's
setting, `normal`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from tnas import launch
from tnas.predictors import encode
from tnas.search import run as runs
from tnas.search.db import session
from tnas.search.driver import SearchDriver
from tnas.search.nearest import PoolIndex
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.search.settings import NOT_EVALUATED
from tnas.search.view import Member
from tnas.space import ArchConfig, load_space
from tnas.workers.replay import ReplayEvaluator, load_table

SPACE = "primer"
ROUNDS = 5  # runs per window of the study, taking turns
OBJECTIVES = ["accuracy:max", "latency_ms:min"]


def loop_nearest(space, pool, config, taken):
    """The lookup before: every candidate encoded at every proposal."""
    candidates = [c for c in pool if c.hash not in taken]
    if not candidates:
        return None
    target = encode(space, config)
    distances = [float(np.sum((encode(space, c) - target) ** 2)) for c in candidates]
    return candidates[int(np.argmin(distances))]


def unique_configs(space, n: int, seed: int = 0) -> list[ArchConfig]:
    rng = np.random.default_rng(seed)
    configs, seen = [], set()
    while len(configs) < n:
        config = space.sample(rng)
        if config.hash not in seen:
            seen.add(config.hash)
            configs.append(config)
    return configs


def bench_lookup(space, sizes: list[int], configs: list[ArchConfig]) -> None:
    rng = np.random.default_rng(1)
    for size in sizes:
        pool = configs[:size]
        start = time.perf_counter()
        index = PoolIndex(space, pool)
        encoded_s = time.perf_counter() - start
        taken: set[str] = set()
        new_ms, proposals = [], []
        for _ in range(200):
            proposal = space.sample(rng)
            start = time.perf_counter()
            found = index.nearest(encode(space, proposal), taken)
            new_ms.append((time.perf_counter() - start) * 1e3)
            proposals.append((proposal, set(taken), found))
            taken.add(found.hash)
        checked = proposals[:: max(1, len(proposals) // (2 if size > 20_000 else 8))]
        old_ms = []
        for proposal, before, found in checked:
            start = time.perf_counter()
            expected = loop_nearest(space, pool, proposal, before)
            old_ms.append((time.perf_counter() - start) * 1e3)
            if expected is not found:
                raise SystemExit("refusing to report: PoolIndex and the loop disagree")
        print(
            f"lookup, pool {size:>7,}: {statistics.median(new_ms):7.2f} ms/proposal "
            f"(encoded once in {encoded_s:.1f} s)   loop before: "
            f"{statistics.median(old_ms):9.1f} ms/proposal ({len(checked)} proposals, same "
            f"members)   {statistics.median(old_ms) / statistics.median(new_ms):,.0f}x"
            + ("   goal < 10 ms" if size >= 100_000 else "")
        )


def write_table(path: Path, space, configs: list[ArchConfig], flat: bool = True) -> None:
    rng = np.random.default_rng(2)
    with path.open("w") as handle:
        for config in configs:
            metrics = {
                "accuracy": float(rng.uniform(0.5, 1.0)),
                "latency_ms": float(rng.uniform(1, 50)),
            }
            record = {
                "config": space.to_flat(config) if flat else config.to_dict(),
                "metrics": metrics,
            }
            handle.write(json.dumps(record) + "\n")


def old_read(path: Path, space) -> dict[str, dict]:
    """The table reader before: `from_flat` (or `from_dict`) and the hash per row."""
    rows = {}
    for text in path.read_text().splitlines():
        if not text.strip():
            continue
        record = json.loads(text)
        value = record["config"]
        config = ArchConfig.from_dict(value) if "layers" in value else space.from_flat(value)
        metrics = {name: float(number) for name, number in record.get("metrics", {}).items()}
        rows[config.hash] = {"config": config, "metrics": metrics, "status": "ok", "reason": None}
    return rows


def bench_table(space, rows: int, configs: list[ArchConfig], folder: Path) -> None:
    table = folder / f"flat{rows}.jsonl"
    write_table(table, space, configs[:rows])
    spec = launch.run_spec(space=SPACE, pool=str(table), objectives=OBJECTIVES)
    start = time.perf_counter()
    plan = launch.prepare(spec)
    new_s = time.perf_counter() - start
    start = time.perf_counter()
    read = load_table(table, space)
    once_s = time.perf_counter() - start
    start = time.perf_counter()
    pool = [row["config"] for row in old_read(table, space).values()]  # as the pool
    old = old_read(table, space)  # and again as the evaluator
    old_s = time.perf_counter() - start
    if [c.hash for c in plan.pool] != list(old) or [c.hash for c in pool] != list(read):
        raise SystemExit("refusing to report: the readers disagree")
    if any(read[h]["config"] != old[h]["config"] for h in old):
        raise SystemExit("refusing to report: the readers disagree")
    print(
        f"table, {rows:,} flat rows: prepare (read once) {new_s:5.2f} s (load_table alone "
        f"{once_s:.2f} s)   before: {old_s:5.2f} s (read twice, {old_s / 2:.2f} s each)   "
        f"{old_s / new_s:.1f}x   goal < 5 s"
    )


class PerAttributeDriver(SearchDriver):
    """The driver before: one commit per user attribute and per constraint (Optuna's
    `set_user_attr`, `set_constraint`: a read of the trial's system attributes, then a write),
    where `store` now writes them all in one transaction; and the study read at every
    `recorded`, where a read less than `VIEW_REUSE_S` old with no write since is now kept."""

    def recorded(self):
        self.view_read_at = None
        return super().recorded()

    def store(self, trial, attrs: dict, constraints: dict[str, float] | None = None) -> None:
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        for name, value in (constraints or {}).items():
            trial.set_constraint(name, value)


class FullReadDriver(PerAttributeDriver):
    """The driver's bookkeeping before: every trial read at every ask and every snapshot (and
    its writes before, one commit each)."""

    def recorded(self):
        from optuna.trial import TrialState

        values, running, members, evaluated, failed = {}, set(), [], 0, 0
        for trial in self.study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            digest = attrs.get("config_hash")
            if trial.state == TrialState.RUNNING and digest:
                running.add(digest)
            elif trial.state == TrialState.COMPLETE and "duplicate_of" not in attrs:
                evaluated += 1
                values[digest] = list(trial.values)
                members.append(
                    Member(trial.number, digest, attrs.get("config", {}), list(trial.values))
                )
            elif trial.state == TrialState.FAIL and attrs.get("reason") not in NOT_EVALUATED:
                evaluated += 1
                failed += 1
                self.failed_configs.add(digest)
        return values, running, members, evaluated, failed

    def claimed_elsewhere(self, config_hash: str, number: int) -> bool:
        from optuna.trial import TrialState

        return any(
            trial.number != number
            and trial.user_attrs.get("config_hash") == config_hash
            and "duplicate_of" not in trial.user_attrs
            and trial.state in (TrialState.RUNNING, TrialState.COMPLETE)
            for trial in self.study.get_trials(deepcopy=False)
        )

    def snapshot(self) -> None:
        from tnas.search.reference import settle_reference, usable_metric

        _, _, members, evaluated, failed = self.recorded()
        self.progress.finished, self.progress.failed = evaluated, failed
        self.progress.in_flight = len(self.in_flight)
        members = [m for m in members if all(map(usable_metric, m.values))]
        directions = [o.direction for o in self.objectives]
        values = np.array([m.values for m in members], dtype=float)
        first_batch_in = len(members) >= max(2, self.evaluator.slots) or bool(
            members and evaluated >= self.n_trials and not self.in_flight
        )
        frozen, frozen_now = settle_reference(self.study, self.objectives, values, first_batch_in)
        if not members:
            return
        points = to_minimization(values, directions)
        if frozen is None:
            reference = reference_point(points)
        else:
            reference = to_minimization(np.asarray(frozen, dtype=float), directions)
        on_front = pareto_front(points)
        front = [members[i] for i in on_front]
        numbers = frozenset(m.number for m in front)
        volume = hypervolume(points[on_front], reference)
        self.progress.front_size, self.progress.hypervolume = len(front), volume
        reference = [float(x) for x in reference]
        if numbers == self.front_numbers:
            if frozen is not None and not frozen_now:
                return
            latest = self.db.latest_snapshot(self.study.study_name)
            if latest is not None and list(latest["reference_point"]) == reference:
                return
        self.front_numbers = numbers
        self.db.save_snapshot(
            self.study.study_name,
            [o.to_dict() for o in self.objectives],
            len(members),
            volume,
            reference,
            [
                {
                    "trial_number": m.number,
                    "config_hash": m.config_hash,
                    "config": m.config,
                    "values": m.values,
                }
                for m in front
            ],
        )


class Clock:
    """Seconds spent in each part of a trial, and the progress callback's time stamps.

    Parts: the sampler (`study.ask`, `space.suggest`: Optuna stores each parameter), the
    evaluator (the replay table's submit and collect), the driver's reads of the study
    (`recorded`, `claimed_elsewhere`) and its writes (`store`, or `set_user_attr` and
    `set_constraint` before; `tell`). Only the outermost timed call counts.
    """

    PARTS = ("sampler", "evaluator", "reads", "writes")

    def __init__(self, drivers):
        self.spent = dict.fromkeys(self.PARTS, 0.0)
        self.depth = 0
        self.stamps: list[tuple[int, float, dict]] = []
        self.patched = []
        self.drivers = drivers

    def wrap(self, owner, name: str, part: str) -> None:
        original = owner.__dict__[name]

        def timed(*args, **kwargs):
            self.depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1
                if not self.depth:
                    self.spent[part] += time.perf_counter() - start

        setattr(owner, name, timed)
        self.patched.append((owner, name, original))

    def __enter__(self):
        self.wrap(optuna.study.Study, "ask", "sampler")
        self.wrap(type(load_space(SPACE)), "suggest", "sampler")
        self.wrap(ReplayEvaluator, "submit", "evaluator")
        self.wrap(ReplayEvaluator, "collect", "evaluator")
        for name in ("set_user_attr", "set_constraint"):
            self.wrap(optuna.trial.Trial, name, "writes")
        self.wrap(optuna.study.Study, "tell", "writes")
        for driver in self.drivers:
            for name in ("recorded", "claimed_elsewhere"):
                if name in driver.__dict__:
                    self.wrap(driver, name, "reads")
            if "store" in driver.__dict__:
                self.wrap(driver, "store", "writes")
        return self

    def __exit__(self, *_):
        for owner, name, original in reversed(self.patched):
            setattr(owner, name, original)

    def stamp(self, finished: int) -> None:
        self.stamps.append((finished, time.perf_counter(), dict(self.spent)))

    def since(self, finished: int) -> dict:
        """Seconds of the run, and of each part, from its first trial past `finished` trials
        (the driver started) to its last, and `n`, the trials between."""
        first = next(s for s in self.stamps if s[0] > finished)
        last = self.stamps[-1]
        spent = {part: last[2][part] - first[2][part] for part in self.PARTS}
        return spent | {"total": last[1] - first[1], "n": last[0] - first[0]}


def grow(url: str, configs: list[ArchConfig], upto: int) -> None:
    """Insert completed trials, as the driver records them, until the study has `upto`
    trials, each on a config of the table not yet taken. Written with SQLite's
    `synchronous=OFF`: only to build the study quickly; no figure is measured here."""
    from tnas.search.db import Database

    level, session.SQLITE_SYNCHRONOUS = session.SQLITE_SYNCHRONOUS, "OFF"
    db = Database(url)
    try:
        study = optuna.load_study(study_name="grow", storage=db.optuna_storage())
        trials = study.get_trials(deepcopy=False)
        taken = {t.user_attrs.get("config_hash") for t in trials}
        free = (c for c in configs if c.hash not in taken)
        rng = np.random.default_rng(4)
        batch = []
        for _ in range(upto - len(trials)):
            config = next(free)
            accuracy, latency = float(rng.uniform(0.5, 1.0)), float(rng.uniform(1, 50))
            attrs = {"config": config.to_dict(), "config_hash": config.hash}
            attrs |= {"metrics": {"accuracy": accuracy, "latency_ms": latency}}
            attrs |= {"curve": None, "fingerprint": None, "timings": {}, "attempts": 1}
            attrs |= {"reason": None, "error": None}
            batch.append(optuna.trial.create_trial(values=[accuracy, latency], user_attrs=attrs))
        study.add_trials(batch)
    finally:
        db.close()
        session.SQLITE_SYNCHRONOUS = level


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file (its write-ahead log included)."""
    import sqlite3

    with sqlite3.connect(source) as reader, sqlite3.connect(target) as writer:
        reader.backup(writer)


def drive(url: str, table: Path, trials: int, driver_class, synchronous: str) -> Clock:
    """Run the study `grow` at `url` to `trials` with `driver_class`, its SQLite connections
    at `PRAGMA synchronous={synchronous}`; the clock of the run."""
    original = runs.SearchDriver, session.SQLITE_SYNCHRONOUS
    runs.SearchDriver = driver_class  # what `make_driver` builds
    session.SQLITE_SYNCHRONOUS = synchronous  # read as each connection opens
    try:
        with Clock([c for c in driver_class.__mro__ if issubclass(c, SearchDriver)]) as clock:
            launch.launch(
                space=SPACE,
                objectives=OBJECTIVES,
                evaluator=f"replay:{table}",
                sampler="random",
                trials=trials,
                workers=1,
                storage=url,
                study="grow",
                progress=lambda state: clock.stamp(state.finished),
            )
    finally:
        runs.SearchDriver, session.SQLITE_SYNCHRONOUS = original
    return clock


# The drivers compared: the driver, its writes before (one commit per attribute, at SQLite's
# default synchronous=FULL), and its bookkeeping before that (every trial read at every ask).
DRIVERS = {
    "driver": SearchDriver,
    "before": PerAttributeDriver,
    "reads before": FullReadDriver,
}


def bench_study(
    space, trials: int, configs: list[ArchConfig], folder: Path, synchronous: str
) -> dict:
    """Per-trial figures at trials 100-200 and at the end of a `trials`-trial study, for the
    driver (its SQLite connections at `synchronous`) and for the drivers before (at FULL,
    SQLite's default, which tnas kept before; the full reads over fewer late trials: they are
    slow there).

    Each window is driven in `ROUNDS` runs, the six (three drivers, two windows) taking turns,
    so that a machine busy with other work weighs on all of them alike; each run's first
    trial (the driver's start: reading the study, encoding the pool) is not counted."""
    table = folder / "study.jsonl"
    write_table(table, space, configs, flat=False)
    late = trials - (1000 if trials >= 5000 else 100)
    sizes = {}
    for name in DRIVERS:
        sizes[name, "early"] = 100
        sizes[name, "late"] = (
            (200 if trials >= 5000 else 100) if name == "reads before" else (trials - late)
        )
    levels = {name: synchronous if name == "driver" else "FULL" for name in DRIVERS}
    path = {key: folder / f"{key[0].replace(' ', '-')}-{key[1]}.db" for key in sizes}
    url = {key: f"sqlite:///{value}" for key, value in path.items()}
    start = time.perf_counter()
    drive(url["driver", "late"], table, 1, SearchDriver, "OFF")  # creates the study
    grow(url["driver", "late"], configs, late)
    for name, driver_class in DRIVERS.items():
        if name != "driver":
            copy_database(path["driver", "late"], path[name, "late"])
        drive(url[name, "early"], table, 100, driver_class, "OFF")
    print(f"studies made, one grown to {late:,} trials, in {time.perf_counter() - start:.0f} s")
    at = {key: 100 if key[1] == "early" else late for key in sizes}
    sums = {key: dict.fromkeys((*Clock.PARTS, "total", "n"), 0.0) for key in sizes}
    for _ in range(ROUNDS):
        for key, size in sizes.items():
            target = at[key] + size // ROUNDS
            clock = drive(url[key], table, target, DRIVERS[key[0]], levels[key[0]])
            for part, value in clock.since(at[key]).items():
                sums[key][part] += value
            at[key] = target
    results: dict[str, dict] = {}
    for (name, window), total in sums.items():
        figures = {part: total[part] * 1e3 / total["n"] for part in (*Clock.PARTS, "total")}
        first = 100 if window == "early" else late
        figures |= {"n": int(total["n"]), "first": first, "last": first + sizes[name, window]}
        figures["driver"] = figures["total"] - figures["sampler"] - figures["evaluator"]
        figures["synchronous"] = levels[name]
        results.setdefault(name, {})[window] = figures
    return results


def report_study(results: dict[str, dict]) -> None:
    for label, result in results.items():
        for part in (result["early"], result["late"]):
            window = f"{part['first']:,}-{part['last']:,} ({part['n']} timed)"
            rest = part["driver"] - part["reads"] - part["writes"]
            print(
                f"study, {label:<12} trials {window:>25}: {part['total']:6.1f} ms/trial = "
                f"sampler {part['sampler']:5.1f} + evaluator {part['evaluator']:3.1f} + driver "
                f"{part['driver']:5.1f} (reads {part['reads']:5.1f}, writes "
                f"{part['writes']:4.1f}, the rest {rest:4.1f})"
            )
        ratio = result["late"]["total"] / result["early"]["total"]
        level = result["early"]["synchronous"].lower()
        print(f"study, {label:<12} late/early: {ratio:.2f}x   goal <= 1.5x   synchronous={level}")
    for window in ("early", "late"):
        now, before = results["driver"][window], results["before"][window]
        print(
            f"study, driver's share, trials {now['first']:,}-{now['last']:,}: "
            f"{now['driver']:.1f} ms/trial (writes {now['writes']:.1f}), before "
            f"{before['driver']:.1f} (writes {before['writes']:.1f})   "
            f"{before['driver'] / now['driver']:.1f}x   goal < 20 ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="lookup,table,study")
    parser.add_argument(
        "--synchronous", choices=["normal", "full"], default=session.SQLITE_SYNCHRONOUS.lower()
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    only = set(args.only.split(","))
    sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
    rows = 10_000 if args.quick else 100_000
    trials = 2_000 if args.quick else 10_000
    space = load_space(SPACE)
    folder = Path(tempfile.mkdtemp(prefix="tnas-bench-driver-"))
    start = time.perf_counter()
    needed = max(
        max(sizes) if "lookup" in only else 0,
        rows if "table" in only else 0,
        trials + 2_000 if "study" in only else 0,
    )
    configs = unique_configs(space, needed)
    print(f"{needed:,} distinct configs of space {SPACE} in {time.perf_counter() - start:.0f} s")
    if "lookup" in only:
        bench_lookup(space, sizes, configs)
    if "table" in only:
        bench_table(space, rows, configs, folder)
    if "study" in only:
        synchronous = args.synchronous.upper()
        report_study(bench_study(space, trials, configs[: trials + 2_000], folder, synchronous))
    shutil.rmtree(folder, ignore_errors=True)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
