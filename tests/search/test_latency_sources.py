"""Latency sources of a search (`--latency [NAME=]measured|node:RESOURCE|table:FILE`): parsing,
`table:` predictions stored and shown as such end to end, `tnas pareto --measure`, and one-line
refusals of bad tables. Accuracy comes from a replay table, so nothing trains; the latency table
is calibrated for real, small."""

from __future__ import annotations

import json
import logging

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from tests.conftest import write_replay_table
from tnas.cli import app
from tnas.launch import launch, measure_front
from tnas.predictors.latency import LatencyPredictor, LatencyTable
from tnas.search.latency import parse_source, parse_sources
from tnas.search.run import RunError
from tnas.space import ArchConfig, load_space
from tnas.workers.calibrate import calibrate
from tnas.workers.tasks import parse_task

PROTOCOL = {"profile_seq_len": 16, "profile_repeats": 2}
runner = CliRunner()


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def edge_table(tmp_path_factory):
    """A latency table of the primer space calibrated here, under the run's protocol."""
    table = calibrate(load_space("primer"), budget=24, seq_len=16, repeats=2, task="digits")
    path = tmp_path_factory.mktemp("tables") / "edge.json"
    table.save(path)
    return path


@pytest.fixture(scope="module")
def accuracy_table(tmp_path_factory):
    return write_replay_table(tmp_path_factory.mktemp("replay") / "table.jsonl", 30, seed=3)


def run(tmp_path, accuracy_table, *latency, **settings):
    defaults = {
        "space": "primer",
        "evaluator": f"replay:{accuracy_table}",
        "objectives": ["accuracy:max", "latency_ms:min"],
        "latency": list(latency),
        "trials": 6,
        "workers": 1,
        "sampler": "random",
        "study": "edge",
        "storage": f"sqlite:///{tmp_path / 'edge.db'}",
    }
    return defaults | PROTOCOL | settings


def test_sources_are_named_by_kind_and_refused_in_one_line():
    sources = parse_sources(["measured", "node:rpi5", "phone=table:/t/edge.json"])
    assert [(s.name, s.kind, s.target) for s in sources] == [
        ("local", "measured", None),
        ("rpi5", "node", "rpi5"),
        ("phone", "table", "/t/edge.json"),
    ]
    assert parse_source("table:dir/edge.json").metric == "latency_ms@edge"
    for bad in ("node:", "tables:x", "measured:x", "a b=measured", ""):
        with pytest.raises(ValueError, match="--latency") as err:
            parse_source(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="have one name, 'edge'"):
        parse_sources(["table:a/edge.json", "table:b/edge.json"])


def test_a_table_source_is_stored_and_shown_as_a_prediction(tmp_path, accuracy_table, edge_table):
    result = launch(**run(tmp_path, accuracy_table, f"table:{edge_table}"))

    table = LatencyTable.load(edge_table)
    predictor = LatencyPredictor(table)
    digits = parse_task("digits")
    trials = optuna.load_study(study_name="edge", storage=result.storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    for trial in complete:
        config = digits.adapt(ArchConfig.from_dict(trial.user_attrs["config"]))
        expected = predictor.predict(config, batch=1, seq_len=min(16, config.max_seq_len))
        assert trial.values[1] == pytest.approx(expected, rel=1e-12)
        assert trial.user_attrs["metrics"]["latency_ms@edge"] == trial.values[1]
        where = trial.user_attrs["latency"]["edge"]
        assert where["kind"] == "predicted" and where["device"] == table.device_id
        assert where["calibrated"] == table.calibrated and where["table"] == str(edge_table)

    storage = ["--storage", result.storage]
    shown = runner.invoke(app, ["trials", "edge", *storage], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    assert "lat_ms*" in shown.output or "latency_ms*" in shown.output
    assert f"* latency_ms predicted by {edge_table}" in shown.output.replace("\n", "")
    as_json = runner.invoke(app, ["trials", "edge", *storage, "--format", "json"])
    assert all(row["latency"]["edge"]["kind"] == "predicted" for row in json.loads(as_json.output))
    assert "latency_ms*" in shown.output or "lat_ms*" in shown.output
    listed = runner.invoke(app, ["pareto", "edge", *storage, "--format", "json"])
    rows = json.loads(listed.output)
    assert rows and all(row["predicted"] == ["latency_ms"] for row in rows)


def test_pareto_measure_puts_the_predictions_beside_real_latency(
    tmp_path, accuracy_table, edge_table
):
    result = launch(**run(tmp_path, accuracy_table, f"table:{edge_table}"))

    rows, summary = measure_front("edge", "local", storage=result.storage)

    front = {row["number"] for row in result.front}
    assert {row["number"] for row in rows} == front
    for row in rows:
        assert row["measured_ms"] > 0
        error = 100 * (row["latency_ms"] - row["measured_ms"]) / row["measured_ms"]
        assert row["error_pct"] == pytest.approx(error)
    assert f"{len(rows)} front members measured on local" in summary and "MAPE" in summary
    shown = runner.invoke(app, ["pareto", "edge", "--storage", result.storage, "--measure", "x"])
    assert shown.exit_code == 2 and "must be local or node:RESOURCE" in shown.output


def test_several_latency_objectives_at_once(tmp_path, accuracy_table, edge_table):
    settings = run(
        tmp_path,
        accuracy_table,
        "measured",
        f"table:{edge_table}",
        objectives=["accuracy:max", "latency_ms@local:min", "latency_ms@edge:min"],
    )
    result = launch(**settings)

    trials = optuna.load_study(study_name="edge", storage=result.storage).get_trials()
    for trial in (t for t in trials if t.state == TrialState.COMPLETE):
        metrics = trial.user_attrs["metrics"]
        assert trial.values[1] == metrics["latency_ms"] == metrics["latency_ms@local"]
        assert trial.values[2] == metrics["latency_ms@edge"] != trial.values[1]
        assert set(trial.user_attrs["latency"]) == {"edge"}


def test_bad_tables_are_one_line_and_write_nothing(tmp_path, accuracy_table, edge_table):
    data = json.loads(edge_table.read_text())
    other_protocol = tmp_path / "other.json"
    other_protocol.write_text(json.dumps(data | {"protocol": data["protocol"] | {"repeats": 9}}))
    other_space = tmp_path / "space.json"
    other_space.write_text(json.dumps(data | {"space": {"name": "simq", "digest": "0" * 16}}))
    other_task = tmp_path / "task.json"
    other_task.write_text(json.dumps(data | {"task": None}))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    cases = {
        tmp_path / "missing.json": "no such file",
        corrupt: "corrupt.json",
        other_protocol: "calibrated with repeats 9; this study measures with repeats 2",
        other_space: "a table for another space",
        other_task: "calibrated for no task .*, not for task digits",
    }
    for path, message in cases.items():
        with pytest.raises(RunError, match=message) as err:
            launch(**run(tmp_path, accuracy_table, f"table:{path}"))
        assert "\n" not in str(err.value)
    assert not (tmp_path / "edge.db").exists()

    objectives = ["--objective", "accuracy:max", "--objective", "latency_ms@phone:min"]
    shown = runner.invoke(
        app,
        ["search", "launch", "--space", "primer", "--evaluator", f"replay:{accuracy_table}",
         *objectives, "--storage", f"sqlite:///{tmp_path / 'edge.db'}"],
    )  # fmt: skip
    assert shown.exit_code == 2
    assert "unknown objective 'latency_ms@phone'" in shown.output
    assert not (tmp_path / "edge.db").exists()


def test_node_sources_need_trials_that_train(tmp_path, accuracy_table):
    with pytest.raises(RunError, match="node:rpi5 profiles trained models on a Ray node"):
        launch(**run(tmp_path, accuracy_table, "node:rpi5"))


def test_a_relative_table_is_stored_absolute_under_its_name(tmp_path, accuracy_table, edge_table,
                                                            monkeypatch):  # fmt: skip
    monkeypatch.chdir(edge_table.parent)
    result = launch(**run(tmp_path, accuracy_table, "table:edge.json"))

    study = optuna.load_study(study_name="edge", storage=result.storage)
    assert study.user_attrs["tnas"]["run"]["latency"] == [f"edge=table:{edge_table}"]
    np.testing.assert_equal(len(study.get_trials()), 6)


def test_the_latency_sources_are_part_of_a_studys_identity(tmp_path, accuracy_table, edge_table):
    launch(**run(tmp_path, accuracy_table, f"table:{edge_table}", trials=2))

    with pytest.raises(RunError, match=r"latency \[edge=table:.*\] -> \[local=measured\]"):
        launch(**run(tmp_path, accuracy_table, "measured", trials=4))
    resumed = launch(**run(tmp_path, accuracy_table, f"table:{edge_table}", trials=3))
    assert resumed.progress.finished == 3


def test_a_table_calibrated_again_in_place_is_refused_on_resume(
    tmp_path, accuracy_table, edge_table
):
    path = tmp_path / "phone.json"
    table = LatencyTable.load(edge_table)
    table.save(path)
    settings = run(tmp_path, accuracy_table, f"phone=table:{path}", trials=2)
    launch(**settings)
    stored = optuna.load_study(study_name="edge", storage=settings["storage"])
    before = [t.number for t in stored.get_trials()]

    table.entries = {key: 2 * ms for key, ms in table.entries.items()}  # calibrated again
    table.save(path)
    refused = runner.invoke(app, ["search", "resume", "edge", "--trials", "4", "--storage",
                                  settings["storage"]])  # fmt: skip
    assert refused.exit_code == 2
    assert refused.output.count("\n") == 1
    assert (
        f"latency table phone changed (digest {LatencyTable.load(edge_table).digest} -> "
        f"{table.digest}); put back the files it was made with, or launch a new --study"
        in refused.output
    )
    stored = optuna.load_study(study_name="edge", storage=settings["storage"])
    assert [t.number for t in stored.get_trials()] == before  # nothing written

    LatencyTable.load(edge_table).save(path)  # the table the study was made with, back
    assert launch(**settings | {"trials": 4}).progress.finished == 4
