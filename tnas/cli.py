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
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tnas.safety import UnsafeInput, output_path, redact_url, safe_name
from tnas.search.query import FORMATS, TRIAL_STATES
from tnas.search.samplers import SAMPLERS
from tnas.space import ArchConfig, ConfigError, DesignSpace, SpaceError, load_space, preset_names
from tnas.space.errors import one_line, shown

# Help texts give a None default as "[40]", "[primer]"; Rich markup would take "[primer]" for a
# style and drop it, Markdown prints it (and reflows docstrings). Every Typer below uses it.
MARKUP = "markdown"
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__.splitlines()[0],
    rich_markup_mode=MARKUP,
    pretty_exceptions_show_locals=False,  # locals may hold a storage URL with its password
)
space_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=MARKUP, help="Validate, show and sample design spaces."
)
model_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=MARKUP, help="Inspect the network a config builds."
)
app.add_typer(space_app, name="space")
app.add_typer(model_app, name="model")
search_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=MARKUP, help="Launch and resume architecture searches."
)
app.add_typer(search_app, name="search")
predictors_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=MARKUP, help="Learned stand-ins for evaluation."
)
app.add_typer(predictors_app, name="predictors")
study_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=MARKUP,
    help="Delete, rename, copy and export studies, tnas's fronts and records with them.",
)
app.add_typer(study_app, name="study")


def print_version(value: bool) -> None:
    """`--version`: print `tnas X.Y.Z` (the installed distribution's version) and exit."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("tnas")
    except PackageNotFoundError:  # run from a checkout that was never installed
        installed = "unknown (not installed)"
    typer.echo(f"tnas {installed}")
    raise typer.Exit()


@app.callback()
def main(
    show_version: bool = typer.Option(
        False, "--version", callback=print_version, is_eager=True, help="print the version and exit"
    ),
):
    """Options taken before any command (`tnas --version`)."""


console = Console()
MAX_INT = 2**31 - 1  # the largest seed or count an option takes (as a run setting's)
USER_ERRORS = (SpaceError, ConfigError, FileNotFoundError, ValueError)


def fail(message: str) -> typer.Exit:
    """Print `error: MESSAGE` on stderr, on one line whatever the message holds (a file name
    with a newline, an exception's multi-line text), and return the exit (code 2) to raise."""
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(code=2)


def study_arg(name: str) -> str:
    """A study name from the command line, checked by `tnas.safety.safe_name`."""
    try:
        return safe_name(name)
    except UnsafeInput as err:
        raise fail(str(err)) from None


def output_arg(path: str, what: str, inside: tuple[str, ...] = (), new_dirs: bool = True) -> Path:
    """A path the command will write, checked by `tnas.safety.output_path` before any work
    (`new_dirs=False` where the writer does not create missing directories)."""
    try:
        return output_path(path, what, inside, new_dirs=new_dirs)
    except UnsafeInput as err:
        raise fail(str(err)) from None


def int_arg(value: int, what: str, least: int = 0, most: int = MAX_INT) -> int:
    """An integer option (a seed, a count) checked against its range before any work.

    >>> int_arg(3, "-n")
    3
    """
    if not least <= value <= most:
        raise fail(f"{what} must be from {least:,} to {most:,}, got {shown(value)}")
    return value


def open_space(spec: str) -> DesignSpace:
    try:
        return load_space(spec)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    except OSError as err:  # a name too long for a file, a directory, a file it cannot read
        raise fail(f"{shown(spec)}: {err.strerror or err}") from None


def read_config(path: str) -> ArchConfig:
    """A config from a JSON file, `-` for stdin (the first line of `tnas space sample`)."""
    try:
        text = sys.stdin.readline() if path == "-" else Path(path).read_text()
        return ArchConfig.from_json(text)
    except (ConfigError, OSError, ValueError) as err:  # ValueError: not UTF-8 text
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
    int_arg(seed, "--seed")
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
    int_arg(n, "-n")
    int_arg(seed, "--seed")
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
    int_arg(seq_len, "--seq-len", 0, loaded.max_seq_len)  # before a (1, seq_len) input is made
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
    config: str = typer.Argument(
        None, help="config JSON file, or - for one JSON line on stdin (or --study/--trial)"
    ),
    task: str = typer.Option(
        None, help="task spec: NAME[,key=value...] or module:Class [digits, or the study's]"
    ),
    steps: int = typer.Option(None, help="training steps [300, or the study's]"),
    batch_size: int = typer.Option(None, help="sequences per step [32, or the study's]"),
    lr: float = typer.Option(
        None, help="peak learning rate, warmup then cosine [1e-3, or the study's]"
    ),
    max_seconds: float = typer.Option(0.0, help="wall-clock cap in seconds (0: none)"),
    seed: int = typer.Option(None, help="random seed [0, or the study's]"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    threads: int = typer.Option(None, help="torch threads [this process's cores]"),
    out: str = typer.Option(
        None, help="save the model here: model.safetensors, config.json [not saved]"
    ),
    study: str = typer.Option(None, help="retrain a trial of this study (with --trial) [none]"),
    trial: int = typer.Option(None, help="the number of the trial of --study to retrain [none]"),
    storage: str = typer.Option(
        None, help="the study's database URL or .db file [$TNAS_STORAGE, else sqlite:///tnas.db]"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Train one config on a task for a fixed step budget and report validation metrics
    (those of the model quantized to its layers' bits, the float ones as NAME_fp32).
    `--study NAME --trial N` retrains a trial with its study's task, batch size, learning rate,
    seed and steps (options given override them); `--out DIR` saves the trained model for
    `tnas.load_model`."""
    from tnas.nn.checkpoint import CONFIG_FILE, MODEL_FILE
    from tnas.workers.profile import check_device
    from tnas.workers.tasks import parse_task
    from tnas.workers.train import (
        Budget,
        TrialFailed,
        default_threads,
        save_trained,
        train_quantized,
    )

    by_study = study is not None or trial is not None
    if config is None and not by_study:
        raise fail("give a CONFIG file, or --study NAME --trial N")
    if config is not None and by_study:
        raise fail("give either a CONFIG file or --study NAME --trial N, not both")
    if by_study and (study is None or trial is None):
        raise fail("--study and --trial go together")
    for value, what, least in (
        (seed, "--seed", 0),
        (trial, "--trial", 0),
        (steps, "--steps", 1),
        (batch_size, "--batch-size", 1),
        (threads, "--threads", 1),
    ):
        if value is not None:
            int_arg(value, what, least)
    try:
        check_device(device)
    except ValueError as err:
        raise fail(str(err)) from None
    if out is not None:
        output_arg(out, "--out", inside=(MODEL_FILE, CONFIG_FILE))
    stored: dict = {}
    provenance: dict[str, str] = {}
    if by_study:
        from tnas.launch import study_trial_config

        try:
            stored, loaded = study_trial_config(study_arg(study), trial, storage)
        except (LookupError, *USER_ERRORS) as err:  # StorageError is a ValueError
            raise fail(str(err)) from None
        provenance = {"study": study, "trial": str(trial)}
    else:
        loaded = read_config(config)
    defaults = Budget().to_dict() | {"task": "digits"}
    given = {"task": task, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    chosen = {
        name: value if value is not None else stored.get(name, defaults[name])
        for name, value in given.items()
    }
    try:
        budget = Budget(
            steps=chosen["steps"],
            batch_size=chosen["batch_size"],
            lr=chosen["lr"],
            seed=chosen["seed"],
            device=device,
            max_seconds=max_seconds or None,
            threads=threads if threads is not None else default_threads(1),
        )
        task_object = parse_task(chosen["task"])
        result, metrics = train_quantized(loaded, task_object, budget)
    except TrialFailed as err:
        typer.echo(f"error: trial failed: {err}", err=True)
        raise typer.Exit(code=1) from None
    except USER_ERRORS as err:  # UnsupportedQuantization is a ValueError
        raise fail(str(err)) from None
    if out is not None:
        try:
            save_trained(result, out, task=task_object.spec, steps=budget.steps, **provenance)
        except OSError as err:
            raise fail(f"{out}: {err}") from None
    if as_json:
        report = {"config_hash": result.config.hash, "metrics": metrics, "curve": result.curve}
        typer.echo(json.dumps(report | ({"out": out} if out is not None else {})))
        return
    print_metrics(f"{task_object.spec}: config {result.config.short_hash}", metrics)
    first, last = result.curve[0][1], result.curve[-1][1]
    console.print(f"training loss {first:.4f} -> {last:.4f} over {len(result.curve)} steps")
    if out is not None:
        console.print(f"wrote {out}: {MODEL_FILE} and {CONFIG_FILE} (tnas.load_model reads it)")


@app.command("profile")
def profile_command(
    config: str = typer.Argument(..., help="config JSON file, or - for one JSON line on stdin"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    batch: int = typer.Option(None, help="sequences per forward [1, as a search]"),
    seq: int = typer.Option(
        None, help="tokens per sequence [128 or the config's max_seq_len, as a search]"
    ),
    repeats: int = typer.Option(None, help="timed repetitions [20, as a search]"),
    warmup: int = typer.Option(None, help="untimed forwards before timing [3, as a search]"),
    threads: int = typer.Option(None, help="torch threads while timing [1, as a search]"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Measure inference latency with each layer's bits applied through real kernels, by
    default with a search's protocol (`ProfileSettings`), so the numbers compare with a
    study's `latency_ms`."""
    from tnas.nn.quant import UnsupportedQuantization
    from tnas.workers.backend import ProfileSettings
    from tnas.workers.profile import check_device, profile

    protocol = ProfileSettings()  # a search's defaults: one source for both
    try:
        check_device(device)
    except ValueError as err:
        raise fail(str(err)) from None
    loaded = read_config(config)
    try:
        result = profile(
            loaded,
            device=device,
            batch=protocol.batch if batch is None else batch,
            seq_len=min(protocol.seq_len, loaded.max_seq_len) if seq is None else seq,
            repeats=protocol.repeats if repeats is None else repeats,
            warmup=protocol.warmup if warmup is None else warmup,
            threads=protocol.threads if threads is None else threads,
        )
    except (UnsupportedQuantization, *USER_ERRORS) as err:
        raise fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    fingerprint = result.pop("fingerprint")
    print_metrics(
        f"config {loaded.short_hash} on {device}, batch {result['batch']} x "
        f"{result['seq_len']} tokens",
        {
            k: v
            for k, v in result.items()
            if isinstance(v, int | float) and k not in ("batch", "seq_len")
        },
    )
    console.print(f"bits per layer: {result['bits']}")
    console.print(f"device: {json.dumps(fingerprint)}")


FORMAT_HELP = f"table, {', '.join(FORMATS)}"
STATE_HELP = f"{', '.join(TRIAL_STATES)} (repeatable) [all]"
SAMPLER_HELP = f"{', '.join(SAMPLERS)} [nsga2]"
STORAGE_HELP = "database URL or .db file (default: $TNAS_STORAGE, else sqlite:///tnas.db)"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def open_db(storage: str | None, create: bool = True):
    """The study database, or one `error:` line. Commands that only read pass `create=False`:
    a missing SQLite file is then an error (`no database at PATH`), never created."""
    from tnas.launch import open_database
    from tnas.search.db import StorageError

    try:
        return open_database(storage, create=create)
    except StorageError as err:
        raise fail(str(err)) from None


def run_search(start) -> None:
    """Run `start(progress)` (a `tnas.launch` call) under a rich progress bar, drawn once the
    search has started (a refused one prints its one line alone); print how it ended and the
    front. The bar shows the time elapsed and an estimate of the time left (`ETA`), from the
    rate at which trials finish in this run. On a narrow terminal the figures after them are
    cut short (...), never the counts and times."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column
    from rich.text import Text

    from tnas.search.db import StorageError
    from tnas.search.run import RunError

    class StatusColumn(ProgressColumn):
        """The only column that gives up width: one line, ending in an ellipsis if it must."""

        def render(self, task) -> Text:
            return Text(task.fields["status"], no_wrap=True, overflow="ellipsis")

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20, table_column=Column(no_wrap=True)),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        StatusColumn(),
        console=console,
    )
    bar_task = []

    def update(progress) -> None:
        if not bar_task:  # the first call: the search has started
            if progress.requeued is not None:
                console.print(
                    f"resuming {progress.study}: {progress.requeued} cut-short trial(s) re-queued"
                )
            bar.start()
            bar_task.append(  # earlier trials of a resumed study do not count toward the rate
                bar.add_task(
                    progress.study, total=progress.total, completed=progress.finished, status=""
                )
            )
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
    objective: list[str] = typer.Option(
        None, help="NAME:max|min, repeatable [accuracy:max latency_ms:min]"
    ),
    constraint: list[str] = typer.Option(None, help="e.g. 'params<=2e6', repeatable [none]"),
    trials: int = typer.Option(None, help="evaluated trials in the study [40]"),
    workers: int = typer.Option(None, help="Ray workers; 0 runs trials in this process [2]"),
    sampler: str = typer.Option(None, help=SAMPLER_HELP),
    seed: int = typer.Option(None, help="seed of the sampler and of training [0]"),
    study: str = typer.Option(None, help="study name [SPACE-TASK-SAMPLER-sSEED]"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    pool: str = typer.Option(
        None, help="JSONL file of candidate configs [the space, or a partial replay table's]"
    ),
    evaluator: str = typer.Option(
        None, help="replay:TABLE answers from a recorded table [train and profile]"
    ),
    timeout: float = typer.Option(None, help="seconds for the whole search [no limit]"),
    ray_address: str = typer.Option(None, help="join this Ray cluster [a local Ray]"),
    steps: int = typer.Option(None, help="training steps per trial [300]"),
    trial_timeout: float = typer.Option(
        None, help="seconds per trial before it is killed [no limit]"
    ),
    supernet: str = typer.Option(
        None,
        help="Mix'n'Match: evaluate each config as a submodel of this supernet checkpoint, "
        "untrained (--steps does not apply); the space defaults to the supernet's [none]",
    ),
    batch_size: int = typer.Option(None, help="training sequences per step [32]"),
    lr: float = typer.Option(None, help="peak learning rate, warmup then cosine [1e-3]"),
    fidelity: str = typer.Option(
        None, help="steps: train in rungs, stop hopeless trials early (ASHA) [none]"
    ),
    min_steps: int = typer.Option(
        None, help="the first rung's training steps (--fidelity) [none: required by it]"
    ),
    max_steps: int = typer.Option(None, help="the last rung's steps (--fidelity) [--steps]"),
    eta: int = typer.Option(None, help="rungs grow by eta; its top 1/eta goes on [3]"),
    checkpoint_dir: str = typer.Option(
        None, help="rung checkpoints, shared by every worker [./tnas-checkpoints]"
    ),
    keep_checkpoints: bool = typer.Option(
        None, "--keep-checkpoints", help="keep rung checkpoints after a trial ends [no]"
    ),
    population_size: int = typer.Option(None, help="NSGA-II/III's population [16]"),
    linas_batch: int = typer.Option(None, help="configs per predictor round of linas [5]"),
    threads: int = typer.Option(
        None, help="torch threads for training in this process (--workers 0) [cores]"
    ),
    profile_threads: int = typer.Option(None, help="torch threads while timing latency [1]"),
    latency: list[str] = typer.Option(
        None,
        help="latency source, repeatable: measured, node:RESOURCE or table:FILE, each as "
        "NAME=SOURCE if named; gives latency_ms@NAME, the first also latency_ms [measured]",
    ),
    ref_point: list[str] = typer.Option(
        None, help="hypervolume reference, a value per objective: 0.5,80 [frozen from 1st batch]"
    ),
    allow_mixed_devices: bool = typer.Option(
        None, "--allow-mixed-devices", help="let trials measured on other devices join [no]"
    ),
    join: bool = typer.Option(False, "--join", help="run beside the study's live driver"),
):
    """Run a multi-objective architecture search; every trial and front goes to the database.

    A study keeps the identity it was created with (space, task, objectives, constraints,
    evaluator, budget, latency protocol): launching it again with other settings is refused;
    `tnas search resume` continues it."""
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
        "batch_size": batch_size,
        "lr": lr,
        "population_size": population_size,
        "linas_batch": linas_batch,
        "fidelity": fidelity,
        "min_steps": min_steps,
        "max_steps": max_steps,
        "eta": eta,
        "checkpoint_dir": checkpoint_dir,
        "keep_checkpoints": keep_checkpoints,
        "threads": threads,
        "profile_threads": profile_threads,
        "latency": latency or None,
        "ref_point": reference_arg(ref_point),
        "allow_mixed_devices": allow_mixed_devices,
    }
    run_search(lambda progress: launch(run_file, progress=progress, join=join, **settings))


def reference_arg(values: list[str] | None) -> list[float] | None:
    """`--ref-point` values (`0.5,80` or `0.5 --ref-point 80`), or None when not given."""
    from tnas.search.reference import parse_reference

    try:
        return parse_reference(values) if values else None
    except ValueError as err:
        raise fail(str(err)) from None


@search_app.command("resume")
def search_resume(
    study: str = typer.Argument(..., help="the study to continue"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    trials: int = typer.Option(None, help="a new budget of evaluated trials [as stored]"),
    workers: int = typer.Option(None, help="Ray workers; 0 runs trials here [as stored]"),
    timeout: float = typer.Option(None, help="seconds for this run [as stored]"),
    ray_address: str = typer.Option(None, help="join this Ray cluster [as stored]"),
    join: bool = typer.Option(False, "--join", help="run beside the study's live driver"),
):
    """Continue a study with its stored settings: trials of a dead driver and interrupted
    trials run again; --trials extends the budget. A study whose driver is alive is refused
    unless --join."""
    from tnas.launch import resume

    study = study_arg(study)
    changes = {"trials": trials, "workers": workers, "timeout": timeout, "ray_address": ray_address}
    run_search(
        lambda progress: resume(study, storage=storage, progress=progress, join=join, **changes)
    )


# Listings readable in an 80-column terminal (`fit_table`): the headers of a table too wide
# for its full column names, borderless layout, and the folding and hiding steps per listing.
SHORT_HEADERS = {
    "number": "#",
    "n_trials": "trials",
    "n_complete": "done",
    "n_failed": "fail",
    "n_running": "run",
    "front_size": "front",
    "hypervolume": "HV",
    "datetime_start": "started",
    "created_at": "created",
    "config_hash": "hash",
    "duration_s": "secs",
    "attempts": "tries",
    "accuracy": "acc",
    "latency_ms": "lat_ms",
    "n_train": "train",
    "n_test": "test",
    "kendall": "tau",
    "spearman": "rho",
    "cv_kendall": "cv_tau",
}
COMPACT_TABLE = {
    "box": box.SIMPLE_HEAD,
    "show_edge": False,
    "pad_edge": False,
    "collapse_padding": True,
}
COMPACT_GAP = 2  # characters between two columns of COMPACT_TABLE
FOLD_MIN = 8
ISO_MINUTE = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d)")
FitStep = tuple[str, int | None]  # (column, fold to this width) or (column, None): hide it
STUDIES_STEPS: list[FitStep] = [
    ("objectives", 14),
    ("datetime_start", None),
    ("name", 16),
    ("n_running", None),
    ("name", 10),
]
TRIALS_STEPS: list[FitStep] = [
    ("reason", 12),
    ("attempts", None),
    ("reason", FOLD_MIN),
    ("duration_s", None),
    ("device", None),
    ("config_hash", None),
]
PREDICTORS_STEPS: list[FitStep] = [("objective", 10), ("family", FOLD_MIN)]


def cell(column: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if column == "config_hash" and isinstance(value, str):
        return value[:12]
    return str(value)


def compact_cell(column: str, value) -> str:
    """`cell` for a table squeezed into a narrow terminal: 4 significant digits, 8 characters
    of a hash, 6 of a device id, timestamps to the minute, "-" for nothing.

    >>> compact_cell("datetime_start", "2025-03-01T09:30:12+00:00"), compact_cell("x", 0.123456)
    ('2025-03-01 09:30', '0.1235')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        if column == "config_hash":
            return value[:8]
        if column == "device":
            kind, _, device_id = value.partition(" ")
            return f"{kind} {device_id[:6]}".strip()
        stamp = ISO_MINUTE.match(value)
        if stamp:
            return f"{stamp[1]} {stamp[2]}"
    return str(value)


def fit_table(
    rows: list[dict], title: str, width: int, steps: Sequence[FitStep] | None = None
) -> tuple[Table, list[str]]:
    """A rich table of `rows` no wider than `width` characters, and the columns it hides.

    A table that fits is drawn as it always was. One that does not gets short headers
    (`SHORT_HEADERS`), compact cells (`compact_cell`) and no borders; then, until it fits,
    `steps` in order: `(column, least)` folds the column's cells onto more lines, no
    narrower than `least` (nor its header: a header is never cut), `(column, None)` hides the
    column. Without `steps`, text columns fold, the widest first. Columns holding dicts or
    lists (a config) are never shown: `--format json` has them.

    >>> from rich.console import Console
    >>> rows = [{"name": "primer-digits-nsga2-s0", "objectives": "accuracy:max, latency_ms:min",
    ...          "n_trials": 40, "hypervolume": 0.123456, "datetime_start": "2025-03-01T09:30"}]
    >>> steps = [("objectives", 14), ("datetime_start", None)]
    >>> table, hidden = fit_table(rows, "studies", 60, steps)
    >>> hidden, Console(width=60).measure(table).maximum <= 60
    (['datetime_start'], True)
    """
    nested = {key for row in rows for key, value in row.items() if isinstance(value, dict | list)}
    columns = [key for key in rows[0] if key not in nested]
    full = [[cell(column, row.get(column)) for column in columns] for row in rows]
    natural = [max([len(c), *(len(texts[i]) for texts in full)]) for i, c in enumerate(columns)]
    if sum(natural) + 3 * len(columns) + 1 <= width:  # rich's default box: "│ a │ b │"
        table = Table(*columns, title=title)
        for texts in full:
            table.add_row(*texts)
        return table, []
    headers = {column: SHORT_HEADERS.get(column, column) for column in columns}
    texts = [{column: compact_cell(column, row.get(column)) for column in columns} for row in rows]
    widths = {c: max([len(headers[c]), *(len(text[c]) for text in texts)]) for c in columns}
    if steps is None:
        words = [c for c in columns if any(isinstance(row.get(c), str) for row in rows)]
        steps = [(column, FOLD_MIN) for column in sorted(words, key=lambda c: -widths[c])]
    shown = list(columns)

    def total(chosen: dict[str, int]) -> int:
        return sum(chosen[column] for column in shown) + COMPACT_GAP * (len(shown) - 1)

    folded = dict(widths)  # the steps run in full: which columns they hide
    for column, least in steps:
        if total(folded) <= width:
            break
        if column in shown and least is None and len(shown) > 1:
            shown.remove(column)
        elif column in shown and least is not None:
            folded[column] = min(folded[column], max(least, len(headers[column])))
    for column, least in steps:  # with those hidden, fold no more than needed
        over = total(widths) - width
        if over <= 0:
            break
        if column in shown and least is not None:
            widths[column] -= max(0, min(over, widths[column] - max(least, len(headers[column]))))
    while total(widths) > width and len(shown) > 1:  # the last resort: hide from the right
        shown.pop()
    table = Table(title=title, **COMPACT_TABLE)
    for column in shown:
        values = [row.get(column) for row in rows]
        numeric = all(isinstance(value, int | float | None) for value in values) and any(
            isinstance(value, int | float) for value in values
        )
        justify = "right" if numeric else "left"
        table.add_column(headers[column], width=widths[column], justify=justify, overflow="fold")
    for text in texts:
        table.add_row(*(text[column] for column in shown))
    return table, [column for column in columns if column not in shown]


def print_rows(rows: list[dict], title: str, steps: Sequence[FitStep] | None = None) -> None:
    """Rows as a rich table that fits the terminal (`fit_table`), and a line naming the
    columns it had to hide."""
    if not rows:
        console.print(f"{title}: nothing yet")
        return
    table, hidden = fit_table(rows, title, console.width, steps)
    console.print(table)
    if hidden:
        console.print(f"(not shown at this width: {', '.join(hidden)})", soft_wrap=True)


def emit(rows: list[dict], fmt: str, title: str, steps: Sequence[FitStep] | None = None) -> None:
    """Rows as a rich table (`print_rows`), or as JSON or CSV on stdout."""
    from tnas.search.query import write_rows

    if fmt == "table":
        print_rows(rows, title, steps)
        return
    try:
        write_rows(rows, fmt, sys.stdout)
    except ValueError as err:
        raise fail(str(err)) from None


@app.command("studies")
def studies_command(
    storage: str = typer.Option(None, help=STORAGE_HELP),
    ref_point: list[str] = typer.Option(
        None,
        "--ref-point",
        help="measure every study's hypervolume against this point (studies sharing their "
        "objectives), one value per objective: repeat the option or give V1,V2 [each study's own]",
    ),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
):
    """List studies with their trial counts and front sizes."""
    from tnas.search.query import list_studies
    from tnas.search.reference import describe_reference, parse_reference

    try:
        point = parse_reference(ref_point) if ref_point else None
        rows = list_studies(open_db(storage, create=False), ref_point=point)
    except ValueError as err:
        raise fail(str(err)) from None
    emit(rows, fmt, "studies", STUDIES_STEPS)
    if point is not None and rows and fmt == "table":
        console.print(describe_reference(point, rows[0]["objectives"].split(", "), "given"))


@app.command("trials")
def trials_command(
    study: str = typer.Argument(...),
    state: list[str] = typer.Option(None, help=STATE_HELP),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
):
    """List a study's trials: state, objective values, the device that measured each (kind
    and fingerprint id), config hash, failure reason, duration and attempts. `--format json`
    carries each trial's full config and config hash."""
    from tnas.search.query import check_states, list_trials, predicted_objectives

    study = study_arg(study)
    try:
        db = open_db(storage, create=False)
        states = check_states(state) if state else None
        rows = list_trials(db, study, states=states)
        predicted = predicted_objectives(db, study)
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from None
    if fmt == "table":  # where latencies came from: in --format json|csv
        rows = [{k: v for k, v in row.items() if k != "latency"} for row in rows]
    emit_marked(rows, predicted, fmt, f"trials of {study}", TRIALS_STEPS)


def emit_marked(rows, predicted: dict, fmt: str, title: str, steps=None) -> None:
    """`emit` the rows, marking the objectives whose values are predictions: in a table their
    header gets a `*` and a line below says where the predictions come from; in JSON and CSV
    each row names them under `predicted`."""
    if not predicted:
        emit(rows, fmt, title, steps)
        return
    if fmt != "table":
        emit([row | {"predicted": sorted(predicted)} for row in rows], fmt, title, steps)
        return
    marked = [{(f"{k}*" if k in predicted else k): v for k, v in row.items()} for row in rows]
    print_rows(marked, title, steps)
    for name, where in predicted.items():
        device = f"device {where['device']}" if where.get("device") else "device ?"
        date = f", calibrated {where['calibrated'][:10]}" if where.get("calibrated") else ""
        console.print(f"* {name} predicted by {where['table']} ({device}{date})", soft_wrap=True)
    console.print("  measure it: tnas pareto STUDY --measure local|node:RESOURCE")


@app.command("pareto")
def pareto_command(
    study: list[str] = typer.Argument(
        ..., help="one study, or several to compare on one hypervolume (or overlay in --plot)"
    ),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
    history: bool = typer.Option(False, help="the front's snapshots over time"),
    plot: str = typer.Option(None, help="write a scatter to FILE.png or FILE.html [none]"),
    ref_point: list[str] = typer.Option(
        None,
        "--ref-point",
        help="hypervolume reference point, one value per objective in its own units: "
        "repeat the option or give V1,V2 [several studies: the worst of their own]",
    ),
    rung: int = typer.Option(
        None, help="a multi-fidelity study's front at rung N (0: the first) [the top rung]"
    ),
    measure: str = typer.Option(
        None,
        help="measure the front's latency for real on local or node:RESOURCE, beside the "
        "stored (or predicted) values [no]",
    ),
    ray_address: str = typer.Option(None, help="the Ray cluster of --measure node: [RAY_ADDRESS]"),
):
    """Show the latest Pareto front of a study (from its stored snapshot).

    With several studies, or --ref-point, each study's front (or --history), then their
    hypervolumes against one reference point, and a line naming it: --ref-point if given,
    else per objective the worst of the studies' own. Studies with different objectives
    cannot share one hypervolume (a one-line error). --format json|csv writes the
    hypervolume rows (or the history rows, with a study column) and the reference point.
    """
    from tnas.search.query import (
        compare_fronts,
        front_history,
        pareto_rows,
        predicted_objectives,
        study_objectives,
    )
    from tnas.search.reference import describe_reference, parse_reference

    study = [study_arg(name) for name in study]
    if plot:
        output_arg(plot, "--plot", new_dirs=False)  # plot_fronts creates no directories
    if measure is not None:
        measure_front_command(study[0], storage, measure, ray_address, fmt)
        return
    db = open_db(storage, create=False)
    if rung is not None:
        from tnas.search.query import rung_front

        try:
            rows = rung_front(db, study[0], rung)
        except LookupError as err:
            raise fail(str(err)) from None
        finally:
            db.close()
        emit(rows, fmt, f"Pareto front of {study[0]} at rung {rung}")
        return
    try:
        point = parse_reference(ref_point) if ref_point else None
        if plot:
            from tnas.search.plots import plot_fronts

            plot_fronts(db, study, plot, ref_point=point)
            console.print(f"wrote {plot}")
            return
        if len(study) == 1 and point is None:
            name = study[0]
            rows = front_history(db, name) if history else pareto_rows(db, name)
            predicted = {} if history else predicted_objectives(db, name)
            title = f"{'front history' if history else 'Pareto front'} of {name}"
            emit_marked(rows, predicted, fmt, title)
            return
        compared, reference, source = compare_fronts(db, study, point)
        line = describe_reference(reference, study_objectives(db, study[0]), source)
        if history:
            tables = [(name, front_history(db, name, reference)) for name in study]
        else:
            tables = [(name, pareto_rows(db, name)) for name in study]
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from None
    if fmt != "table":
        rows = compared
        if history:
            rows = [{"study": name} | row for name, history_rows in tables for row in history_rows]
        where = {"reference_point": reference, "reference_source": source}
        emit([row | where for row in rows], fmt, "")
        return
    for name, rows in tables:
        print_rows(rows, f"{'front history' if history else 'Pareto front'} of {name}")
    print_rows(compared, "hypervolume on one reference point")
    console.print(line)


def measure_front_command(study: str, storage, target: str, address, fmt: str) -> None:
    """`tnas pareto STUDY --measure TARGET`: each front member's latency measured on TARGET
    beside the stored value, and a line with the error's summary."""
    from tnas.launch import measure_front

    try:
        rows, summary = measure_front(study, target, storage=storage, ray_address=address)
    except (LookupError, ValueError) as err:
        raise fail(one_line(err)) from None
    if fmt != "table":
        emit(rows, fmt, "")
        return
    print_rows(rows, f"Pareto front of {study}, measured on {target}")
    console.print(summary, soft_wrap=True)


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on `host`:`port` (in use, not an address of this machine,
    a name that does not resolve), found by binding a socket there and closing it at once;
    None if it can. The bind sets SO_REUSEADDR, as the dashboard's server does, so a port
    left in TIME_WAIT counts as free."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, ValueError) as err:  # gaierror; ValueError: a NUL or a bad IDNA name
        return f"cannot listen on {shown(host)}: {getattr(err, 'strerror', None) or err}"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use; pass --port"
            return f"cannot listen on {host}:{port}: {err.strerror or err}"
    return None


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
    problem = listen_problem(host, port)
    if problem:
        raise fail(problem)
    console.print(f"optuna-dashboard on http://{host}:{port} ({redact_url(db.url)})")
    if host not in LOOPBACK_HOSTS:
        console.print(f"note: {host} is reachable from other machines; the dashboard has no login")
    os.execvp(argv[0], argv)


@predictors_app.command("calibrate")
def predictors_calibrate(
    space: str = typer.Option("simq", help="YAML file or preset name"),
    task: str = typer.Option(
        None, help="adapt configs to this task as a search's trials are (its study's --task) [none]"
    ),
    device: str = typer.Option(
        "cpu", help="cpu, cuda, or node:RESOURCE (the Ray node that offers that custom resource)"
    ),
    node_device: str = typer.Option("cpu", help="torch device on the node (--device node:...)"),
    budget: int = typer.Option(200, help="at most this many measurements"),
    batch: int = typer.Option(None, help="sequences per forward [1, as a search]"),
    seq: int = typer.Option(
        None, "--seq-len", "--seq", help="tokens per sequence [128 or max_seq_len, as a search]"
    ),
    repeats: int = typer.Option(None, help="timed repetitions [20, as a search]"),
    warmup: int = typer.Option(None, help="untimed forwards before timing [3, as a search]"),
    threads: int = typer.Option(None, help="torch threads while timing [1, as a search]"),
    seed: int = typer.Option(0, help="seed for the sampled configs"),
    ray_address: str = typer.Option(None, help="the Ray cluster of --device node: [RAY_ADDRESS]"),
    out: str = typer.Option("latency.json", help="where to write the table (JSON)"),
):
    """Measure a per-block latency table for a space on this device, or on the Ray node that
    offers a custom resource (`--device node:RESOURCE`), with a search's measurement protocol
    unless the options say otherwise; the table records its protocol and space."""
    from tnas.nn.quant import UnsupportedQuantization
    from tnas.workers.backend import ProfileSettings
    from tnas.workers.calibrate import calibrate_on
    from tnas.workers.profile import check_device
    from tnas.workers.target import Target

    on_node = device.partition(":")[0] == "node"
    target = target_arg(device) if on_node else Target()
    try:
        check_device(node_device if on_node else device)
    except ValueError as err:
        also = "" if on_node else " (or node:RESOURCE, a Ray node's custom resource)"
        raise fail(f"{'--node-device: ' if on_node else ''}{err}{also}") from None
    output_arg(out, "--out", new_dirs=False)  # before measuring: LatencyTable.save makes no dirs
    int_arg(seed, "--seed")
    int_arg(budget, "--budget", least=2)
    protocol = ProfileSettings()  # a search's defaults: one source for both
    options = {
        "device": node_device if on_node else device,
        "budget": budget,
        "batch": int_arg(protocol.batch if batch is None else batch, "--batch", least=1),
        "seq_len": int_arg(protocol.seq_len if seq is None else seq, "--seq-len", least=1),
        "seed": seed,
        "repeats": int_arg(protocol.repeats if repeats is None else repeats, "--repeats", 1),
        "warmup": int_arg(protocol.warmup if warmup is None else warmup, "--warmup"),
        "threads": int_arg(protocol.threads if threads is None else threads, "--threads", 1),
        "task": task,
    }
    if task is not None:
        from tnas.workers.tasks import parse_task

        try:
            parse_task(task)
        except (ValueError, TypeError) as err:
            raise fail(f"--task: {one_line(err)}") from None
    loaded = open_space(space)
    try:
        table = calibrate_on(target, loaded, ray_address, **options)
    except (UnsupportedQuantization, *USER_ERRORS) as err:
        raise fail(str(err)) from None
    try:
        table.save(out)
    except OSError as err:  # removed or filled since the check: one line, not a traceback
        raise fail(f"cannot write {out}: {err.strerror or err}") from None
    typer.echo(
        f"wrote {out}: {len(table.entries)} blocks, {len(table.full_models)} whole models, "
        f"{table.measurements} measurements"
    )
    typer.echo(f"device {table.device_id} on {where_text(target.text, table.node_ip)}")
    typer.echo(f"protocol: {protocol_text(table.protocol)}; task {table.task or 'none'}")


def where_text(target: str, node_ip: str | None) -> str:
    """`local`, or `node:dev (10.0.0.7)`: where a measurement ran."""
    return f"{target} ({node_ip})" if node_ip else target


def protocol_text(protocol: dict | None) -> str:
    """`batch 1, seq_len 128, repeats 20, warmup 3, threads 1`, or `none recorded`."""
    if protocol is None:
        return "none recorded"
    return ", ".join(f"{name} {value}" for name, value in protocol.items())


def percent(fraction: float, digits: int = 1) -> str:
    """`0.123` as `12.3 %`."""
    return f"{fraction * 100:.{digits}f} %"


def open_table(path: str):
    """A `LatencyTable` from a file; a missing, corrupt or foreign file is one line."""
    from tnas.predictors.latency import LatencyTable

    try:
        return LatencyTable.load(path)
    except ValueError as err:
        raise fail(str(err)) from None


def table_space(table, spec: str | None) -> DesignSpace:
    """`--space`, else the space the table was calibrated on (a preset's name), checked to be
    the one the table was calibrated on."""
    if spec is None:
        if table.space is None:
            raise fail(f"{table.name} does not record its design space: pass --space")
        spec = table.space["name"]
        try:
            loaded = load_space(spec)
        except (*USER_ERRORS, OSError):
            raise fail(
                f"{table.name} was calibrated on space {shown(spec)}, not a preset: pass its "
                "YAML file with --space"
            ) from None
    else:
        loaded = open_space(spec)
    try:
        table.check_space(loaded.name, loaded.digest)
    except ValueError as err:
        raise fail(str(err)) from None
    return loaded


def target_arg(text: str):
    """`--on`: a `Target`, or one line naming the two valid forms."""
    from tnas.workers.target import Target

    try:
        return Target.parse(text)
    except ValueError as err:
        raise fail(str(err)) from None


@predictors_app.command("adapt")
def predictors_adapt(
    table: str = typer.Argument(..., help="a latency table (JSON) from tnas predictors calibrate"),
    on: str = typer.Option("local", help="where to measure: local, or node:RESOURCE (a Ray node)"),
    measurements: int = typer.Option(10, help="whole models to measure on the target"),
    out: str = typer.Option(..., help="where to write the adapted table (JSON)"),
    space: str = typer.Option(None, help="YAML file or preset name [the table's space]"),
    seed: int = typer.Option(2, help="seed for the sampled configs"),
    device: str = typer.Option(None, help="torch device on the target, cpu or cuda [the table's]"),
    ray_address: str = typer.Option(None, help="the Ray cluster of --on node: [RAY_ADDRESS]"),
):
    """Move a latency table to another device from a few whole models measured there, under
    the table's protocol: fresh configs of its space, a least-squares scale and offset per
    mixer (`LatencyPredictor.adapt`), and the measurements kept as the new table's whole
    models."""
    from tnas.nn.quant import UnsupportedQuantization
    from tnas.workers.calibrate import adapt_table

    loaded = open_table(table)
    target = target_arg(on)
    int_arg(measurements, "--measurements", least=1)
    int_arg(seed, "--seed")
    output_arg(out, "--out", new_dirs=False)
    chosen = table_space(loaded, space)
    if device is not None and device not in ("cpu", "cuda"):
        raise fail(f"unknown device {shown(device)}; valid: cpu, cuda")
    try:
        moved, summary = adapt_table(
            loaded, target, chosen, measurements, seed, device=device, address=ray_address
        )
    except (UnsupportedQuantization, *USER_ERRORS) as err:
        raise fail(str(err)) from None
    try:
        moved.save(out)
    except OSError as err:
        raise fail(f"cannot write {out}: {err.strerror or err}") from None
    where = where_text(target.text, summary["node_ip"])
    typer.echo(f"wrote {out}: device {summary['device_id']} on {where}")
    typer.echo(
        f"{summary['measurements']} measurements, MAPE on them {percent(summary['mape_before'])} "
        f"before adapting, {percent(summary['mape_after'])} after"
    )


@predictors_app.command("check")
def predictors_check(
    table: str = typer.Argument(..., help="a latency table (JSON) from tnas predictors calibrate"),
    on: str = typer.Option("local", help="where to measure: local, or node:RESOURCE (a Ray node)"),
    configs: int = typer.Option(20, help="fresh configs to measure and predict"),
    seed: int = typer.Option(1, help="seed for the sampled configs (calibrate's default is 0)"),
    space: str = typer.Option(None, help="YAML file or preset name [the table's space]"),
    as_json: bool = typer.Option(False, "--json", help="print JSON, with every config's ms"),
    ray_address: str = typer.Option(None, help="the Ray cluster of --on node: [RAY_ADDRESS]"),
):
    """How well a latency table predicts a device: fresh configs of its space (none it measured
    whole) measured on the target under the table's protocol, against its predictions: MAPE,
    the share within ±10 % and Kendall τ."""
    from tnas.nn.quant import UnsupportedQuantization
    from tnas.workers.calibrate import check_table

    loaded = open_table(table)
    target = target_arg(on)
    int_arg(configs, "--configs", least=2)
    int_arg(seed, "--seed")
    chosen = table_space(loaded, space)
    try:
        report = check_table(loaded, target, chosen, configs, seed, address=ray_address)
    except (UnsupportedQuantization, *USER_ERRORS) as err:
        raise fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps(report))
        return
    where = where_text(target.text, report["node_ip"])
    typer.echo(f"{table} on {where}, device {report['device_id']}")
    typer.echo(f"{report['configs']} fresh configs of {chosen.name} (seed {seed}) measured:")
    typer.echo(
        f"MAPE {percent(report['mape'])}, {percent(report['within_10pct'], 0)} within ±10 %, "
        f"Kendall τ {report['kendall_tau']:.2f}"
    )
    if report["device_id"] != report["table_device_id"]:
        typer.echo(
            f"note: the table is of device {report['table_device_id']}; tnas predictors adapt "
            "moves it to this one"
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
        rows = predictor_report(open_db(storage, create=False), study)
    except LookupError as err:
        raise fail(str(err)) from None
    if not rows and fmt == "table":
        console.print(f"{study}: no predictor rounds (only the linas sampler fits predictors)")
        return
    if fmt == "table":  # narrow enough for a terminal; json and csv keep the timestamps
        rows = [{k: v for k, v in row.items() if k != "created_at"} for row in rows]
    emit(rows, fmt, f"predictor quality of {study}", PREDICTORS_STEPS)


LIVE_HELP = "even while a driver is searching it (it would go on under the old name)"


@study_app.command("delete")
def study_delete(
    study: str = typer.Argument(..., help="the study to delete"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking"),
    force: bool = typer.Option(False, "--force", help=LIVE_HELP),
):
    """Delete a study: its trials, and the front snapshots, predictor rounds and heartbeats
    tnas keeps for it (Optuna's `delete-study` leaves those behind)."""
    from tnas.search.lifecycle import delete_study, records_text, study_records

    study = study_arg(study)
    db = open_db(storage, create=False)
    try:
        if not yes:
            held = records_text(study_records(db, study))
            question = f"delete study {study} from {redact_url(db.url)} ({held})?"
            if not typer.confirm(question, default=False):
                typer.echo("nothing deleted", err=True)
                raise typer.Exit(code=1)
        deleted = delete_study(db, study, force=force)
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from None
    typer.echo(f"deleted study {study}: {records_text(deleted)}")


@study_app.command("rename")
def study_rename(
    study: str = typer.Argument(..., help="the study's name"),
    new_name: str = typer.Argument(..., help="its new name"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help=LIVE_HELP),
):
    """Rename a study, in one transaction with tnas's fronts and records (Optuna has no
    rename); `tnas pareto NEW_NAME` and `tnas search resume NEW_NAME` then find it."""
    from tnas.search.lifecycle import records_text, rename_study

    study, new_name = study_arg(study), study_arg(new_name)
    db = open_db(storage, create=False)
    try:
        renamed = rename_study(db, study, new_name, force=force)
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from None
    typer.echo(f"renamed study {study} to {new_name} ({records_text(renamed)})")


@study_app.command("copy")
def study_copy(
    study: str = typer.Argument(..., help="the study to copy"),
    new_name: str = typer.Argument(None, help="the copy's name [the same]"),
    storage: str = typer.Option(None, help=f"the study's {STORAGE_HELP}"),
    to: str = typer.Option(
        None, "--to", help="the database to copy into, URL or .db file, made if new [--storage]"
    ),
):
    """Copy a study, trials, fronts and predictor rounds, into another database (SQLite to
    PostgreSQL, say) or under a new name in the same one."""
    from tnas.search.db import StorageError, resolve_url
    from tnas.search.lifecycle import copy_study, records_text, study_records

    study = study_arg(study)
    new_name = study if new_name is None else study_arg(new_name)
    source = open_db(storage, create=False)
    try:
        study_records(source, study)  # no such study: refused before the target is made
        same = to is None or resolve_url(to) == source.url
    except (LookupError, StorageError) as err:
        raise fail(str(err)) from None
    target = source if same else open_db(to)
    try:
        copied = copy_study(source, study, target, new_name)
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from None
    where = redact_url(target.url)
    typer.echo(f"copied study {study} to {new_name} in {where} ({records_text(copied)})")


@study_app.command("export")
def study_export(
    study: str = typer.Argument(..., help="the study whose front to export"),
    out: str = typer.Option(..., "--out", help="a new or empty directory"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
):
    """Write the study's latest Pareto front: `trial-NNNN/config.json` per member (the
    ArchConfig JSON: `tnas train`, `tnas profile`, `ArchConfig.from_json` read it) and an
    index, `front.json` and `front.csv`, with each member's trial, config hash and values."""
    from tnas.search.lifecycle import FRONT_CSV, FRONT_JSON, export_study

    study = study_arg(study)
    output_arg(out, "--out", inside=(FRONT_JSON, FRONT_CSV))
    db = open_db(storage, create=False)
    try:
        index = export_study(db, study, out)
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(f"{out}: {err.strerror or err}") from None
    members = len(index["members"])
    typer.echo(f"wrote {out}: {members} configs of the front of {study}, {FRONT_JSON}, {FRONT_CSV}")


supernet_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=MARKUP, help="MatFormer supernets."
)
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
    ray_address: str = typer.Option(None, help="join this Ray cluster (with --ray) [a local Ray]"),
    threads: int = typer.Option(
        None,
        "--threads",
        "--cpus",
        help="torch threads (CPUs) the training uses [this process's cores; 1 on Ray]",
    ),
    device: str = typer.Option("cpu", help="cpu or cuda"),
):
    """Train a supernet jointly (MatFormer); `tnas extract` then cuts submodels out of it."""
    from tnas.nn.checkpoint import CheckpointError
    from tnas.workers.supernet import train_supernet_job, training_state_path
    from tnas.workers.train import Budget, TrialFailed, default_threads

    if threads is None:  # a Ray task reserves them on a node whose cores we do not know here
        threads = 1 if ray or ray_address else default_threads(1)
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
            threads=threads,
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
    supernet: str = typer.Option(None, help="supernet checkpoint (.safetensors) [none]"),
    config: str = typer.Option(
        None,
        help='submodel JSON: an ArchConfig, or {"config": ..., "kept": [...]}; - for stdin [none]',
    ),
    study: str = typer.Option(None, help="a study searched with --supernet (with --trial) [none]"),
    trial: int = typer.Option(None, help="the number of the trial of --study to extract [none]"),
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
