"""A study's identity is fixed when it is created, and its paths are stored absolute.

Searches here replay a recorded table (nothing is trained), each study in its own SQLite file.
"""

from __future__ import annotations

import json
import logging

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import write_replay_table
from tnas.cli import app
from tnas.launch import launch, resume
from tnas.search.run import RunError
from tnas.search.settings import ATTR
from tnas.space import load_space

OBJECTIVES = ["accuracy:max", "latency_ms:min"]


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@pytest.fixture
def table(tmp_path):
    return write_replay_table(tmp_path / "table.jsonl", rows=40, seed=0)


def settings(tmp_path, table, **overrides) -> dict:
    return {
        "space": "primer",
        "objectives": OBJECTIVES,
        "trials": 4,
        "workers": 1,
        "sampler": "random",
        "study": "s1",
        "storage": f"sqlite:///{tmp_path / 'studies.db'}",
        "pool": str(table),
    } | overrides


def stored(run: dict) -> tuple[int, dict]:
    study = optuna.load_study(study_name=run["study"], storage=run["storage"])
    return len(study.get_trials()), study.user_attrs[ATTR]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"space": "simq"}, "space primer (digest"),
        ({"task": "textlm"}, "task digits -> textlm"),
        ({"constraints": ["params <= 5e6"]}, "constraints [] -> [params <= 5e6]"),
        ({"evaluator": "replay:{other}", "pool": "{other}"}, "evaluator replay:"),
    ],
    ids=["space", "task", "constraints", "evaluator"],
)
def test_a_launch_that_differs_from_the_study_is_refused_naming_it_and_writes_nothing(
    tmp_path, table, change, named
):
    run = settings(tmp_path, table)
    launch(**run)
    before = stored(run)
    other = write_replay_table(tmp_path / "other.jsonl", rows=40, seed=1)
    change = {k: v.format(other=other) if isinstance(v, str) else v for k, v in change.items()}

    with pytest.raises(RunError) as refused:
        launch(**run | change | {"trials": 8})

    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("study 's1' was created with other settings: ")
    assert named in message
    assert stored(run) == before


def test_the_issue_repro_another_space_is_one_line_and_exit_2_not_a_traceback(tmp_path, table):
    run = settings(tmp_path, table)
    launch(**run)
    args = ["search", "launch", "--study", "s1", "--storage", run["storage"], "--trials", "6"]
    args += ["--pool", str(table), "--sampler", "random", "--workers", "1"]

    refused = CliRunner().invoke(app, [*args, "--space", "simq"])

    assert refused.exit_code == 2
    assert "Traceback" not in refused.output
    assert refused.output.startswith("error: study 's1' was created with other settings: space")
    assert stored(run)[0] == 4


def test_the_same_identity_continues_the_study_and_a_resume_extends_its_budget(tmp_path, table):
    run = settings(tmp_path, table)
    launch(**run)

    again = launch(**run | {"trials": 6, "sampler": "nsga2"})  # budget and sampler may change
    assert again.progress.finished == 6

    extended = resume("s1", storage=run["storage"], trials=9, workers=2)

    assert extended.progress.finished == 9
    assert stored(run)[1]["run"]["trials"] == 9  # a later plain resume keeps the new budget
    assert stored(run)[1]["run"]["workers"] == 2


def test_resume_changes_only_what_does_not_change_the_measurements(tmp_path, table):
    run = settings(tmp_path, table)
    launch(**run)

    with pytest.raises(RunError, match="resume cannot change steps, task; it can change trials"):
        resume("s1", storage=run["storage"], steps=10, task="textlm")


def test_an_edited_space_file_is_told_apart_on_resume(tmp_path):
    space_file = tmp_path / "mine.yaml"
    data = {
        "name": "mine",
        "global": {"d_model": {"choices": [64, 128]}, "n_layers": {"low": 1, "high": 2}},
        "per_layer": {"mixer": {"choices": ["attention", "pool"]}},
    }
    space_file.write_text(yaml.safe_dump(data))
    space = load_space(str(space_file))
    rows = []
    for seed in range(40):
        import numpy as np

        config = space.sample(np.random.default_rng(seed))
        rows.append({"config": config.to_dict(), "metrics": {"accuracy": 0.5, "latency_ms": 1.0}})
    table = tmp_path / "mine.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = settings(tmp_path, table, space=str(space_file), trials=2)
    launch(**run)
    data["global"]["d_model"]["choices"] = [64, 96]
    space_file.write_text(yaml.safe_dump(data))

    with pytest.raises(RunError, match=r"space .*mine.yaml \(digest \w+\) -> .*mine.yaml") as err:
        resume("s1", storage=run["storage"], trials=3)
    assert str(err.value).endswith("; put back the files it was made with, or launch a new --study")


def test_paths_are_stored_absolute_and_a_run_file_resolves_them_from_its_folder(
    tmp_path, monkeypatch
):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_replay_table(runs / "table.jsonl", rows=40, seed=0)
    run_file = runs / "search.yaml"
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    run_file.write_text(
        yaml.safe_dump(
            {
                "space": "primer",
                "pool": "table.jsonl",  # beside the run file, not in the current folder
                "trials": 3,
                "workers": 1,
                "sampler": "random",
                "study": "files",
                "storage": storage,
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    launch(run_file)

    stored_run = stored({"study": "files", "storage": storage})[1]["run"]
    assert stored_run["pool"] == str(runs / "table.jsonl")
    assert stored_run["evaluator"] == f"replay:{runs / 'table.jsonl'}"
    monkeypatch.chdir(tmp_path)  # resume from yet another folder
    assert resume("files", storage=storage, trials=5).progress.finished == 5


def test_a_relative_pool_on_the_command_line_is_stored_absolute(tmp_path, monkeypatch):
    write_replay_table(tmp_path / "table.jsonl", rows=40, seed=0)
    monkeypatch.chdir(tmp_path)
    run = settings(tmp_path, "table.jsonl", trials=2)

    launch(**run)

    assert stored(run)[1]["run"]["pool"] == str(tmp_path / "table.jsonl")


def test_a_wrong_reference_point_is_refused_before_the_study_is_written(tmp_path, table):
    run = settings(tmp_path, table, ref_point=[0.5])

    with pytest.raises(RunError, match=r"reference point \[0.5\] has 1 value for 2 objectives"):
        launch(**run)

    assert "s1" not in [s.study_name for s in optuna.get_all_study_summaries(run["storage"])]


def test_a_study_keeps_its_reference_point(tmp_path, table):
    run = settings(tmp_path, table, ref_point=[0.0, 100.0])
    launch(**run)

    with pytest.raises(RunError, match=r"measures hypervolume from reference point \[0.0, 100"):
        launch(**run | {"ref_point": [0.1, 50.0], "trials": 6})

    assert launch(**run | {"trials": 6}).progress.finished == 6
