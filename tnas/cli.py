"""The `tnas` command line: parse, call the library, print.

Errors a user can cause (a broken YAML, an unknown mixer, a config that does not build) print
one line, `error: ...`, on stderr and exit with code 2. Torch is imported only by the commands
that build a network, so `tnas space ...` answers quickly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from tnas.space import ArchConfig, ConfigError, DesignSpace, SpaceError, load_space, preset_names

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])
space_app = typer.Typer(no_args_is_help=True, help="Validate, show and sample design spaces.")
model_app = typer.Typer(no_args_is_help=True, help="Inspect the network a config builds.")
app.add_typer(space_app, name="space")
app.add_typer(model_app, name="model")

console = Console()
USER_ERRORS = (SpaceError, ConfigError, FileNotFoundError, ValueError)


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


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
    """Train one config on a task for a fixed step budget and report validation metrics."""
    from tnas.workers.tasks import parse_task
    from tnas.workers.train import Budget, TrialFailed, train

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
    except TrialFailed as err:
        typer.echo(f"error: trial failed: {err}", err=True)
        raise typer.Exit(code=1) from None
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "config_hash": result.config.hash,
                    "metrics": result.metrics,
                    "curve": result.curve,
                }
            )
        )
        return
    print_metrics(f"{task_object.spec}: config {result.config.short_hash}", result.metrics)
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


@app.command("demo")
def demo(
    space: str = typer.Option("primer", help="YAML file or preset name"),
    steps: int = typer.Option(40, help="training steps"),
    seed: int = typer.Option(0, help="random seed"),
    max_params: float = typer.Option(2e6, help="sample only configs with at most this many"),
):
    """Sample a small model from a space, summarise it, and train it for a few real steps."""
    from tnas.nn import summary
    from tnas.workers.demo import sample_small, train_demo

    loaded = open_space(space)
    try:
        config = sample_small(loaded, seed, max_params)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    console.print(f"[bold]sampled from {loaded.name}[/bold] ({config.short_hash}):")
    console.print_json(json.dumps(loaded.to_flat(config)))
    result_summary = summary(config, seq_len=min(128, config.max_seq_len))
    console.print(
        f"params {result_summary.params:,}; forward FLOPs "
        f"{result_summary.flops / 1e9:.3f} G per {result_summary.seq_len} tokens"
    )

    def log(step: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == steps:
            console.print(f"step {step:4d}  train loss {loss:.4f}")

    try:
        result = train_demo(config, steps=steps, seed=seed, log=log)
    except (ValueError, FloatingPointError) as err:
        raise fail(str(err)) from None
    console.print(
        f"validation bits/byte: {result.val_bpb_before:.3f} -> {result.val_bpb_after:.3f} "
        f"after {result.steps} steps ({result.tokens_per_s:,.0f} tokens/s)"
    )


if __name__ == "__main__":
    app()
