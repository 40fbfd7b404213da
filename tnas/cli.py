"""The `tnas` command line: parse, call the library, print.

Errors a user can cause (a broken YAML, an unknown mixer, a config that does not build) print
one line, `error: ...`, on stderr and exit with code 2. Torch is imported only by the commands
that build a network, so `tnas space ...` answers quickly.

Study names and the paths tnas writes (`--out`, `--plot`) pass `tnas.safety`'s checks first,
and no database password is printed: URLs are shown through `redact_url`. A crash prints its
traceback without local variables, which could hold a password.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from tnas.safety import UnsafeInput, output_path, redact_url, safe_name
from tnas.space import ArchConfig, ConfigError, DesignSpace, SpaceError, load_space, preset_names

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__.splitlines()[0],
    pretty_exceptions_show_locals=False,  # locals may hold a storage URL with its password
)
space_app = typer.Typer(no_args_is_help=True, help="Validate, show and sample design spaces.")
model_app = typer.Typer(no_args_is_help=True, help="Inspect the network a config builds.")
app.add_typer(space_app, name="space")
app.add_typer(model_app, name="model")
search_app = typer.Typer(no_args_is_help=True, help="Launch and resume architecture searches.")
app.add_typer(search_app, name="search")
predictors_app = typer.Typer(no_args_is_help=True, help="Learned stand-ins for evaluation.")
app.add_typer(predictors_app, name="predictors")

console = Console()
USER_ERRORS = (SpaceError, ConfigError, FileNotFoundError, ValueError)


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def study_arg(name: str) -> str:
    """A study name from the command line, checked by `tnas.safety.safe_name`."""
    try:
        return safe_name(name)
    except UnsafeInput as err:
        raise fail(str(err)) from None


def output_arg(path: str, what: str, inside: tuple[str, ...] = ()) -> Path:
    """A path the command will write, checked by `tnas.safety.output_path` before any work."""
    try:
        return output_path(path, what, inside)
    except UnsafeInput as err:
        raise fail(str(err)) from None


def open_space(spec: str) -> DesignSpace:
    try:
        return load_space(spec)
    except USER_ERRORS as err:
        raise fail(str(err)) from None


def read_config(path: str) -> ArchConfig:
    """A config from a JSON file, `-` for stdin (the first line of `tnas space sample`)."""
    try:
        text = sys.stdin.readline() if path == "-" else Path(path).read_text()
        return ArchConfig.from_json(text)
    except (ConfigError, OSError) as err:
        raise fail(f"{path}: {err}") from None


def size_text(space: DesignSpace) -> str:
    size = space.size()
    return f"{size:,}" if size < 10**15 else f"10^{space.log10_size():.1f}"


@space_app.command("validate")
def space_validate(space: str = typer.Argument(..., help="YAML file or preset name")):
    """Check a design space: schema, names, ranges and that its constraints can be met."""
    loaded = open_space(space)
    typer.echo(f"ok: {loaded.name}: {len(loaded.describe())} knobs, {size_text(loaded)} configs")


@space_app.command("presets")
def space_presets():
    """List the design spaces that ship with tnas."""
    table = Table("preset", "size", "paper")
    for name in preset_names():
        loaded = load_space(name)
        table.add_row(name, size_text(loaded), loaded.paper)
    console.print(table)


@space_app.command("show")
def space_show(
    space: str = typer.Argument(..., help="YAML file or preset name"),
    seed: int = typer.Option(0, help="seed for the example config"),
):
    """Show a space's knobs, its size, its constraints and one example config."""
    loaded = open_space(space)
    console.print(f"[bold]{loaded.name}[/bold]: {loaded.description}")
    if loaded.paper:
        console.print(f"follows: {loaded.paper}")
    table = Table("knob", "scope", "domain")
    for row in loaded.describe():
        table.add_row(*row)
    console.print(table)
    console.print(f"size: {size_text(loaded)} configs before constraints")
    for constraint in loaded.constraints:
        console.print(f"constraint: {constraint}")
    example = loaded.sample(np.random.default_rng(seed))
    console.print(f"example ({example.short_hash}):")
    console.print_json(json.dumps(loaded.to_flat(example)))


@space_app.command("sample")
def space_sample(
    space: str = typer.Argument(..., help="YAML file or preset name"),
    n: int = typer.Option(5, "-n", help="how many configs"),
    seed: int = typer.Option(0, help="random seed"),
):
    """Print `n` feasible configs as JSON lines (the canonical ArchConfig JSON)."""
    loaded = open_space(space)
    rng = np.random.default_rng(seed)
    try:
        for _ in range(n):
            typer.echo(loaded.sample(rng).to_json())
    except SpaceError as err:
        raise fail(str(err)) from None


@model_app.command("summary")
def model_summary(
    config: str = typer.Argument(..., help="config JSON file, or - for one JSON line on stdin"),
    seq_len: int = typer.Option(0, help="tokens per sequence for the FLOP count (0: max_seq_len)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Build a config's network; print its parameters and FLOPs, in total and per layer."""
    from tnas.nn import summary

    loaded = read_config(config)
    try:
        result = summary(loaded, seq_len=seq_len or None)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    table = Table("layer", "mixer", "heads", "ffn_dim", "activation", "bits", "params", "GFLOPs")
    for layer in result.layers:
        table.add_row(
            str(layer.index),
            layer.mixer,
            str(layer.n_heads or "-"),
            str(layer.ffn_dim),
            layer.activation,
            str(layer.bits),
            f"{layer.params:,}",
            f"{layer.flops / 1e9:.4f}",
        )
    console.print(table)
    console.print(
        f"config {loaded.short_hash}: d_model {loaded.d_model}, {loaded.n_layers} layers, "
        f"{loaded.norm}, head {loaded.head}"
    )
    console.print(
        f"params {result.params:,}; forward FLOPs {result.flops / 1e9:.4f} G "
        f"(batch {result.batch} x {result.seq_len} tokens, torch.utils.flop_counter)"
    )


def print_metrics(title: str, metrics: dict) -> None:
    table = Table("metric", "value", title=title)
    for name, value in metrics.items():
        text = f"{value:,}" if isinstance(value, int) else f"{value:.6g}"
        table.add_row(name, text)
    console.print(table)


@app.command("train")
def train_command(
    config: str = typer.Argument(..., help="config JSON file, or - for one JSON line on stdin"),
    task: str = typer.Option("digits", help="task spec: NAME[,key=value...] or module:Class"),
    steps: int = typer.Option(300, help="training steps"),
    batch_size: int = typer.Option(32, help="sequences per step"),
    lr: float = typer.Option(1e-3, help="peak learning rate (warmup, then cosine)"),
    max_seconds: float = typer.Option(0.0, help="wall-clock cap in seconds (0: none)"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Train one config on a task for a fixed step budget and report validation metrics
    (those of the model quantized to its layers' bits, the float ones as NAME_fp32)."""
    from tnas.workers.tasks import parse_task
    from tnas.workers.train import Budget, TrialFailed, evaluate_quantized, train

    loaded = read_config(config)
    try:
        budget = Budget(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            max_seconds=max_seconds or None,
        )
        task_object = parse_task(task)
        result = train(loaded, task_object, budget)
        metrics = evaluate_quantized(result, task_object, device)
    except TrialFailed as err:
        typer.echo(f"error: trial failed: {err}", err=True)
        raise typer.Exit(code=1) from None
    except USER_ERRORS as err:  # UnsupportedQuantization is a ValueError
        raise fail(str(err)) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "config_hash": result.config.hash,
                    "metrics": metrics,
                    "curve": result.curve,
                }
            )
        )
        return
    print_metrics(f"{task_object.spec}: config {result.config.short_hash}", metrics)
    first, last = result.curve[0][1], result.curve[-1][1]
    console.print(f"training loss {first:.4f} -> {last:.4f} over {len(result.curve)} steps")


@app.command("profile")
def profile_command(
    config: str = typer.Argument(..., help="config JSON file, or - for one JSON line on stdin"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    batch: int = typer.Option(1, help="sequences per forward"),
    seq: int = typer.Option(128, help="tokens per sequence"),
    repeats: int = typer.Option(30, help="timed repetitions"),
    threads: int = typer.Option(0, help="torch threads (0: torch's default)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Measure inference latency with each layer's bits applied through real kernels."""
    from tnas.nn.quant import UnsupportedQuantization
    from tnas.workers.profile import profile

    loaded = read_config(config)
    try:
        result = profile(
            loaded,
            device=device,
            batch=batch,
            seq_len=seq,
            repeats=repeats,
            threads=threads or None,
        )
    except (UnsupportedQuantization, *USER_ERRORS) as err:
        raise fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    fingerprint = result.pop("fingerprint")
    print_metrics(
        f"config {loaded.short_hash} on {device}, batch {batch} x {result['seq_len']} tokens",
        {
            k: v
            for k, v in result.items()
            if isinstance(v, int | float) and k not in ("batch", "seq_len")
        },
    )
    console.print(f"bits per layer: {result['bits']}")
    console.print(f"device: {json.dumps(fingerprint)}")


STORAGE_HELP = "database URL or .db file (default: $TNAS_STORAGE, else sqlite:///tnas.db)"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def open_db(storage: str | None):
    from tnas.search.db import Database, StorageError

    try:
        return Database(storage)
    except StorageError as err:
        raise fail(str(err)) from None


def build_evaluator(spec, space):
    """The evaluator a run names, and the metric names it reports (nothing started yet)."""
    from tnas.workers.backend import ProfileSettings, TrialJob, reported_metrics
    from tnas.workers.replay import parse_replay

    replay_spec = spec.evaluator
    if not replay_spec and spec.pool and '"metrics"' in Path(spec.pool).read_text()[:100_000]:
        replay_spec = f"replay:{spec.pool}"  # a pool in the replay format is its own evaluator
    if replay_spec and spec.supernet:
        raise ValueError(f"--supernet evaluates configs itself; it cannot go with {replay_spec}")
    if replay_spec:
        replay = parse_replay(replay_spec, space, slots=max(1, spec.workers), seed=spec.seed)
        names = {name for row in replay.rows.values() for name in row["metrics"]}
        return (lambda: replay), names
    from tnas.workers.train import Budget

    profile = ProfileSettings(
        batch=spec.profile_batch, seq_len=spec.profile_seq_len, repeats=spec.profile_repeats
    )
    supernets = None
    if spec.supernet:
        job, supernets = supernet_job(spec, space, profile)
        if spec.workers:
            supernets = None  # each actor loads its own; the driver need not hold one
    else:
        job = TrialJob(
            task=spec.task,
            budget=Budget(steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed),
            profile=profile,
        )

    def start():
        from tnas.workers.backend import InlineEvaluator
        from tnas.workers.pool import RayPool

        if spec.workers == 0:
            return InlineEvaluator(job, supernets)
        return RayPool(
            job, workers=spec.workers, address=spec.ray_address, trial_timeout=spec.trial_timeout
        )

    return start, reported_metrics(job)


def supernet_spec(spec):
    """A Mix'n'Match run's settings: the supernet's path made absolute (the study stores it),
    and the space the supernet records unless the run names one."""
    from tnas.workers.mixnmatch import supernet_space

    path = str(Path(spec.supernet).expanduser().resolve())
    changes = {"supernet": path}
    if "space" not in spec.model_fields_set:
        recorded = supernet_space(path)
        if not recorded:
            raise ValueError(f"{spec.supernet}: the supernet records no space; pass --space")
        changes["space"] = recorded
    return spec.model_copy(update=changes)


def supernet_job(spec, space, profile):
    """The job of a Mix'n'Match run, once the supernet loads and fits the task and the space,
    and the `SupernetCache` holding it."""
    from tnas.workers.mixnmatch import SupernetCache, SupernetJob, check_space
    from tnas.workers.tasks import parse_task

    supernets = SupernetCache()
    supernet = supernets.get(spec.supernet)
    check_space(supernet.config, space, parse_task(spec.task))
    return SupernetJob(task=spec.task, supernet=spec.supernet, profile=profile), supernets


def run_search(spec, resume: bool = False) -> None:
    """Validate everything, then open the database and the evaluator, and drive the search."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tnas.search import run as runs
    from tnas.search.db import StorageError

    try:
        if spec.supernet:
            spec = supernet_spec(spec)
        space = runs.load_run_space(spec)
        pool = runs.read_pool(spec.pool, space) if spec.pool else None
        start_evaluator, metric_names = build_evaluator(spec, space)
        constraints = runs.check_run(spec, space, metric_names)
    except (*USER_ERRORS, OSError) as err:  # OSError: a pool or table that cannot be read
        raise fail(" ".join(str(err).split())) from None
    db = open_db(spec.storage)
    try:
        study = runs.open_study(spec, db, space)
        if resume:
            orphans = runs.requeue_orphans(study, space)
            console.print(f"resuming {spec.study_name}: {orphans} orphaned trial(s) re-queued")
    except (runs.RunError, StorageError) as err:
        raise fail(redact_url(str(err))) from None
    evaluator = start_evaluator()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console) as bar:
        task_id = bar.add_task(spec.study_name, total=spec.trials, status="starting")

        def update(progress) -> None:
            bar.update(
                task_id,
                completed=progress.finished,
                status=(
                    f"failed {progress.failed}, running {progress.in_flight}, "
                    f"front {progress.front_size}, HV {progress.hypervolume:.4g}"
                ),
            )

        driver = runs.make_driver(spec, study, space, evaluator, db, constraints, pool, update)
        try:
            progress = driver.run()
        except StorageError as err:  # every earlier write is kept: `tnas search resume` goes on
            raise fail(redact_url(str(err))) from None
        finally:
            evaluator.close()
    if progress.stopped == "interrupted":
        console.print(f"interrupted: resume with `tnas search resume {spec.study_name}`")
        raise typer.Exit(code=130)
    console.print(f"{spec.study_name}: {progress.stopped}; front of {progress.front_size}")
    show_pareto(db, spec.study_name)


@search_app.command("launch")
def search_launch(
    run_file: str = typer.Argument(None, help="a YAML run file with the settings below"),
    space: str = typer.Option(None, help="YAML file or preset name [primer]"),
    task: str = typer.Option(None, help="task spec [digits]"),
    objective: list[str] = typer.Option(None, help="NAME:max|min, repeatable"),
    constraint: list[str] = typer.Option(None, help="e.g. 'params<=2e6', repeatable"),
    trials: int = typer.Option(None, help="evaluated trials in the study [40]"),
    workers: int = typer.Option(None, help="Ray workers; 0 runs trials in this process [2]"),
    sampler: str = typer.Option(None, help="nsga2, nsga3, tpe, gp, random or linas [nsga2]"),
    seed: int = typer.Option(None, help="seed of the sampler and of training [0]"),
    study: str = typer.Option(None, help="study name [SPACE-TASK-SAMPLER-sSEED]"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    pool: str = typer.Option(None, help="JSONL file of candidate configs"),
    evaluator: str = typer.Option(None, help="replay:TABLE answers from a recorded table"),
    timeout: float = typer.Option(None, help="seconds for the whole search"),
    ray_address: str = typer.Option(None, help="join this Ray cluster instead of a local Ray"),
    steps: int = typer.Option(None, help="training steps per trial [300]"),
    trial_timeout: float = typer.Option(None, help="seconds per trial before it is killed"),
    supernet: str = typer.Option(
        None,
        help="Mix'n'Match: evaluate each config as a submodel of this supernet checkpoint, "
        "untrained (--steps does not apply); the space defaults to the supernet's",
    ),
):
    """Run a multi-objective architecture search; every trial and front goes to the database."""
    from tnas.search.run import RunError, RunSpec

    options = {
        "space": space,
        "task": task,
        "objectives": objective or None,
        "constraints": constraint or None,
        "trials": trials,
        "workers": workers,
        "sampler": sampler,
        "seed": seed,
        "study": study,
        "storage": storage,
        "pool": pool,
        "evaluator": evaluator,
        "timeout": timeout,
        "ray_address": ray_address,
        "steps": steps,
        "trial_timeout": trial_timeout,
        "supernet": supernet,
    }
    try:
        if run_file:
            spec = RunSpec.from_yaml(run_file, **options)
        else:
            spec = RunSpec.build({k: v for k, v in options.items() if v is not None})
    except RunError as err:
        raise fail(str(err)) from None
    run_search(spec)


@search_app.command("resume")
def search_resume(
    study: str = typer.Argument(..., help="the study to continue"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
):
    """Continue a study whose driver died; orphaned trials are failed and re-queued."""
    from tnas.search.run import RunError, RunSpec

    study = study_arg(study)
    db = open_db(storage)
    try:
        run = load_study_attrs(db, study).get("run")
        if not isinstance(run, dict):
            raise LookupError(f"study {study!r} has no stored run settings")
        spec = RunSpec.build(run | {"storage": db.url, "study": study})
    except (LookupError, RunError) as err:
        raise fail(str(err)) from None
    run_search(spec, resume=True)


def load_study_attrs(db, name: str) -> dict:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=db.optuna_storage())
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(db.optuna_storage())]
        raise LookupError(
            f"no study {name!r} in {redact_url(db.url)}; studies: {', '.join(names) or 'none'}"
        ) from None
    if not isinstance(study.user_attrs.get("tnas"), dict):
        raise LookupError(f"study {name!r} was not made by tnas search")
    return study.user_attrs["tnas"]


def cell(column: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if column == "config_hash" and isinstance(value, str):
        return value[:12]
    return str(value)


def print_rows(rows: list[dict], title: str) -> None:
    if not rows:
        console.print(f"{title}: nothing yet")
        return
    columns = [k for k in rows[0] if not isinstance(rows[0][k], dict | list)]
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(cell(c, row[c]) for c in columns))
    console.print(table)


def emit(rows: list[dict], fmt: str, title: str) -> None:
    """Rows as a rich table, or as JSON or CSV on stdout."""
    from tnas.search.query import write_rows

    if fmt == "table":
        print_rows(rows, title)
        return
    try:
        write_rows(rows, fmt, sys.stdout)
    except ValueError as err:
        raise fail(str(err)) from None


def show_pareto(db, study: str) -> None:
    from tnas.search.query import pareto_rows

    print_rows(pareto_rows(db, study), f"Pareto front of {study}")


@app.command("studies")
def studies_command(storage: str = typer.Option(None, help=STORAGE_HELP)):
    """List studies with their trial counts and front sizes."""
    from tnas.search.query import list_studies

    print_rows(list_studies(open_db(storage)), "studies")


@app.command("trials")
def trials_command(
    study: str = typer.Argument(...),
    state: list[str] = typer.Option(None, help="COMPLETE, FAIL, RUNNING, ... (repeatable)"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
):
    """List a study's trials."""
    from tnas.search.query import list_trials

    study = study_arg(study)
    try:
        rows = list_trials(open_db(storage), study, states=state or None)
    except LookupError as err:
        raise fail(str(err)) from None
    emit(rows, fmt, f"trials of {study}")


@app.command("pareto")
def pareto_command(
    study: list[str] = typer.Argument(..., help="one study, or several to overlay in --plot"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
    history: bool = typer.Option(False, help="the front's snapshots over time"),
    plot: str = typer.Option(None, help="write a scatter to FILE.png or FILE.html"),
):
    """Show the latest Pareto front of a study (from its stored snapshot)."""
    from tnas.search.query import front_history, pareto_rows

    study = [study_arg(name) for name in study]
    if plot:
        output_arg(plot, "--plot")
    db = open_db(storage)
    try:
        if plot:
            from tnas.search.plots import plot_fronts

            plot_fronts(db, study, plot)
            console.print(f"wrote {plot}")
            return
        name = study[0]
        rows = front_history(db, name) if history else pareto_rows(db, name)
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from None
    emit(rows, fmt, f"{'front history' if history else 'Pareto front'} of {name}")


@app.command("dashboard")
def dashboard_command(
    storage: str = typer.Option(None, help=STORAGE_HELP),
    host: str = typer.Option(
        "127.0.0.1", help="address to listen on; 0.0.0.0 opens it to every network"
    ),
    port: int = typer.Option(8080, help="port to listen on"),
):
    """Start optuna-dashboard over the study database, on 127.0.0.1 unless --host says
    otherwise."""
    import os

    from tnas.search.query import dashboard_command as argv_for

    db = open_db(storage)
    try:
        argv = argv_for(db.url, host=host, port=port)
    except ValueError as err:
        raise fail(str(err)) from None
    console.print(f"optuna-dashboard on http://{host}:{port} ({redact_url(db.url)})")
    if host not in LOOPBACK_HOSTS:
        console.print(f"note: {host} is reachable from other machines; the dashboard has no login")
    os.execvp(argv[0], argv)


@predictors_app.command("calibrate")
def predictors_calibrate(
    space: str = typer.Option("simq", help="YAML file or preset name"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    budget: int = typer.Option(200, help="at most this many measurements"),
    batch: int = typer.Option(1, help="sequences per forward"),
    seq: int = typer.Option(128, help="tokens per sequence"),
    seed: int = typer.Option(0, help="seed for the sampled configs"),
    out: str = typer.Option("latency.json", help="where to write the table (JSON)"),
):
    """Measure a per-block latency table for a space on this device."""
    from tnas.nn.quant import UnsupportedQuantization
    from tnas.workers.calibrate import calibrate

    output_arg(out, "--out")
    loaded = open_space(space)
    try:
        table = calibrate(loaded, device=device, budget=budget, batch=batch, seq_len=seq, seed=seed)
    except (UnsupportedQuantization, *USER_ERRORS) as err:
        raise fail(str(err)) from None
    table.save(out)
    console.print(
        f"wrote {out}: {len(table.entries)} blocks, {len(table.full_models)} whole models, "
        f"{table.measurements} measurements on device {table.device_id}"
    )


@predictors_app.command("report")
def predictors_report(
    study: str = typer.Argument(..., help="a study searched with --sampler linas"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
):
    """Predictor quality per round: Kendall tau, Spearman and MAPE on held-out trials."""
    from tnas.search.query import predictor_report

    study = study_arg(study)
    try:
        rows = predictor_report(open_db(storage), study)
    except LookupError as err:
        raise fail(str(err)) from None
    if not rows and fmt == "table":
        console.print(f"{study}: no predictor rounds (only the linas sampler fits predictors)")
        return
    if fmt == "table":  # narrow enough for a terminal; json and csv keep the timestamps
        rows = [{k: v for k, v in row.items() if k != "created_at"} for row in rows]
    emit(rows, fmt, f"predictor quality of {study}")


def study_submodel(storage: str | None, name: str, number: int) -> tuple[str, ArchConfig]:
    """The supernet path and the submodel config (adapted to the task) of trial `number` of a
    study searched with `--supernet`, from the study's stored run settings."""
    import optuna

    from tnas.workers.tasks import parse_task

    db = open_db(storage)
    try:
        run = load_study_attrs(db, name).get("run", {})
    except LookupError as err:
        raise fail(str(err)) from None
    if not isinstance(run, dict) or not isinstance(run.get("supernet"), str):
        raise fail(
            f"study {name!r} was not searched with --supernet; "
            "use tnas extract --supernet CKPT --config SUB.json"
        )
    trials = optuna.load_study(study_name=name, storage=db.optuna_storage()).get_trials(
        deepcopy=False
    )
    found = [t for t in trials if t.number == number]
    if not found:
        span = f"trials 0..{len(trials) - 1}" if trials else "no trials"
        raise fail(f"study {name!r} has no trial {number} ({span})")
    attrs = found[0].user_attrs
    if "config" not in attrs:
        reason = attrs.get("reason") or found[0].state.name.lower()
        raise fail(f"trial {number} of study {name!r} has no config ({reason})")
    try:
        config = parse_task(run["task"]).adapt(ArchConfig.from_dict(attrs["config"]))
    except USER_ERRORS as err:
        raise fail(f"trial {number} of study {name!r}: {err}") from None
    return run["supernet"], config


supernet_app = typer.Typer(no_args_is_help=True, help="MatFormer supernets.")
app.add_typer(supernet_app, name="supernet")


@supernet_app.command("train")
def supernet_train(
    space: str = typer.Option("matformer", help="YAML file or preset name; its configs nest"),
    task: str = typer.Option("textlm", help="task spec: NAME[,key=value...]"),
    out: str = typer.Option("supernet.safetensors", help="the supernet checkpoint to write"),
    steps: int = typer.Option(300, help="joint training steps"),
    batch_size: int = typer.Option(16, help="sequences per step"),
    lr: float = typer.Option(1e-3, help="peak learning rate (warmup, then cosine)"),
    seed: int = typer.Option(0, help="random seed"),
    strategy: str = typer.Option("sandwich", help="sandwich or all"),
    samples: int = typer.Option(2, help="random Mix'n'Match submodels per step (sandwich)"),
    checkpoint_every: int = typer.Option(0, help="steps between checkpoints (0: at the end)"),
    resume: bool = typer.Option(False, help="go on from OUT and OUT's .train.safetensors"),
    ray: bool = typer.Option(False, "--ray", help="run as one Ray task (local, or --ray-address)"),
    ray_address: str = typer.Option(None, help="join this Ray cluster"),
    cpus: int = typer.Option(1, help="CPUs (torch threads) the training uses"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
):
    """Train a supernet jointly (MatFormer); `tnas extract` then cuts submodels out of it."""
    import torch

    from tnas.elastic.train import run_training, train_supernet_on_ray, training_state_path
    from tnas.nn.checkpoint import CheckpointError
    from tnas.workers.train import Budget, TrialFailed

    output_arg(out, "--out")
    output_arg(str(training_state_path(out)), "--out's training state")
    try:
        budget = Budget(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device)
        every = checkpoint_every or None
        if ray or ray_address:
            report = train_supernet_on_ray(
                space, task, budget, checkpoint=out, strategy=strategy, samples=samples,
                checkpoint_every=every, resume=resume, num_cpus=cpus, address=ray_address,
            )  # fmt: skip
        else:
            torch.set_num_threads(cpus)
            report = run_training(space, task, budget, out, strategy, samples, every, resume, cpus)
            if report["status"] != "ok":
                raise TrialFailed(report["reason"], report["message"])
    except TrialFailed as err:
        typer.echo(f"error: supernet training failed: {err}", err=True)
        raise typer.Exit(code=1) from None
    except (CheckpointError, *USER_ERRORS) as err:
        raise fail(str(err)) from None
    metrics = report["metrics"]
    console.print(
        f"wrote {out}: step {report['step']} (from {report['start_step']}), largest submodel "
        f"loss {metrics['largest_loss']:.4f}, smallest {metrics['smallest_loss']:.4f}"
    )


@app.command("extract")
def extract_command(
    out: str = typer.Option(..., help="directory for model.safetensors and config.json"),
    supernet: str = typer.Option(None, help="supernet checkpoint (.safetensors)"),
    config: str = typer.Option(
        None, help='submodel JSON: an ArchConfig, or {"config": ..., "kept": [...]}; - for stdin'
    ),
    study: str = typer.Option(None, help="a study searched with --supernet (with --trial)"),
    trial: int = typer.Option(None, help="the number of the trial of --study to extract"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
):
    """Cut a submodel out of a MatFormer supernet as a standalone model (`tnas.load_model`):
    `--supernet CKPT --config SUB.json`, or `--study NAME --trial N` for a trial of a
    Mix'n'Match search (its config, its study's supernet)."""
    from tnas.elastic import Submodel, extract, load_supernet
    from tnas.nn.checkpoint import CONFIG_FILE, MODEL_FILE, save_model

    output_arg(out, "--out", inside=(MODEL_FILE, CONFIG_FILE))
    by_file = supernet is not None or config is not None
    by_study = study is not None or trial is not None
    if by_file == by_study:
        raise fail("give either --supernet CKPT --config SUB.json, or --study NAME --trial N")
    if by_file and (supernet is None or config is None):
        raise fail("--supernet and --config go together")
    if by_study and (study is None or trial is None):
        raise fail("--study and --trial go together")
    provenance = {}
    if by_study:
        supernet, sub_config = study_submodel(storage, study_arg(study), trial)
        kept = None
        provenance = {"study": study, "trial": str(trial)}
    else:
        try:
            text = sys.stdin.readline() if config == "-" else Path(config).read_text()
            sub_config, kept = Submodel.parse(text)
        except (ConfigError, OSError) as err:
            raise fail(f"{config}: {err}") from None
    try:
        loaded = load_supernet(supernet)
        sub = loaded.resolve(sub_config, kept)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    model = extract(loaded, sub)
    provenance |= {"supernet": loaded.config.hash, "kept": ",".join(map(str, sub.kept))}
    try:
        save_model(model, out, **provenance)
    except OSError as err:
        raise fail(f"{out}: {err}") from None
    params = sum(p.numel() for p in model.parameters())
    typer.echo(
        f"wrote {out}: {sub.config.short_hash}, {params:,} params, "
        f"supernet layers {list(sub.kept)} of {loaded.config.n_layers}"
    )


@app.command("demo")
def demo(
    space: str = typer.Option("primer", help="YAML file or preset name"),
    steps: int = typer.Option(150, help="training steps"),
    seed: int = typer.Option(0, help="random seed"),
    max_params: float = typer.Option(2e6, help="sample only configs with at most this many"),
):
    """Sample one small model from a space, summarise it, and train it on `textlm`."""
    from tnas.nn import summary
    from tnas.workers.demo import sample_small
    from tnas.workers.tasks import create_task
    from tnas.workers.train import Budget, TrialFailed, train

    loaded = open_space(space)
    try:
        config = sample_small(loaded, seed, max_params)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    console.print(f"[bold]sampled from {loaded.name}[/bold] ({config.short_hash}):")
    console.print_json(json.dumps(loaded.to_flat(config)))
    task = create_task("textlm")
    result_summary = summary(task.adapt(config))
    console.print(
        f"params {result_summary.params:,}; forward FLOPs "
        f"{result_summary.flops / 1e9:.3f} G per {result_summary.seq_len} tokens"
    )
    try:
        result = train(config, task, Budget(steps=steps, batch_size=8, lr=3e-3, seed=seed))
    except TrialFailed as err:
        typer.echo(f"error: trial failed: {err}", err=True)
        raise typer.Exit(code=1) from None
    first = result.curve[0][1] / math.log(2)
    console.print(
        f"training bits/byte {first:.3f} -> validation bits/byte {result.metrics['bpb']:.3f} "
        f"after {len(result.curve)} steps ({result.metrics['seconds']:.1f} s)"
    )


if __name__ == "__main__":
    app()
