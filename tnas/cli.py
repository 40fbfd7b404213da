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
from tnas.search.query import FORMATS, TRIAL_STATES
from tnas.search.samplers import SAMPLERS
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
    from tnas.workers.train import Budget, TrialFailed, train_quantized

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
        result, metrics = train_quantized(loaded, task_object, budget)
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


FORMAT_HELP = f"table, {', '.join(FORMATS)}"
STATE_HELP = f"{', '.join(TRIAL_STATES)} (repeatable)"
SAMPLER_HELP = f"{', '.join(SAMPLERS)} [nsga2]"
STORAGE_HELP = "database URL or .db file (default: $TNAS_STORAGE, else sqlite:///tnas.db)"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def open_db(storage: str | None):
    from tnas.launch import open_database
    from tnas.search.db import StorageError

    try:
        return open_database(storage)
    except StorageError as err:
        raise fail(str(err)) from None


def run_search(start) -> None:
    """Run `start(progress)` (a `tnas.launch` call) under a rich progress bar, drawn once the
    search has started (a refused one prints its one line alone); print how it ended and the
    front."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tnas.search.db import StorageError
    from tnas.search.run import RunError

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    bar_task = []

    def update(progress) -> None:
        if not bar_task:  # the first call: the search has started
            if progress.requeued is not None:
                console.print(
                    f"resuming {progress.study}: {progress.requeued} orphaned trial(s) re-queued"
                )
            bar.start()
            bar_task.append(bar.add_task(progress.study, total=progress.total, status=""))
        bar.update(
            bar_task[0],
            completed=progress.finished,
            status=(
                f"failed {progress.failed}, running {progress.in_flight}, "
                f"front {progress.front_size}, HV {progress.hypervolume:.4g}"
            ),
        )

    try:
        result = start(update)
    except (RunError, StorageError) as err:
        raise fail(str(err)) from None
    finally:
        if bar_task:
            bar.stop()
    if result.interrupted:
        console.print(f"interrupted: resume with `tnas search resume {result.study}`")
        raise typer.Exit(code=130)
    console.print(f"{result.study}: {result.stopped}; front of {len(result.front)}")
    print_rows(result.front, f"Pareto front of {result.study}")


@search_app.command("launch")
def search_launch(
    run_file: str = typer.Argument(None, help="a YAML run file with the settings below"),
    space: str = typer.Option(None, help="YAML file or preset name [primer]"),
    task: str = typer.Option(None, help="task spec [digits]"),
    objective: list[str] = typer.Option(None, help="NAME:max|min, repeatable"),
    constraint: list[str] = typer.Option(None, help="e.g. 'params<=2e6', repeatable"),
    trials: int = typer.Option(None, help="evaluated trials in the study [40]"),
    workers: int = typer.Option(None, help="Ray workers; 0 runs trials in this process [2]"),
    sampler: str = typer.Option(None, help=SAMPLER_HELP),
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
    from tnas.launch import launch

    settings = {
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
    run_search(lambda progress: launch(run_file, progress=progress, **settings))


@search_app.command("resume")
def search_resume(
    study: str = typer.Argument(..., help="the study to continue"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
):
    """Continue a study whose driver died; orphaned trials are failed and re-queued."""
    from tnas.launch import resume

    study = study_arg(study)
    run_search(lambda progress: resume(study, storage=storage, progress=progress))


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


@app.command("studies")
def studies_command(storage: str = typer.Option(None, help=STORAGE_HELP)):
    """List studies with their trial counts and front sizes."""
    from tnas.search.query import list_studies

    print_rows(list_studies(open_db(storage)), "studies")


@app.command("trials")
def trials_command(
    study: str = typer.Argument(...),
    state: list[str] = typer.Option(None, help=STATE_HELP),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
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
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
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
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
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
    from tnas.nn.checkpoint import CheckpointError
    from tnas.workers.supernet import train_supernet_job, training_state_path
    from tnas.workers.train import Budget, TrialFailed

    output_arg(out, "--out")
    output_arg(str(training_state_path(out)), "--out's training state")
    try:
        budget = Budget(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device)
        report = train_supernet_job(
            space,
            task,
            budget,
            out,
            strategy=strategy,
            samples=samples,
            checkpoint_every=checkpoint_every or None,
            resume=resume,
            threads=cpus,
            ray=ray,
            address=ray_address,
        )
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
    from tnas.elastic import Submodel
    from tnas.elastic.extraction import extract_to
    from tnas.nn.checkpoint import CONFIG_FILE, MODEL_FILE

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
        from tnas.launch import study_submodel

        try:
            supernet, sub_config = study_submodel(study_arg(study), trial, storage)
        except (LookupError, *USER_ERRORS) as err:
            raise fail(str(err)) from None
        kept = None
        provenance = {"study": study, "trial": str(trial)}
    else:
        try:
            text = sys.stdin.readline() if config == "-" else Path(config).read_text()
            sub_config, kept = Submodel.parse(text)
        except (ConfigError, OSError) as err:
            raise fail(f"{config}: {err}") from None
    try:
        written = extract_to(supernet, sub_config, kept, out, **provenance)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(f"{out}: {err}") from None
    typer.echo(
        f"wrote {out}: {written.sub.config.short_hash}, {written.params:,} params, "
        f"supernet layers {list(written.sub.kept)} of {written.supernet.n_layers}"
    )


@app.command("demo")
def demo(
    space: str = typer.Option("primer", help="YAML file or preset name"),
    steps: int = typer.Option(150, help="training steps"),
    seed: int = typer.Option(0, help="random seed"),
    max_params: float = typer.Option(2e6, help="sample only configs with at most this many"),
):
    """Sample one small model from a space, summarise it, and train it on `textlm`."""
    from tnas.workers.demo import run_demo
    from tnas.workers.train import TrialFailed

    loaded = open_space(space)

    def sampled(config, described) -> None:
        console.print(f"[bold]sampled from {loaded.name}[/bold] ({config.short_hash}):")
        console.print_json(json.dumps(loaded.to_flat(config)))
        console.print(
            f"params {described.params:,}; forward FLOPs "
            f"{described.flops / 1e9:.3f} G per {described.seq_len} tokens"
        )

    try:
        result = run_demo(loaded, steps, seed, max_params, on_sampled=sampled).result
    except TrialFailed as err:
        typer.echo(f"error: trial failed: {err}", err=True)
        raise typer.Exit(code=1) from None
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    first = result.curve[0][1] / math.log(2)
    console.print(
        f"training bits/byte {first:.3f} -> validation bits/byte {result.metrics['bpb']:.3f} "
        f"after {len(result.curve)} steps ({result.metrics['seconds']:.1f} s)"
    )


if __name__ == "__main__":
    app()
