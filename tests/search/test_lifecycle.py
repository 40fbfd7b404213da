"""Study lifecycle (delete, rename, copy, export), stale records, read-only opening, and
listings that fit an 80-column terminal.

One replay search (`tnas.launch` on a table from `write_replay_table`) makes a template
database, with predictor rounds and a second, hand-made study beside it; each test works on
its own copy of the file.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from rich.console import Console
from typer.testing import CliRunner

import tnas.cli
from tests.conftest import write_replay_table
from tnas.cli import app, fit_table
from tnas.launch import launch
from tnas.search.db import Database
from tnas.search.lifecycle import (
    StudyError,
    clear_stale_records,
    copy_study,
    delete_study,
    export_study,
    rename_study,
    study_records,
)
from tnas.search.query import front_history, list_trials, pareto_rows, predictor_report
from tnas.space import ArchConfig

STUDY = "primer-digits-nsga2-s0"  # a 22-character name, as `tnas search launch` derives them
OTHER = "other"
TRIALS = 8
ROUNDS = [
    {"round": r, "objective": o, "family": "ridge", "n_train": 10 * r, "n_test": 4, "kendall": 0.5}
    for r in (1, 2)
    for o in ("accuracy", "latency_ms")
]
OBJECTIVES = [{"name": "accuracy", "direction": "max"}, {"name": "latency_ms", "direction": "min"}]

runner = CliRunner()
optuna.logging.set_verbosity(optuna.logging.WARNING)


def cli(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def one_error_line(result) -> str:
    """The one line of a refused command (exit 2), `error: ...`."""
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_replay_table(tmp_path_factory.mktemp("replay") / "table.jsonl", 24, seed=0)


@pytest.fixture(scope="module")
def template(tmp_path_factory, table) -> Path:
    """A database with study STUDY (a replay search of TRIALS trials, two predictor rounds per
    objective) and study OTHER (no trials, one snapshot, one round)."""
    path = tmp_path_factory.mktemp("template") / "runs.db"
    launch(
        space="primer",
        evaluator=f"replay:{table}",
        trials=TRIALS,
        workers=1,
        storage=str(path),
        study=STUDY,
    )
    with Database(path) as db:
        for record in ROUNDS:
            db.save_predictor_round(STUDY, record)
        optuna.create_study(
            study_name=OTHER, storage=db.optuna_storage(), directions=["maximize", "minimize"]
        )
        db.save_snapshot(OTHER, OBJECTIVES, 0, 0.0, [0.0, 0.0], [])
        db.save_predictor_round(OTHER, ROUNDS[0])
    return path


@pytest.fixture
def url(template, tmp_path) -> str:
    """A copy of the template database for one test."""
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", tmp_path / f"runs.db{suffix}")
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def db(url):
    database = Database(url)
    yield database
    database.close()


def state_of(db: Database) -> dict:
    """Everything the lifecycle commands may change: studies, their trials and tnas's rows."""
    names = sorted(study.study_name for study in db.optuna_storage().get_all_studies())
    return {name: study_records(db, name) for name in names}


def postgres_or_skip(request) -> str:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL is not installed")
    return request.getfixturevalue("postgres_url")


# delete --------------------------------------------------------------------------------------


def test_delete_removes_trials_snapshots_and_predictor_rounds(db):
    before = study_records(db, STUDY)
    assert before["trials"] == TRIALS and before["front_snapshots"] > 0
    assert before["predictor_rounds"] == len(ROUNDS)
    kept = study_records(db, OTHER)
    deleted = delete_study(db, STUDY)
    assert deleted == before
    assert not db.study_exists(STUDY)
    assert set(db.count_study_records(STUDY).values()) == {0}
    assert study_records(db, OTHER) == kept  # only the study named
    with pytest.raises(LookupError, match="unknown study"):
        pareto_rows(db, STUDY)


def test_delete_refuses_a_study_with_a_live_driver_unless_forced(db):
    db.beat("d" * 32, STUDY, os.uname().nodename, os.getpid())  # this process: alive
    before = state_of(db)
    with pytest.raises(StudyError, match=r"has a live driver .*--force"):
        delete_study(db, STUDY)
    assert state_of(db) == before
    assert delete_study(db, STUDY, force=True)["driver_heartbeats"] == 1
    assert db.heartbeats(STUDY) == []


def test_cli_delete_asks_first_then_deletes(url):
    declined = cli("study", "delete", STUDY, "--storage", url, input="n\n")
    assert declined.exit_code == 1 and f"{TRIALS} trials" in declined.output
    assert cli("pareto", STUDY, "--storage", url).exit_code == 0
    deleted = cli("study", "delete", STUDY, "--storage", url, "--yes")
    assert deleted.exit_code == 0 and deleted.output.startswith(f"deleted study {STUDY}: ")
    for args in (["pareto", STUDY], ["trials", STUDY], ["predictors", "report", STUDY]):
        assert "unknown study" in one_error_line(cli(*args, "--storage", url))


# rename --------------------------------------------------------------------------------------


def test_rename_keeps_trials_snapshots_and_rounds(url):
    with Database(url) as db:
        front, history = pareto_rows(db, STUDY), front_history(db, STUDY)
        trials, rounds = list_trials(db, STUDY), predictor_report(db, STUDY)
    result = cli("study", "rename", STUDY, "baseline", "--storage", url)
    assert result.exit_code == 0 and "renamed study" in result.output, result.output
    shown = json.loads(cli("pareto", "baseline", "--storage", url, "--format", "json").output)
    assert shown == front
    with Database(url) as db:
        assert front_history(db, "baseline") == history
        assert list_trials(db, "baseline") == trials
        assert predictor_report(db, "baseline") == rounds
        assert not db.study_exists(STUDY) and set(db.count_study_records(STUDY).values()) == {0}
        attrs = db.optuna_storage().get_study_user_attrs(
            db.optuna_storage().get_study_id_from_name("baseline")
        )
        assert attrs["tnas"]["run"]["study"] == "baseline"
    assert "unknown study" in one_error_line(cli("pareto", STUDY, "--storage", url))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("nope", "fresh", "unknown study 'nope'"),
        (STUDY, OTHER, "a study named 'other' exists"),
        (STUDY, STUDY, "already has that name"),
        (STUDY, "../up", "is not allowed"),
    ],
    ids=["no-such-study", "name-taken", "same-name", "bad-name"],
)
def test_rename_refusals_are_one_line_and_change_nothing(url, old, new, message):
    with Database(url) as db:
        before = state_of(db)
    assert message in one_error_line(cli("study", "rename", old, new, "--storage", url))
    with Database(url) as db:
        assert state_of(db) == before
        with pytest.raises((LookupError, ValueError), match=message.replace(".", r"\.")):
            rename_study(db, old, new)
        assert state_of(db) == before


def test_a_stale_name_is_taken_over_by_a_rename(db):
    db.save_snapshot("fresh", OBJECTIVES, 1, 0.0, [0.0, 0.0], [])  # left by a deleted study
    rename_study(db, OTHER, "fresh")
    assert db.count_study_records("fresh")["front_snapshots"] == 1  # OTHER's, not the stale one


# copy ----------------------------------------------------------------------------------------


def assert_same_study(source: Database, name: str, target: Database, new_name: str) -> None:
    assert pareto_rows(target, new_name) == pareto_rows(source, name)
    assert list_trials(target, new_name) == list_trials(source, name)
    assert predictor_report(target, new_name) == predictor_report(source, name)
    copied = [
        {k: v for k, v in row.items() if k != "id"} for row in front_history(target, new_name)
    ]
    original = [{k: v for k, v in row.items() if k != "id"} for row in front_history(source, name)]
    assert copied == original


def test_copy_sqlite_to_a_new_sqlite_file(url, tmp_path):
    target_path = tmp_path / "elsewhere" / "copy.db"
    target_path.parent.mkdir()
    result = cli("study", "copy", STUDY, "--storage", url, "--to", str(target_path))
    assert result.exit_code == 0, result.output
    assert f"{TRIALS} trials" in result.output and "A new study" not in result.output
    with Database(url) as source, Database(target_path) as target:
        assert_same_study(source, STUDY, target, STUDY)
        assert study_records(source, STUDY)["trials"] == TRIALS  # the source is unchanged
        assert [s.study_name for s in target.optuna_storage().get_all_studies()] == [STUDY]


def test_copy_within_one_database_needs_a_new_name(url):
    assert "exists" in one_error_line(cli("study", "copy", STUDY, "--storage", url))
    assert cli("study", "copy", STUDY, "twin", "--storage", url).exit_code == 0
    with Database(url) as db:
        assert_same_study(db, STUDY, db, "twin")
        assert db.heartbeats("twin") == []


def test_copy_sqlite_to_postgresql(db, request):
    pg_url = postgres_or_skip(request)
    name = f"copied-{os.getpid()}"
    with Database(pg_url) as target:
        copy_study(db, STUDY, target, name)
        assert_same_study(db, STUDY, target, name)
        with pytest.raises(StudyError, match="exists"):
            copy_study(db, STUDY, target, name)
        front = pareto_rows(target, name)
        rename_study(target, name, f"{name}-renamed")
        assert pareto_rows(target, f"{name}-renamed") == front
        deleted = delete_study(target, f"{name}-renamed")
        assert deleted["trials"] == TRIALS and deleted["predictor_rounds"] == len(ROUNDS)
        assert not target.study_exists(f"{name}-renamed")
        assert set(target.count_study_records(f"{name}-renamed").values()) == {0}


# export --------------------------------------------------------------------------------------


def test_export_writes_one_config_per_front_member_that_round_trips(db, tmp_path):
    out = tmp_path / "front"
    result = cli("study", "export", STUDY, "--out", str(out), "--storage", db.url)
    assert result.exit_code == 0, result.output
    front = pareto_rows(db, STUDY)
    index = json.loads((out / "front.json").read_text())
    assert [m["trial_number"] for m in index["members"]] == [row["number"] for row in front]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [m["folder"] for m in index["members"]] + ["front.csv", "front.json"]
    )
    for member, row in zip(index["members"], front, strict=True):
        config = ArchConfig.from_json((out / member["folder"] / "config.json").read_text())
        assert config.hash == member["config_hash"] == row["config_hash"]
        assert config.to_dict() == row["config"]
        assert member["values"] == {"accuracy": row["accuracy"], "latency_ms": row["latency_ms"]}
    csv_lines = (out / "front.csv").read_text().splitlines()
    assert csv_lines[0] == "folder,trial_number,config_hash,accuracy,latency_ms"
    assert len(csv_lines) == len(front) + 1
    again = cli("study", "export", STUDY, "--out", str(out), "--storage", db.url)
    assert "not empty" in one_error_line(again)


@pytest.mark.parametrize(
    "study, out, message",
    [("nope", "fresh", "unknown study"), (OTHER, "fresh", "no Pareto front yet")],
    ids=["no-such-study", "no-front"],
)
def test_export_refusals_write_nothing(db, tmp_path, study, out, message):
    with pytest.raises(LookupError, match=message):
        export_study(db, study, tmp_path / out)
    assert not (tmp_path / out).exists()


def test_export_refuses_a_path_climbing_out(url):
    assert "'..'" in one_error_line(
        cli("study", "export", STUDY, "--out", "../x", "--storage", url)
    )


# stale records -------------------------------------------------------------------------------


def test_a_new_study_with_a_deleted_ones_name_shows_no_old_snapshots(url, table):
    with Database(url) as db:
        old = len(front_history(db, STUDY))
        assert old > 2
    optuna.delete_study(study_name=STUDY, storage=url)  # Optuna's delete-study: ours remain
    assert "unknown study" in one_error_line(cli("pareto", STUDY, "--storage", url))
    assert "unknown study" in one_error_line(cli("predictors", "report", STUDY, "--storage", url))
    launch(
        space="primer", evaluator=f"replay:{table}", trials=2, workers=1, storage=url, study=STUDY
    )
    with Database(url) as db:
        history = front_history(db, STUDY)
        assert 1 <= len(history) <= 2 and all(row["n_trials"] <= 2 for row in history)
        assert predictor_report(db, STUDY) == []
        assert {row["number"] for row in pareto_rows(db, STUDY)} <= {0, 1}


def test_clear_stale_records_deletes_only_those_of_missing_studies(db):
    db.save_snapshot("gone", OBJECTIVES, 1, 0.0, [0.0, 0.0], [])
    db.save_predictor_round("gone", ROUNDS[0])
    kept = db.count_study_records(STUDY)
    assert clear_stale_records(db, "gone") == {
        "driver_heartbeats": 0,
        "front_snapshots": 1,
        "predictor_rounds": 1,
    }
    assert set(clear_stale_records(db, STUDY).values()) == {0}
    assert db.count_study_records(STUDY) == kept


# read-only opening ---------------------------------------------------------------------------

READ_ONLY = {
    "studies": ["studies"],
    "trials": ["trials", STUDY],
    "pareto": ["pareto", STUDY],
    "report": ["predictors", "report", STUDY],
    "export": ["study", "export", STUDY, "--out", "{dir}/out"],
    "delete": ["study", "delete", STUDY, "--yes"],
    "rename": ["study", "rename", STUDY, "renamed"],
    "copy": ["study", "copy", STUDY, "--to", "{dir}/target.db"],
}


@pytest.mark.parametrize("args", list(READ_ONLY.values()), ids=list(READ_ONLY))
def test_commands_on_a_missing_sqlite_file_create_nothing(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    args = [arg.replace("{dir}", str(tmp_path)) for arg in args]
    line = one_error_line(cli(*args, "--storage", "new.db"))
    assert line == "error: no database at new.db"
    assert sorted(os.listdir(tmp_path)) == []


CORRUPTED = {
    "random": os.urandom(1024),
    "header-then-garbage": b"SQLite format 3\x00" + bytes(range(256)) * 4,
    "empty": b"",
}


@pytest.mark.parametrize("content", list(CORRUPTED.values()), ids=list(CORRUPTED))
@pytest.mark.parametrize("args", [["studies"], ["trials", STUDY]], ids=["studies", "trials"])
def test_a_corrupted_sqlite_file_is_one_line_and_left_untouched(tmp_path, args, content):
    path = tmp_path / "broken.db"
    path.write_bytes(content)
    one_error_line(cli(*args, "--storage", str(path)))
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["broken.db"]


# trials --------------------------------------------------------------------------------------


def test_trials_with_an_unknown_state_is_one_line(url):
    line = one_error_line(cli("trials", STUDY, "--state", "DONE", "--storage", url))
    assert line == "error: unknown state 'DONE'; valid: running, complete, pruned, fail, waiting"


def test_trials_json_carries_full_configs_and_hashes(url):
    rows = json.loads(cli("trials", STUDY, "--storage", url, "--format", "json").output)
    assert len(rows) == TRIALS
    for row in rows:
        assert len(row["config_hash"]) == 64
        assert ArchConfig.from_dict(row["config"]).hash == row["config_hash"]
        assert row["device"] is None  # the replay evaluator measures on no device


def test_trials_table_shows_each_trials_device(db, monkeypatch):
    fingerprint = {"device": "cuda", "id": "1a2b3c4d5e6f", "gpu": "NVIDIA H100 80GB HBM3"}
    study = optuna.load_study(study_name=OTHER, storage=db.optuna_storage())
    study.add_trial(
        optuna.trial.create_trial(values=[0.5, 3.0], user_attrs={"fingerprint": fingerprint})
    )
    assert list_trials(db, OTHER)[0]["device"] == "cuda 1a2b3c4d5e6f"
    monkeypatch.setattr(tnas.cli, "console", Console(width=80))
    narrow = cli("trials", OTHER, "--storage", db.url).output  # compact: the id's first 6
    assert "device" in narrow and "cuda 1a2b3c " in narrow, narrow
    monkeypatch.setattr(tnas.cli, "console", Console(width=200))
    wide = cli("trials", OTHER, "--storage", db.url).output
    assert "┃ device" in wide and "cuda 1a2b3c4d5e6f" in wide, wide


# 80 columns ----------------------------------------------------------------------------------


def assert_fits(output: str, width: int = 80) -> None:
    assert "…" not in output, output
    assert max(len(line) for line in output.splitlines()) <= width, output


@pytest.mark.parametrize(
    "args",
    [["studies"], ["trials", STUDY], ["predictors", "report", STUDY], ["pareto", STUDY]],
    ids=["studies", "trials", "report", "pareto"],
)
def test_listings_fit_80_columns_without_cut_headers(url, monkeypatch, args):
    monkeypatch.setattr(tnas.cli, "console", Console(width=80))
    result = cli(*args, "--storage", url)
    assert result.exit_code == 0, result.output
    assert_fits(result.output)
    words = set(re.split(r"[\s┃│]+", result.output))
    expected = {
        "studies": ["name", "objectives", "trials", "done", "front", "HV"],
        "trials": ["#", "state", "acc", "lat_ms", "hash", "reason"],
        "predictors": ["round", "objective", "family", "train", "test", "tau", "rho", "mape"],
        "pareto": ["number", "accuracy", "latency_ms", "config_hash"],
    }[args[0]]
    assert set(expected) <= words, result.output


def test_studies_as_json_and_csv(url):
    rows = json.loads(cli("studies", "--storage", url, "--format", "json").output)
    assert [row["name"] for row in rows] == [STUDY, OTHER]
    assert rows[0]["n_complete"] == TRIALS
    csv_text = cli("studies", "--storage", url, "--format", "csv").output
    assert csv_text.splitlines()[0].startswith("name,objectives,n_trials")


def test_wide_rows_fold_and_hide_columns_rather_than_cut_headers():
    rows = [
        {
            "number": number,
            "state": "COMPLETE",
            "accuracy": 0.91234567,
            "latency_ms": 12.3456789,
            "params_millions": 3.1415926,
            "device": "cuda 1a2b3c4d5e6f",
            "config_hash": "ab" * 32,
            "reason": "duplicate_in_flight of a config evaluated earlier",
            "duration_s": 123.456,
            "attempts": 1,
            "config": {"d_model": 64},
        }
        for number in range(3)
    ]
    table, hidden = fit_table(rows, "trials", 80, tnas.cli.TRIALS_STEPS)
    console = Console(width=80, file=io.StringIO())
    console.print(table)
    assert_fits(console.file.getvalue())
    assert "params_millions" in console.file.getvalue()  # an unknown name is kept whole
    assert "config" not in hidden  # a dict is never a column: --format json has it
    assert set(hidden) <= {"attempts", "duration_s", "device", "config_hash"}
    wide, hidden = fit_table(rows, "trials", 250)
    assert hidden == []
    console = Console(width=250, file=io.StringIO())
    console.print(wide)
    assert "┃ config_hash" in console.file.getvalue()  # wide enough: drawn as it always was


def test_listings_fit_an_80_column_terminal_given_by_columns(url):
    env = os.environ | {"COLUMNS": "80", "TERM": "dumb"}
    for args in (["studies"], ["trials", STUDY]):
        done = subprocess.run(
            [sys.executable, "-m", "tnas.cli", *args, "--storage", url],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert_fits(done.stdout)


def test_read_only_commands_leave_a_database_unchanged(url):
    path = Path(url.removeprefix("sqlite:///"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for args in (
        ["studies"],
        ["trials", STUDY],
        ["pareto", STUDY],
        ["predictors", "report", STUDY],
    ):
        assert cli(*args, "--storage", url).exit_code == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
