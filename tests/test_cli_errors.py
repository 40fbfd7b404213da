"""Ordinary mistakes on the command line end in one `error:` line and exit 2, never a traceback;
and the CLI's polish: `--version`, defaults in `--help`, an ETA on the search's progress bar."""

from __future__ import annotations

import json
import socket
from importlib.metadata import version
from pathlib import Path

import optuna
import pytest
import typer.main
from typer.testing import CliRunner

from tests.conftest import write_replay_table
from tnas.cli import app
from tnas.space import ArchConfig

runner = CliRunner()
OBJECTIVES = ["--objective", "accuracy:max", "--objective", "latency_ms:min"]


def cli(*args: str, **kwargs):
    return runner.invoke(app, list(args), **kwargs)


def one_error_line(result, *fragments: str) -> str:
    """The single `error:` line a refused command printed, checked for exit 2 and `fragments`."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_replay_table(tmp_path_factory.mktemp("replay") / "table.jsonl", rows=20, seed=0)


@pytest.fixture(scope="module")
def study(table, tmp_path_factory) -> str:
    """The storage URL of a database holding study `S`, two objectives, searched on replay."""
    storage = f"sqlite:///{tmp_path_factory.mktemp('db') / 'studies.db'}"
    result = cli(
        "search", "launch", "--space", "primer", "--pool", str(table), *OBJECTIVES,
        "--trials", "4", "--workers", "0", "--study", "S", "--storage", storage,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return storage


@pytest.mark.parametrize(
    "plot",
    ["nodir/x/q.png", "n" * 300 + ".png", "/proc/self/x.png"],
    ids=["missing-directory", "300-character-name", "under-proc"],
)
def test_a_plot_that_cannot_be_written_is_one_line(plot, study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("pareto", "S", "--storage", study, "--plot", plot)
    one_error_line(result, "--plot")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "path, new_dirs, message",
    [
        ("nodir/x.json", False, "directory 'nodir' does not exist"),
        ("n" * 256, True, "name of 256 bytes is too long"),
        ("/".join(["d" * 200] * 21), True, "the path is too long"),
        ("/proc/self/x.json", True, "/proc holds no files"),
        ("/sys/x.json", True, "/sys holds no files"),
        ("file.txt/x.json", True, "is not a directory"),
    ],
    ids=["missing-dir", "long-name", "long-path", "proc", "sys", "file-as-directory"],
)
def test_output_paths_that_could_not_be_written_are_refused(
    path, new_dirs, message, tmp_path, monkeypatch
):
    from tnas.safety import UnsafeInput, output_path

    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("x")
    with pytest.raises(UnsafeInput, match=message) as info:
        output_path(path, "--out", new_dirs=new_dirs)
    assert "\n" not in str(info.value)


def test_output_paths_in_directories_a_writer_creates_pass(tmp_path):
    from tnas.safety import output_path

    assert output_path(tmp_path / "new" / "x.json") == tmp_path / "new" / "x.json"
    assert output_path(tmp_path / "x.json", new_dirs=False) == tmp_path / "x.json"


def test_a_plot_write_that_fails_late_is_one_line(study, tmp_path):
    from tnas.search.db import Database
    from tnas.search.plots import plot_fronts

    db = Database(study)
    try:
        with pytest.raises(ValueError, match="cannot write .*No such file or directory") as info:
            plot_fronts(db, ["S"], tmp_path / "gone" / "front.png")  # past the CLI's check
    finally:
        db.close()
    assert "\n" not in str(info.value)


def test_calibrate_refuses_an_unwritable_out_before_measuring(tmp_path, monkeypatch):
    import tnas.workers.calibrate

    measured = []
    monkeypatch.setattr(tnas.workers.calibrate, "calibrate", lambda *a, **k: measured.append(a))
    monkeypatch.chdir(tmp_path)
    result = cli("predictors", "calibrate", "--budget", "2", "--out", "nodir/lat.json")
    one_error_line(result, "--out 'nodir/lat.json'", "directory 'nodir' does not exist")
    assert measured == []


def test_calibrate_that_cannot_save_is_one_line(tmp_path, monkeypatch):
    import tnas.workers.calibrate

    class Table:
        def save(self, path):
            raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(tnas.workers.calibrate, "calibrate", lambda *a, **k: Table())
    result = cli("predictors", "calibrate", "--out", str(tmp_path / "lat.json"))
    one_error_line(result, "cannot write", "Permission denied")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["space", "sample", "simq", "--seed", "-1"], "--seed must be from 0"),
        (["space", "sample", "simq", "--seed", str(10**30)], "--seed must be from 0"),
        (["space", "sample", "simq", "-n", "-1"], "-n must be from 0"),
        (["space", "show", "simq", "--seed", "-1"], "--seed must be from 0"),
        (["predictors", "calibrate", "--seed", "-1", "--space", "nodir.yaml"], "--seed must be"),
    ],
    ids=["negative-seed", "huge-seed", "negative-n", "show-negative-seed", "calibrate-seed"],
)
def test_seeds_and_counts_out_of_range_are_one_line(args, fragment):
    one_error_line(cli(*args), fragment)


def test_model_summary_refuses_a_sequence_it_would_allocate(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(cli("space", "sample", "simq", "-n", "1").stdout)
    for seq_len in ("-5", "99999999999"):
        one_error_line(cli("model", "summary", str(config), "--seq-len", seq_len), "--seq-len")


def test_dashboard_on_a_busy_port_is_one_line(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("os.execvp", lambda *argv: started.append(argv))
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("dashboard", "--storage", storage, "--port", str(port))
    line = one_error_line(result)
    assert line == f"error: port {port} on 127.0.0.1 is in use; pass --port"
    assert started == []


def test_dashboard_on_a_free_port_starts(tmp_path, monkeypatch):
    started = []

    def execvp(program, argv):
        started.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr("os.execvp", execvp)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--port", str(port))
    assert result.exit_code == 0, result.output
    assert started and started[0][-2:] == ["--port", str(port)]


def test_dashboard_on_an_address_of_another_machine_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("os.execvp", lambda *argv: pytest.fail("the dashboard was started"))
    result = cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--host", "192.0.2.1")
    one_error_line(result, "cannot listen on 192.0.2.1:8080")


@pytest.mark.parametrize(
    "row, fragment",
    [
        ([1, 2], "a row must be an object"),
        ("just text", "a row must be an object"),
        ({"metrics": [0.5, 3.0]}, "metrics must be an object of numbers, got a list"),
        ({"metrics": {"accuracy": "high"}}, "metric 'accuracy' must be a number, got 'high'"),
        ({"metrics": {"accuracy": [1]}}, "metric 'accuracy' must be a number, got a list"),
        ({"metrics": {"accuracy": {"a": 1}}}, "metric 'accuracy' must be a number, got an obj"),
        ({"metrics": {"accuracy": True}}, "metric 'accuracy' must be a number, got a boolean"),
        ({"metrics": {"accuracy": 1e308 * 10, "latency_ms": 1}}, None),  # a number, inf
        ({"metrics": {"accuracy": 0.5}, "status": "maybe"}, "status must be 'ok' or 'failed'"),
    ],
    ids=[
        "list-row",
        "string-row",
        "metrics-list",
        "metric-text",
        "metric-list",
        "metric-object",
        "metric-bool",
        "metric-inf",
        "unknown-status",
    ],
)
def test_a_bad_replay_row_is_one_line_naming_file_and_line(row, fragment, table, tmp_path):
    good = table.read_text().splitlines()[0]
    if isinstance(row, dict):
        row = {"config": json.loads(good)["config"]} | row
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + json.dumps(row) + "\n")
    result = cli(
        "search", "launch", "--space", "primer", "--evaluator", f"replay:{bad}", *OBJECTIVES,
        "--trials", "1", "--workers", "0", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
    )  # fmt: skip
    if fragment is None:
        assert result.exit_code == 0, result.output
        return
    one_error_line(result, f"{bad}:2: ", fragment)


def test_a_replay_table_without_a_pool_searches_the_configs_it_records(table, tmp_path):
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli(
        "search", "launch", "--space", "primer", "--evaluator", f"replay:{table}", *OBJECTIVES,
        "--trials", "8", "--workers", "0", "--study", "R", "--storage", storage,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="R", storage=storage).get_trials()
    recorded = {
        ArchConfig.from_dict(json.loads(line)["config"]).hash
        for line in table.read_text().splitlines()
    }
    assert [t.user_attrs.get("reason") for t in trials if t.state.name == "FAIL"] == []
    evaluated = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(evaluated) >= 8
    assert {t.user_attrs["config_hash"] for t in evaluated} <= recorded


def test_a_pool_the_replay_table_does_not_record_is_refused(table, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(cli("space", "sample", "primer", "-n", "3", "--seed", "99").stdout)
    result = cli(
        "search", "launch", "--space", "primer", "--evaluator", f"replay:{table}",
        "--pool", str(pool), *OBJECTIVES, "--trials", "4", "--workers", "0",
        "--storage", f"sqlite:///{tmp_path / 'x.db'}",
    )  # fmt: skip
    one_error_line(result, "the replay table answers none of the 3 configs of the pool")
    assert not (tmp_path / "x.db").exists()  # refused before the database is opened


TINY = {
    "name": "tiny",
    "global": {"d_model": {"choices": [32, 64]}, "n_layers": 1, "vocab_size": 64},
    "shared": {"mixer": "attention", "n_heads": 2, "ffn_dim": 64},
}


def test_a_table_of_the_whole_space_leaves_the_sampler_free(tmp_path):
    from tnas.space import DesignSpace
    from tnas.workers.replay import ReplayError, ReplayEvaluator, write_table

    space = DesignSpace.from_dict(TINY)
    configs = [space.from_flat({"d_model": width}) for width in (32, 64)]
    row = {"status": "ok", "reason": None, "metrics": {"accuracy": 0.5}}
    path = tmp_path / "table.jsonl"
    write_table(path, [(config, row) for config in configs])
    assert ReplayEvaluator(path).search_pool(space) is None  # a benchmark: samplers compare
    write_table(path, [(configs[1], row)])
    assert ReplayEvaluator(path).search_pool(space) == [configs[1]]
    write_table(path, [(ArchConfig(n_layers=3), row)])
    with pytest.raises(ReplayError, match="records none of the configs of space 'tiny'"):
        ReplayEvaluator(path).search_pool(space)


def test_version_prints_the_installed_version():
    result = cli("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"tnas {version('tnas')}\n"


def test_the_search_progress_bar_shows_elapsed_time_and_an_eta(table, tmp_path):
    result = cli(
        "search", "launch", "--space", "primer", "--evaluator", f"replay:{table}", *OBJECTIVES,
        "--trials", "3", "--workers", "0", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bar = next(line for line in result.stdout.splitlines() if "3/3" in line)
    assert "ETA" in bar
    assert bar.count("0:00:") == 2  # elapsed, then the time remaining


def leaf_commands(command, path=()):
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if hasattr(sub, "commands"):
            yield from leaf_commands(sub, (*path, name))
        else:
            yield (*path, name), sub


def test_every_option_says_its_default():
    """Typer shows a default that is not None; an option whose default is None says in its
    help what it means: `[40]`, `[none]`, `(default: ...)`."""
    silent = []
    for path, command in leaf_commands(typer.main.get_command(app)):
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help" or param.is_flag:
                continue
            if param.required or (param.default is not None and param.show_default is not False):
                continue
            text = param.help or ""
            if not (text.rstrip().endswith("]") or "(default" in text):
                silent.append(f"tnas {' '.join(path)} {param.opts[0]}: {text!r}")
    assert silent == []


def test_bracketed_defaults_survive_the_help_markup():
    result = cli("search", "launch", "--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0
    for shown in ("[primer]", "[digits]", "[nsga2]", "[40]"):
        assert shown in result.stdout, shown
    for command in (["train"], ["profile"]):
        help_text = cli(*command, "--help", env={"COLUMNS": "80"}).stdout
        assert "[default: cpu]" in help_text


def test_a_misspelt_preset_space_is_named_as_such_in_a_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["search", "launch", "--space", "primre", "--trials", "2", "--storage", "s.db"]
    one_error_line(runner.invoke(app, args), "primre: unknown preset; valid: primer")
    assert not (tmp_path / "s.db").exists()
