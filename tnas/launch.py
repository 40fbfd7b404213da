"""Searching from Python: `launch` a search and `resume` one, the path the CLI takes too.

This is the one module that wires `tnas.search` (studies, samplers, the driver) to
`tnas.workers` (what trains, measures or replays a config). A search's settings are a
`RunSpec`: given as a YAML run file, a dict, a `RunSpec`, or keyword arguments (keywords
override the rest). `launch` checks everything before it writes anything, opens or creates the
study, starts the evaluator (trials in this process with `workers=0`, else a Ray pool, or a
replay table), drives the search to its budget and returns a `SearchResult`.

Progress goes to a callback, called with the driver's `Progress` (study, total, finished,
failed, in flight, front size, hypervolume) each time a trial is recorded: the CLI draws a
rich progress bar with it, a notebook whatever it likes.

Bad settings raise `RunError` and a database that cannot be used `StorageError`; both are
`ValueError`s with one-line messages, and nothing is written before the settings pass.

>>> from tnas.launch import launch
>>> result = launch(space="simq", task="digits", trials=4, workers=0, steps=20,
...                 storage="sqlite:///demo.db", study="notebook")   # doctest: +SKIP
>>> result.stopped, len(result.front)                                 # doctest: +SKIP
('4 trials evaluated', 2)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tnas.safety import redact_url
from tnas.search.db import Database, StorageError
from tnas.search.driver import Progress
from tnas.search.run import RunError, RunSpec
from tnas.space import ArchConfig, ConfigError, DesignSpace, SpaceError
from tnas.space.errors import one_line

ProgressCallback = Callable[[Progress], None]
# What a user's settings can raise while they are checked: each becomes one RunError line.
SETTING_ERRORS = (SpaceError, ConfigError, ValueError, OSError)


@dataclass
class SearchResult:
    """How a search ended: its study, the database (password redacted), why it stopped, the
    last progress figures, and the study's Pareto front (rows of `tnas pareto`)."""

    study: str
    storage: str
    stopped: str
    progress: Progress
    front: list[dict] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C stopped it; `resume` continues it."""
        return self.stopped == "interrupted"


@dataclass
class Plan:
    """A checked run: everything the search needs, nothing started or written yet."""

    spec: RunSpec
    space: DesignSpace
    pool: list[ArchConfig] | None
    constraints: list
    start_evaluator: Callable[[], object]


def run_spec(run: str | Path | Mapping | RunSpec | None = None, **settings) -> RunSpec:
    """A run's settings: `run` (a YAML run file, a dict or a `RunSpec`) with `settings`
    (those not None) on top. A bad setting is one `RunError` line.

    >>> run_spec({"space": "simq"}, trials=8).trials
    8
    """
    overrides = {key: value for key, value in settings.items() if value is not None}
    if isinstance(run, str | Path):
        return RunSpec.from_yaml(run, **overrides)
    if isinstance(run, RunSpec):
        run = run.model_dump(exclude_unset=True)
    return RunSpec.build(dict(run or {}) | overrides)


def launch(
    run: str | Path | Mapping | RunSpec | None = None,
    *,
    progress: ProgressCallback | None = None,
    join: bool = False,
    **settings,
) -> SearchResult:
    """Run a multi-objective architecture search; every trial and front goes to the database.

    `run` and `settings` are as `run_spec` takes them: the names of `RunSpec`'s fields
    (`space`, `task`, `objectives`, `trials`, `workers`, `sampler`, `study`, `storage`, ...).
    A study that exists already is continued up to the budget, counting its earlier trials,
    if the run has the study's identity (`tnas.search.run.identity`: space, task, objectives,
    constraints, evaluator, budget, latency protocol); else a one-line `RunError` names what
    differs. A study whose driver is alive is refused unless `join` (a second driver).
    """
    return search(run_spec(run, **settings), progress=progress, join=join)


# The settings `resume` may change: how long and where the search runs, not what it measures.
RESUME_SETTINGS = ("trials", "workers", "timeout", "ray_address")


def resume(
    study: str,
    *,
    storage: str | None = None,
    progress: ProgressCallback | None = None,
    join: bool = False,
    **changes,
) -> SearchResult:
    """Continue a study with the settings stored with it: the RUNNING trials of dead drivers
    are failed (`orphaned`), and the configs of trials cut short (orphaned or `interrupted`)
    are queued again. `changes` may set `trials` (a new budget, e.g. a larger one),
    `workers`, `timeout` and `ray_address`; the new values are stored. A study whose driver is
    alive is refused unless `join`."""
    from tnas.search.query import study_settings

    unknown = sorted(set(changes) - set(RESUME_SETTINGS))
    if unknown:
        raise RunError(
            f"resume cannot change {', '.join(unknown)}; it can change "
            f"{', '.join(RESUME_SETTINGS)} (the rest is the study's identity)"
        )
    db = open_database(storage)
    try:
        run = study_settings(db, study).run
        if not run:
            raise RunError(f"study {study!r} has no stored run settings")
        changes = {key: value for key, value in changes.items() if value is not None}
        spec = RunSpec.build(run | changes | {"storage": db.url, "study": study})
    except LookupError as err:
        raise RunError(str(err)) from None
    finally:
        db.close()
    return search(spec, resume=True, progress=progress, join=join)


def record_curves(
    configs: list[ArchConfig],
    out: str | Path,
    run: str | Path | Mapping | RunSpec | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **settings,
) -> int:
    """Train every config through every rung of a multi-fidelity run (`fidelity="steps"`,
    its `min_steps`, `max_steps`, `eta`, task, budget and latency protocol) and write a replay
    table whose rows carry each rung's metrics (`"rungs"`) and the top rung's as `metrics`:
    the learning-curve table that `--evaluator replay:TABLE --fidelity steps` replays, with
    the same settings, in seconds. Trials run as the search runs them (`workers=0` in this
    process, else a Ray pool), each rung continuing from the last's checkpoint. A config
    that fails is written as failed. `progress(done, total)` after each config; returns the
    number of configs recorded ok.

    >>> record_curves(configs, "curves.jsonl", space="simq", fidelity="steps",
    ...               min_steps=18, max_steps=162, eta=3, workers=2)   # doctest: +SKIP
    """
    from tnas.workers.replay import write_table

    spec = run_spec(run, **settings)
    if not spec.fidelity:
        raise RunError("record_curves needs a multi-fidelity run: fidelity='steps' and its rungs")
    plan = prepare(spec)
    top = len(plan.spec.rungs.steps) - 1
    waiting = list(range(len(configs)))
    rows: dict[int, dict] = {}
    curves: dict[int, dict] = {i: {} for i in waiting}
    evaluator = plan.start_evaluator()
    try:
        in_flight = 0
        while waiting or in_flight:
            while waiting and in_flight < evaluator.slots:
                number = waiting.pop(0)
                evaluator.submit(f"{number}@0", configs[number])
                in_flight += 1
            for report in evaluator.collect(timeout=1.0):
                in_flight -= 1
                number, rung = (int(part) for part in report["key"].split("@"))
                if report["status"] == "ok":
                    curves[number][report["steps"]] = report["metrics"]
                if report["status"] == "ok" and rung < top:
                    evaluator.submit(f"{number}@{rung + 1}", configs[number])
                    in_flight += 1
                    continue
                if report["status"] != "ok" and hasattr(evaluator, "job"):
                    evaluator.job.discard(str(number), configs[number].hash)
                rows[number] = report | {"rungs": curves[number]}
                if progress:
                    progress(len(rows), len(configs))
    finally:
        evaluator.close()
    write_table(out, [(configs[i], rows[i]) for i in sorted(rows)])
    return sum(row["status"] == "ok" for row in rows.values())


def measure_front(
    study: str, target: str, storage: str | None = None, ray_address: str | None = None
) -> tuple[list[dict], str]:
    """Measure the latency of the members of a study's front for real on `target` (`local`, or
    `node:RESOURCE`: the device's Ray node), under the study's measurement protocol, beside the
    stored value of its latency objective (the first predicted one, else `latency_ms`). Returns
    rows (number, the stored objective, `measured_ms`, `error_pct`, device) and one summary
    line: the mean absolute percentage error and the share within +-10 %. The weights are
    fresh (a front member's trained weights are not kept); latency does not depend on them.
    `LookupError` for an unknown study, `ValueError` for a bad target, one line each."""
    from tnas.search.query import pareto_rows, predicted_objectives, study_settings
    from tnas.workers.backend import ProfileSettings
    from tnas.workers.calibrate import task_adapter
    from tnas.workers.target import Target, check_target, measure

    where = Target.parse(target)
    db = open_database(storage, create=False)
    try:
        rows = pareto_rows(db, study)
        predicted = predicted_objectives(db, study)
        settings = study_settings(db, study)
    finally:
        db.close()
    if not rows:
        raise LookupError(f"study {study!r} has no front yet")
    names = settings.objective_names
    latencies = [name for name in names if name.startswith("latency_ms")]
    stored = next(iter(predicted), latencies[0] if latencies else None)
    run = RunSpec.build(settings.run) if settings.run else RunSpec()
    protocol = ProfileSettings(**run.protocol)
    adapt = task_adapter(run.task)  # the model a trial deploys: the task's sequence length
    configs = [adapt(ArchConfig.from_dict(row["config"])) for row in rows]
    connected = check_target(where, ray_address)
    try:
        results = measure(where, configs, protocol)
    finally:
        if connected:
            import ray

            ray.shutdown()
    measured_rows, errors = [], []
    for row, result in zip(rows, results, strict=True):
        line = {"number": row["number"]}
        if stored is not None:
            line[stored] = row[stored]
        ms = result.get("metrics", {}).get("latency_ms")
        line["measured_ms"] = ms
        error = None
        if ms is not None and stored is not None and ms > 0:
            error = 100.0 * (row[stored] - ms) / ms
            errors.append(abs(error))
        line["error_pct"] = error
        line["device"] = (result.get("fingerprint") or {}).get("id") or result.get("error")
        measured_rows.append(line)
    if errors:
        within = sum(e <= 10.0 for e in errors)
        summary = (
            f"{len(errors)} front members measured on {where.text}: {stored} is off by "
            f"{sum(errors) / len(errors):.1f}% on average (MAPE); {within} of {len(errors)} "
            f"within +-10% ({within / len(errors):.0%})"
        )
    else:
        summary = f"{len(results)} front members measured on {where.text}; nothing to compare"
    return measured_rows, summary


def open_database(storage: str | None, create: bool = True) -> Database:
    """The study database at `storage` (a URL or a .db file; default `$TNAS_STORAGE`, else
    `sqlite:///tnas.db`); `StorageError` in one line if it cannot be used. With
    `create=False` (what only reads) a missing SQLite file is such an error, never created."""
    return Database(storage, create=create)


def search(
    spec: RunSpec,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    join: bool = False,
) -> SearchResult:
    """Check `spec`, open the study and the evaluator, and drive the search (what `launch`
    and `resume` share). While it runs, the driver's heartbeat is in the database."""
    from tnas.search import run as runs
    from tnas.search.liveness import Heartbeat, check_live
    from tnas.search.query import pareto_rows

    plan = prepare(spec)
    spec = plan.spec
    db = open_database(spec.storage)
    connected = False
    try:
        live = check_live(db, spec.study_name, join)
        connected = check_latency_nodes(spec)  # before the study is written
        study = runs.open_study(spec, db, plan.space, resume)
        with Heartbeat(db, spec.study_name) as heartbeat:
            adopt = bool(spec.fidelity)
            requeued = runs.requeue_orphans(study, plan.space, live, adopt) if resume else None
            evaluator = plan.start_evaluator()
            try:
                job = getattr(evaluator, "job", None)
                driver = runs.make_driver(
                    spec,
                    study,
                    plan.space,
                    evaluator,
                    db,
                    plan.constraints,
                    plan.pool,
                    progress,
                    live,
                    getattr(job, "discard", None),
                )
                driver.driver_id = heartbeat.id
                driver.progress.requeued = requeued
                if progress:
                    progress(driver.progress)
                finished = driver.run()
            finally:
                evaluator.close()
        return SearchResult(
            study=spec.study_name,
            storage=redact_url(db.url),
            stopped=finished.stopped,
            progress=finished,
            front=pareto_rows(db, spec.study_name),
        )
    except StorageError as err:  # every earlier write is kept: `resume` goes on from there
        raise StorageError(redact_url(str(err))) from None
    finally:
        db.close()
        if connected:
            import ray

            ray.shutdown()


def check_latency_nodes(spec: RunSpec) -> bool:
    """Connect to Ray if a `node:` latency source needs it, and refuse a source whose resource
    no node offers, in one `RunError` line; True if Ray was started or joined here."""
    from tnas.workers.target import Target, check_target

    connected = False
    for source in spec.latency_sources:
        if source.kind == "node":
            try:
                connected |= check_target(Target(source.target), spec.ray_address)
            except ValueError as err:
                raise RunError(f"--latency {source.text}: {err}") from None
    return connected


def prepare(spec: RunSpec) -> Plan:
    """Check a run without writing anything: its space, pool, evaluator, objectives and
    constraints. Every problem is one `RunError` line."""
    from tnas.search import run as runs
    from tnas.space import load_space

    try:
        spec = runs.with_absolute_paths(spec)
        if spec.supernet:
            spec = supernet_settings(spec)
        space = load_space(spec.space)
        found = bool(spec.pool) and Path(spec.pool).is_file()
        if not spec.evaluator and found and is_replay_table(spec.pool):
            # A pool in the replay format is its own evaluator.
            spec = spec.model_copy(update={"evaluator": f"replay:{spec.pool}"})
        # a pool that is the replay table is read once, as the table
        table_pool = found and (spec.evaluator or "").split(",")[0] == f"replay:{spec.pool}"
        pool = runs.read_pool(spec.pool, space) if spec.pool and not table_pool else None
        if spec.fidelity:
            runs.check_fidelity(spec)
        start_evaluator, metric_names = build_evaluator(spec, space)
        if table_pool:
            pool = start_evaluator().configs()
        if spec.evaluator:  # a replay table: only configs it records, unless it has them all
            pool = start_evaluator().search_pool(space, pool)
        constraints = runs.check_run(spec, space, metric_names)
    except RunError:
        raise
    except SETTING_ERRORS as err:  # OSError: a pool or table that cannot be read
        raise RunError(one_line(err)) from None
    return Plan(spec, space, pool, constraints, start_evaluator)


def build_evaluator(spec: RunSpec, space: DesignSpace) -> tuple[Callable[[], object], set[str]]:
    """The evaluator a run names, as a function that starts it, and the metric names it
    reports. Nothing is started yet: a table is read, a supernet loaded and checked."""
    from tnas.workers.replay import parse_replay

    replay_spec = spec.evaluator
    if replay_spec and spec.supernet:
        raise RunError(f"--supernet evaluates configs itself; it cannot go with {replay_spec}")
    sources = spec.latency_sources
    nodes = [source for source in sources if source.kind == "node"]
    if nodes and (replay_spec or spec.supernet):
        what = "a replay table" if replay_spec else "--supernet"
        raise RunError(
            f"--latency {nodes[0].kind}:{nodes[0].target} profiles trained models on a Ray node; "
            f"{what} trains none (use measured or table:FILE)"
        )
    if replay_spec:
        replay = parse_replay(replay_spec, space, slots=max(1, spec.workers), seed=spec.seed)
        if spec.fidelity:  # the table's learning curves answer each rung
            replay.follow_rungs(spec.rungs.steps)
        names = {name for row in replay.rows.values() for name in row["metrics"]}
        return with_latency_sources(spec, space, lambda: replay, names)
    from tnas.workers.backend import ProfileSettings, TrialJob, WorkerCache
    from tnas.workers.train import Budget

    profile = ProfileSettings(**spec.protocol)  # the same inline and on every Ray worker
    # where the workers measure latency: this worker (measured) or a node; tables predict
    targets = tuple((s.name, s.target) for s in sources if s.kind != "table")
    primary = sources[0].name if sources[0].kind != "table" else None
    cache = WorkerCache()
    if spec.supernet:
        job = supernet_job(spec, space, profile, cache)
    elif spec.fidelity:
        job = fidelity_job(spec, profile, targets, primary)
    else:
        budget = Budget(steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed)
        job = TrialJob(
            task=spec.task, budget=budget, profile=profile, targets=targets, primary=primary
        )

    def start():
        from tnas.workers.backend import InlineEvaluator
        from tnas.workers.pool import RayPool

        if spec.fidelity:
            Path(job.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        if spec.workers == 0:
            # the supernet checked here is loaded once; None threads: this process's cores
            return InlineEvaluator(job, cache, threads=spec.threads)
        return RayPool(
            job, workers=spec.workers, address=spec.ray_address, trial_timeout=spec.trial_timeout
        )

    return with_latency_sources(spec, space, start, job.metric_names())


def with_latency_sources(
    spec: RunSpec, space: DesignSpace, start: Callable[[], object], names: set[str]
) -> tuple[Callable[[], object], set[str]]:
    """`start` and the metric `names` of an evaluator, with the run's `table:` latency sources
    predicted on top (`PredictedLatency`), each table opened and checked now; as they are
    when the run has none."""
    from tnas.search.latency import METRIC

    sources = spec.latency_sources
    tables = [source for source in sources if source.kind == "table"]
    measured = tuple(s.name for s in sources if s.kind == "measured")
    if not tables and (measured == ("local",) and len(sources) == 1 or METRIC not in names):
        return start, names
    from tnas.workers.calibrate import task_adapter
    from tnas.workers.predicted import PredictedLatency, open_table

    opened = {}
    for source in tables:
        try:
            opened[source.name] = (
                source.target,
                open_table(source.target, spec.protocol, space.name, space.digest, spec.task),
            )
        except ValueError as err:
            raise RunError(one_line(err)) from None
    primary = sources[0].name if sources[0].kind == "table" else None

    adapt = task_adapter(spec.task) if tables else None

    def start_predicted():
        return PredictedLatency(
            start(), opened, primary, spec.profile_batch, spec.profile_seq_len, measured, adapt
        )

    names = set(names) | {source.metric for source in tables}
    if METRIC in names:
        names |= {f"{METRIC}@{name}" for name in measured}
    if primary is not None:
        names.add(METRIC)
    return start_predicted, names


def fidelity_job(spec: RunSpec, profile, targets=(("local", None),), primary="local"):
    """The job of a multi-fidelity run: each submission trains one rung of a trial, from its
    checkpoint in `checkpoint_dir` (default `$TNAS_CHECKPOINT_DIR`, else `./tnas-checkpoints`,
    made when the search starts; on a cluster, a folder every worker shares)."""
    from tnas.workers.backend import FidelityJob
    from tnas.workers.train import Budget

    rungs = spec.rungs.steps
    named = spec.checkpoint_dir or os.environ.get("TNAS_CHECKPOINT_DIR") or "tnas-checkpoints"
    folder = Path(named).expanduser().absolute()
    budget = Budget(steps=rungs[-1], batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed)
    return FidelityJob(
        task=spec.task,
        budget=budget,
        rungs=rungs,
        checkpoint_dir=str(folder),
        profile=profile,
        study=spec.study_name,
        keep_checkpoints=spec.keep_checkpoints,
        targets=targets,
        primary=primary,
    )


def is_replay_table(path: str) -> bool:
    """Whether the JSONL file at `path` is a replay table (its rows carry metrics)."""
    with open(path, errors="replace") as stream:
        return '"metrics"' in stream.read(100_000)


def supernet_settings(spec: RunSpec) -> RunSpec:
    """A Mix'n'Match run's settings: the supernet's path made absolute (the study stores it),
    and the space the supernet records unless the run names one."""
    from tnas.workers.mixnmatch import supernet_space

    path = str(Path(spec.supernet).expanduser().resolve())
    changes = {"supernet": path}
    if "space" not in spec.model_fields_set:
        recorded = supernet_space(path)
        if not recorded:
            raise RunError(f"{spec.supernet}: the supernet records no space; pass --space")
        changes["space"] = recorded
    return spec.model_copy(update=changes)


def supernet_job(spec: RunSpec, space: DesignSpace, profile, cache):
    """The job of a Mix'n'Match run, once its supernet loads (into `cache`) and fits the task
    and the space."""
    from tnas.workers.mixnmatch import SupernetJob, check_space

    job = SupernetJob(task=spec.task, supernet=spec.supernet, profile=profile)
    supernet = job.load(cache)
    check_space(supernet.config, space, cache.task(spec.task))
    return job


def study_submodel(study: str, number: int, storage: str | None = None) -> tuple[str, ArchConfig]:
    """The supernet path and the submodel config (adapted to the task) of trial `number` of a
    study searched with `supernet=`, from the study's stored settings: what `tnas extract
    --study NAME --trial N` cuts out. A one-line `LookupError` if there is none."""
    from tnas.workers.tasks import parse_task

    def searched_with_a_supernet(run: dict) -> None:
        if not isinstance(run.get("supernet"), str):
            raise LookupError(
                f"study {study!r} was not searched with --supernet; "
                "use tnas extract --supernet CKPT --config SUB.json"
            )

    run, config = study_trial_config(study, number, storage, check=searched_with_a_supernet)
    try:
        config = parse_task(run["task"]).adapt(config)
    except SETTING_ERRORS as err:
        raise LookupError(f"trial {number} of study {study!r}: {one_line(err)}") from None
    return run["supernet"], config


def study_trial_config(
    study: str,
    number: int,
    storage: str | None = None,
    check: Callable[[dict], None] | None = None,
) -> tuple[dict, ArchConfig]:
    """The stored run settings (a dict of `RunSpec` fields: `task`, `steps`, `batch_size`,
    `lr`, `seed`, ...) of a study and the config of its trial `number`, as sampled: what
    `tnas train --study NAME --trial N` retrains. A one-line `LookupError` if there is none,
    or if `check(run)` raises it (called before the trial is looked up).

    >>> run, config = study_trial_config("notebook", 0, "sqlite:///demo.db")  # doctest: +SKIP
    >>> run["task"], config.short_hash                                       # doctest: +SKIP
    ('digits', '3f2a9c01d4e7')
    """
    from tnas.search.query import study_settings, study_trial

    db = open_database(storage, create=False)
    try:
        run = study_settings(db, study).run
        if not run:
            raise LookupError(f"study {study!r} has no stored run settings")
        if check is not None:
            check(run)
        trial = study_trial(db, study, number)
    finally:
        db.close()
    attrs = trial.user_attrs
    if "config" not in attrs:
        reason = attrs.get("reason") or trial.state.name.lower()
        raise LookupError(f"trial {number} of study {study!r} has no config ({reason})")
    try:
        config = ArchConfig.from_dict(attrs["config"])
    except SETTING_ERRORS as err:
        raise LookupError(f"trial {number} of study {study!r}: {one_line(err)}") from None
    return dict(run), config


__all__ = ["Plan", "RunError", "RunSpec", "SearchResult", "launch", "resume", "run_spec"]
