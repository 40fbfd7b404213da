"""Every CLI command, fed bad arguments, ends well: exit 0, or exit 2 with one `error:` line on
stderr (or Click's usage error, exit 2 too), and never a traceback.

The commands are walked from the Typer app (`typer.main.get_command`), so a new command is
covered as soon as it is registered. Hypothesis draws each command's arguments from its
parameters: random text, negative and huge numbers, NaN, paths that do not exist, paths under
`/proc`, 300-character names, unknown options, and a few valid anchors (a preset, a config
file, a study of a temporary SQLite database) so that checks past the first are reached too.
Commands that would start long work on valid input (a search, training, calibration, the
demo) always get one argument that fails before any work (`POISON`); the dashboard's `exec`
is replaced by an exit.
"""

from __future__ import annotations

import json
import os
import shutil
import typing
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import write_replay_table
from tnas.cli import app
from tnas.space import load_space

runner = CliRunner()
EXAMPLES = int(os.environ.get("TNAS_CLI_EXAMPLES", "25"))  # per command; more to fuzz deeper
# The same examples on every run (CI never fails by the luck of a draw); TNAS_FUZZ_RANDOM=1
# draws new ones, to look for what these miss.
DERANDOMIZE = os.environ.get("TNAS_FUZZ_RANDOM", "") != "1"
LONG_NAME = "n" * 300
BAD_PATHS = [
    "nodir/x/q.json",
    "/proc/self/x.png",
    f"{LONG_NAME}.png",
    f"dir/{LONG_NAME}/x.json",
    "/proc/self/status",
    "/",
    ".",
    "-",
    "",
    "../x.json",
    "x.svg",
]
BAD_NUMBERS = ["-1", "-2147483649", "2147483648", str(10**30), "nan", "inf", "-inf", "1e400", "x"]
# Commands that would train, measure or search for long on valid input: each always gets one
# argument that fails before any work is started: its first positional argument, or an option
# put last (so that it wins over a drawn one).
POISON_ARGUMENT = {
    ("search", "resume"): "no-such-study",
    ("train",): "nodir/config.json",
    ("profile",): "nodir/config.json",
}
POISON_OPTION = {
    ("search", "launch"): ["--space", "nodir/space.yaml"],
    ("supernet", "train"): ["--out", "/proc/self/supernet.safetensors"],
    ("demo",): ["--space", "nodir/space.yaml"],
    ("predictors", "calibrate"): ["--space", "nodir/space.yaml"],
}
LONG = set(POISON_ARGUMENT) | set(POISON_OPTION)


def leaf_commands(command, path: tuple[str, ...] = ()):
    """(path, click command) for every command under `command`, groups walked."""
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if hasattr(sub, "commands"):
            yield from leaf_commands(sub, (*path, name))
        else:
            yield (*path, name), sub


COMMANDS = list(leaf_commands(typer.main.get_command(app)))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A folder with a study `S` (a replay search) in studies.db, its replay table, a config
    and a corrupt .db file."""
    from tnas.launch import launch

    root = tmp_path_factory.mktemp("cli-property")
    write_replay_table(root / "table.jsonl", rows=12, seed=0)
    launch(
        space="primer",
        pool=str(root / "table.jsonl"),
        objectives=["accuracy:max", "latency_ms:min"],
        trials=4,
        workers=0,
        study="S",
        storage=f"sqlite:///{root / 'studies.db'}",
    )
    config = load_space("simq").sample(np.random.default_rng(0))
    (root / "config.json").write_text(config.to_json())
    (root / "corrupt.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 2)
    return root


@pytest.fixture
def workspace(template, tmp_path, monkeypatch) -> dict:
    """A copy of the template for one command (which may delete or rename `S`), as the working
    directory: a command that writes a relative path writes it here."""
    root = tmp_path / "work"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    return {"storage": f"sqlite:///{root / 'studies.db'}", "table": str(root / "table.jsonl")}


def values_for(param, path: tuple[str, ...], place: dict) -> st.SearchStrategy[str]:
    """Text for one parameter: mostly bad, sometimes a valid anchor."""
    text = st.text(st.characters(blacklist_characters="\x00"), max_size=24)
    paths = st.sampled_from(BAD_PATHS)
    annotation = param.type_descriptor.annotation  # int, float, str, list[str], ...
    kind = (typing.get_args(annotation) or (annotation,))[0]
    if param.name == "storage":
        return st.sampled_from(
            [place["storage"]] * 4
            + ["corrupt.db", "nodir/x.db", "/proc/self/x.db", "mysql://nowhere/x", LONG_NAME]
        )
    if kind is int:  # never a mid-size count, which would only mean long work
        return st.one_of(
            st.integers(max_value=-1).map(str),
            st.integers(min_value=2**31).map(str),
            st.sampled_from(["0", "1", "3", *BAD_NUMBERS]),
        )
    if kind is float:
        return st.one_of(st.floats().map(repr), st.sampled_from(["0", "0.5", *BAD_NUMBERS]))
    anchors: list[str] = []
    if param.name in ("space",):
        anchors = ["simq", "primer"]
    elif param.name in ("config",):
        anchors = ["config.json"]
    elif param.name in ("study",):
        anchors = ["S"]
    elif param.name in ("evaluator",):
        anchors = [f"replay:{place['table']}", "replay:nodir/t.jsonl", "replay:"]
    elif param.name in ("host",):
        anchors = ["127.0.0.1", "0.0.0.0", "::1", "no-such-host.invalid", "-x"]
    if path in LONG:
        anchors = []  # valid input would start the long work
    return st.one_of(text, paths, st.sampled_from(anchors or [LONG_NAME]))


@st.composite
def invocations(draw, path: tuple[str, ...], command, place: dict) -> list[str]:
    argv = list(path)
    poison = POISON_ARGUMENT.get(path)
    for param in command.params:
        if param.param_type_name == "option":
            # each optional one in three times, so that a few bad values meet in one call
            if param.name == "help" or (not param.required and draw(st.integers(0, 2)) > 0):
                continue
            flag = draw(st.sampled_from(param.opts + list(param.secondary_opts or [])))
            argv.append(flag)
            if not param.is_flag:
                argv.append(draw(values_for(param, path, place)))
        elif poison is not None:
            argv.append(poison)
            poison = None
        else:
            if not param.required and path not in LONG and not draw(st.booleans()):
                continue
            count = draw(st.integers(1, 2)) if param.nargs == -1 else param.nargs
            argv += [draw(values_for(param, path, place)) for _ in range(count)]
    if draw(st.integers(0, 9)) == 0:
        argv.append("--no-such-option")
    return argv + POISON_OPTION.get(path, [])


def check_outcome(result, argv: list[str]) -> None:
    """Exit 0; or exit 2 with one `error:` line or a Click usage error; never a traceback."""
    shown = f"tnas {' '.join(argv)!r}: exit {result.exit_code}\n{result.output[-2000:]}"
    assert "Traceback" not in result.output, shown
    if result.exit_code == 0:
        return
    assert isinstance(result.exception, SystemExit), f"{shown}\n{result.exception!r}"
    assert result.exit_code == 2, shown
    if result.stderr.startswith("Usage:"):  # Click's own: a bad type, an unknown option
        return
    lines = result.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), shown


def no_exec(program, argv):
    raise SystemExit(0)  # `tnas dashboard` got as far as starting the dashboard


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_bad_arguments_end_in_one_line_or_a_usage_error(path, command, workspace):
    @settings(
        max_examples=EXAMPLES,
        derandomize=DERANDOMIZE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(argv=invocations(path, command, workspace))
    def run(argv):
        with mock.patch("os.execvp", no_exec):
            result = runner.invoke(  # "y": a command that asks for confirmation gets it
                app, argv, input="y\n", env={"TNAS_STORAGE": workspace["storage"]}
            )
        check_outcome(result, argv)

    run()


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"space sample", "pareto", "dashboard", "search launch", "predictors calibrate"} <= names


def test_the_anchor_study_exists(workspace):
    result = runner.invoke(
        app, ["trials", "S", "--storage", workspace["storage"], "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 4
