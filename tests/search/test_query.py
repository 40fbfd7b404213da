"""The query side of the search: study and trial listings, fronts, output formats and plots.

Studies are built by hand in a SQLite file under tmp_path, the way the driver writes them:
the "tnas" study attribute, per-trial user attributes, and a front snapshot in tnas's tables.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from tnas.search.db import Database
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.search.plots import plot_fronts
from tnas.search.query import (
    dashboard_command,
    front_history,
    list_studies,
    list_trials,
    pareto_rows,
    write_rows,
)

ACCURACY_LATENCY = [
    {"name": "accuracy", "direction": "max"},
    {"name": "latency_ms", "direction": "min"},
]
LOSS_PARAMS = [{"name": "loss", "direction": "min"}, {"name": "params", "direction": "min"}]
THREE_OBJECTIVES = [*ACCURACY_LATENCY, {"name": "params", "direction": "min"}]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def db(tmp_path: Path):
    database = Database(str(tmp_path / "search.db"))
    yield database
    database.close()


def config_of(number: int) -> dict:
    return {"d_model": 64 * (1 + number % 4), "n_layers": 1 + number % 3, "seed": number}


def hash_of(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def trial_attrs(number: int, reason: str | None = None) -> dict:
    config = config_of(number)
    return {
        "config": config,
        "config_hash": hash_of(config),
        "metrics": {},
        "curve": [[0, 2.3], [10, 1.1]],
        "fingerprint": {"cpu": "test"},
        "timings": {"train_s": 1.5},
        "reason": reason,
        "error": None if reason is None else "loss became NaN at step 3",
        "attempts": 1,
    }


def snapshot_objectives(objectives: list[dict]) -> list[dict]:
    """Objectives as the snapshot table stores them (Optuna's direction words)."""
    words = {"max": "maximize", "min": "minimize"}
    return [{"name": o["name"], "direction": words[o["direction"]]} for o in objectives]


def save_front(db: Database, name: str, objectives: list[dict], numbers, values) -> list[int]:
    """Compute the front of the completed trials with tnas.search.pareto and snapshot it."""
    values = np.asarray(values, dtype=float)
    points = to_minimization(values, [o["direction"] for o in objectives])
    front = pareto_front(points)
    reference = reference_point(points)
    db.save_snapshot(
        name,
        snapshot_objectives(objectives),
        n_trials=len(values),
        hypervolume=hypervolume(points[front], reference),
        reference_point=reference.tolist(),
        members=[
            {
                "trial_number": numbers[row],
                "config_hash": hash_of(config_of(numbers[row])),
                "config": config_of(numbers[row]),
                "values": values[row].tolist(),
            }
            for row in front
        ],
    )
    return sorted(numbers[row] for row in front)


def make_study(
    db: Database,
    name: str,
    objectives: list[dict] = ACCURACY_LATENCY,
    n_complete: int = 20,
    n_failed: int = 4,
    n_running: int = 3,
    seed: int = 0,
    snapshot: bool = True,
) -> dict[int, list[float]]:
    """A study as the driver leaves it, its states interleaved; returns values by trial number."""
    study = optuna.create_study(
        study_name=name,
        storage=db.optuna_storage(),
        directions=["maximize" if o["direction"] == "max" else "minimize" for o in objectives],
    )
    study.set_user_attr(
        "tnas",
        {"objectives": objectives, "space": "primer", "task": "digits", "sampler": "nsga2"},
    )
    rng = np.random.default_rng(seed)
    states = (
        [TrialState.COMPLETE] * n_complete
        + [TrialState.FAIL] * n_failed
        + [TrialState.RUNNING] * n_running
    )
    rng.shuffle(states)
    trials, completed = [], {}
    for number, state in enumerate(states):
        if state == TrialState.COMPLETE:
            values = rng.uniform(0.1, 1.0, size=len(objectives)).round(4).tolist()
            completed[number] = values
            trials.append(create_trial(values=values, user_attrs=trial_attrs(number)))
        elif state == TrialState.FAIL:
            attrs = trial_attrs(number, reason="nan_loss")
            trials.append(create_trial(state=state, user_attrs=attrs))
        else:
            trials.append(create_trial(state=state, user_attrs=trial_attrs(number)))
    study.add_trials(trials)
    if snapshot and completed:
        save_front(db, name, objectives, list(completed), list(completed.values()))
    return completed


def brute_force_front(completed: dict[int, list[float]], objectives: list[dict]) -> list[int]:
    """Trial numbers no other completed trial dominates, by comparing every pair."""
    signs = [-1.0 if o["direction"] == "max" else 1.0 for o in objectives]
    points = {n: [s * v for s, v in zip(signs, vs, strict=True)] for n, vs in completed.items()}

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return sorted(n for n, p in points.items() if not any(dominates(q, p) for q in points.values()))


def test_list_studies_counts_states_and_reads_the_front(db):
    completed = make_study(db, "alpha")
    make_study(db, "empty", n_complete=0, n_failed=0, n_running=0)
    rows = {row["name"]: row for row in list_studies(db)}
    assert set(rows) == {"alpha", "empty"}
    alpha = rows["alpha"]
    counts = [alpha[key] for key in ("n_trials", "n_complete", "n_failed", "n_running")]
    assert counts == [27, 20, 4, 3]
    assert alpha["front_size"] == len(brute_force_front(completed, ACCURACY_LATENCY))
    assert alpha["hypervolume"] == pytest.approx(db.latest_snapshot("alpha")["hypervolume"])
    assert alpha["objectives"] == "accuracy:max, latency_ms:min"
    assert alpha["datetime_start"].endswith("+00:00")
    assert rows["empty"] == {
        "name": "empty",
        "objectives": "accuracy:max, latency_ms:min",
        "n_trials": 0,
        "n_complete": 0,
        "n_failed": 0,
        "n_running": 0,
        "front_size": None,
        "hypervolume": None,
        "datetime_start": None,
    }


def test_list_trials_gives_every_trial_in_order(db):
    completed = make_study(db, "alpha")
    rows = list_trials(db, "alpha")
    assert [row["number"] for row in rows] == list(range(27))
    for row in rows:
        assert row["config_hash"] == hash_of(config_of(row["number"]))  # in full
        assert row["config"] == config_of(row["number"])
        assert row["attempts"] == 1
        if row["state"] == "COMPLETE":
            assert [row["accuracy"], row["latency_ms"]] == completed[row["number"]]
            assert row["reason"] is None and row["duration_s"] >= 0
        else:
            assert row["accuracy"] is None and row["latency_ms"] is None
    assert {row["reason"] for row in rows if row["state"] == "FAIL"} == {"nan_loss"}
    assert all(row["duration_s"] is None for row in rows if row["state"] == "RUNNING")


@pytest.mark.parametrize(
    "states, expected",
    [(["complete"], {"COMPLETE": 20}), (["FAIL", "running"], {"FAIL": 4, "RUNNING": 3})],
    ids=["complete", "fail-and-running"],
)
def test_list_trials_filters_by_state(db, states, expected):
    make_study(db, "alpha")
    rows = list_trials(db, "alpha", states=states)
    found = {state: sum(row["state"] == state for row in rows) for state in expected}
    assert found == expected and len(rows) == sum(expected.values())


def test_list_trials_refuses_an_unknown_state(db):
    make_study(db, "alpha")
    with pytest.raises(ValueError, match="unknown state 'finished'; valid: running"):
        list_trials(db, "alpha", states=["finished"])


@pytest.mark.parametrize("query", [list_trials, pareto_rows, front_history])
def test_an_unknown_study_names_the_studies_present(db, query):
    make_study(db, "alpha", snapshot=False)
    make_study(db, "beta", snapshot=False)
    with pytest.raises(
        LookupError, match=r"unknown study 'gamma'; studies in sqlite:.*: alpha, beta"
    ):
        query(db, "gamma")


def test_an_unknown_study_in_an_empty_database(db):
    with pytest.raises(LookupError, match=r"^unknown study 'gamma': no studies in sqlite:///"):
        list_trials(db, "gamma")


def test_pareto_rows_match_the_brute_force_front(db):
    completed = make_study(db, "alpha", n_complete=60, seed=3)
    rows = pareto_rows(db, "alpha")
    assert sorted(row["number"] for row in rows) == brute_force_front(completed, ACCURACY_LATENCY)
    accuracies = [row["accuracy"] for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # best first on the first objective
    for row in rows:
        assert [row["accuracy"], row["latency_ms"]] == completed[row["number"]]
        assert row["config"] == config_of(row["number"])
        assert row["config_hash"] == hash_of(row["config"])


def test_pareto_rows_of_a_study_without_a_snapshot_are_empty(db):
    make_study(db, "starting", n_complete=0, n_failed=1, n_running=2)
    assert pareto_rows(db, "starting") == []
    assert front_history(db, "starting") == []


def test_front_history_lists_snapshots_oldest_first(db):
    completed = make_study(db, "alpha", n_complete=30, seed=1)
    numbers, values = list(completed), list(completed.values())
    first = save_front(db, "alpha", ACCURACY_LATENCY, numbers[:10], values[:10])
    history = front_history(db, "alpha")
    assert [row["n_trials"] for row in history] == [30, 10]
    assert history[1]["front_size"] == len(first)
    assert history[0]["id"] < history[1]["id"]
    assert all(row["created_at"].endswith("+00:00") for row in history)


def test_rows_written_as_json_and_csv_read_back(db):
    completed = make_study(db, "alpha")
    front = pareto_rows(db, "alpha")
    stream = io.StringIO()
    write_rows(front, "json", stream)
    assert json.loads(stream.getvalue()) == front

    trials = list_trials(db, "alpha")
    stream = io.StringIO()
    write_rows(trials, "csv", stream)
    read = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [int(row["number"]) for row in read] == list(range(27))
    for row in read:
        if row["state"] == "COMPLETE":
            values = [float(row["accuracy"]), float(row["latency_ms"])]
            assert values == completed[int(row["number"])]
        else:
            assert row["accuracy"] == ""

    stream = io.StringIO()
    write_rows(front, "csv", stream)
    header = stream.getvalue().splitlines()[0]
    assert header == "number,accuracy,latency_ms,config_hash"  # the nested config is dropped


def test_write_rows_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'yaml'; valid: json, csv"):
        write_rows([], "yaml", io.StringIO())


def test_plot_one_study_as_png(db, tmp_path):
    make_study(db, "alpha")
    path = plot_fronts(db, ["alpha"], tmp_path / "front.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_as_html_embeds_an_svg_and_the_front(db, tmp_path):
    completed = make_study(db, "alpha")
    page = plot_fronts(db, ["alpha"], tmp_path / "front.html").read_text()
    assert "<svg" in page and "alpha" in page
    assert "accuracy (max)" in page and "latency_ms (min)" in page
    assert not re.search(r"<script|<link|src=\"http", page)  # self-contained
    members = brute_force_front(completed, ACCURACY_LATENCY)
    assert page.count("<tr><td>alpha</td>") == len(members)


def test_plot_overlays_two_studies(db, tmp_path):
    make_study(db, "alpha", seed=0)
    make_study(db, "beta", seed=1, snapshot=False)  # its front is computed for the plot
    page = plot_fronts(db, ["alpha", "beta"], tmp_path / "fronts.html").read_text()
    assert "alpha (HV " in page and "beta (HV " in page
    assert "<tr><td>beta</td>" in page
    png = plot_fronts(db, ["alpha", "beta"], tmp_path / "fronts.png")
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_of_three_objectives_says_it_shows_two(db, tmp_path):
    make_study(db, "cube", objectives=THREE_OBJECTIVES)
    page = plot_fronts(db, ["cube"], tmp_path / "cube.html").read_text()
    assert "first 2 of 3 objectives shown" in page


def test_plot_refuses_an_unknown_extension(db, tmp_path):
    make_study(db, "alpha")
    with pytest.raises(ValueError, match=r"'front.svg': give a path ending in .png or .html"):
        plot_fronts(db, ["alpha"], tmp_path / "front.svg")


def test_plot_refuses_studies_with_different_objectives(db, tmp_path):
    make_study(db, "alpha")
    make_study(db, "small", objectives=LOSS_PARAMS)
    with pytest.raises(ValueError, match="different objectives") as raised:
        plot_fronts(db, ["alpha", "small"], tmp_path / "fronts.png")
    assert "alpha (accuracy:max, latency_ms:min)" in str(raised.value)
    assert "small (loss:min, params:min)" in str(raised.value)


def test_dashboard_command_binds_to_loopback(tmp_path):
    argv = dashboard_command(str(tmp_path / "search.db"))
    assert argv[0].endswith("optuna-dashboard")
    assert argv[1:] == [
        f"sqlite:///{tmp_path / 'search.db'}",
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
    ]
    with pytest.raises(ValueError, match="port must be"):
        dashboard_command("search.db", port=0)


def bulk_study(db: Database, name: str, n_trials: int, front_size: int) -> list[int]:
    """A study of `n_trials` completed trials written in a few bulk inserts; returns its front.

    Optuna's `add_trials` commits trial by trial (about 10 ms each on SQLite), so the rows go
    straight into Optuna's tables. The front is known by construction: trial k < front_size
    has accuracy (k + 1) / front_size and latency k + 1, every later trial is slower than the
    front member at least as accurate.
    """
    from optuna.storages._rdb import models  # test-only: bulk rows in Optuna's own schema

    study = optuna.create_study(
        study_name=name, storage=db.optuna_storage(), directions=["maximize", "minimize"]
    )
    study.set_user_attr("tnas", {"objectives": ACCURACY_LATENCY, "space": "primer"})
    study_id = db.optuna_storage().get_study_id_from_name(name)
    rng = np.random.default_rng(0)
    values = []
    for number in range(n_trials):
        if number < front_size:
            values.append([(number + 1) / front_size, float(number + 1)])
        else:
            accuracy = float(rng.uniform(0.0, 1.0))
            dominating = np.ceil(accuracy * front_size)  # this member's accuracy >= accuracy
            values.append([accuracy, float(dominating + 1 + rng.uniform(0.0, 5.0))])
    finite = models.TrialValueModel.TrialValueType.FINITE
    trial_rows, value_rows, attr_rows = [], [], []
    for number, (accuracy, latency) in enumerate(values):
        trial_id = number + 1
        trial_rows.append(
            {"trial_id": trial_id, "number": number, "study_id": study_id, "state": "COMPLETE"}
        )
        for objective, value in enumerate((accuracy, latency)):
            value_rows.append(
                {"trial_id": trial_id, "objective": objective, "value": value, "value_type": finite}
            )
        for key, value in trial_attrs(number).items():
            attr_rows.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
    with db.session() as session:
        session.execute(insert(models.TrialModel), trial_rows)
        session.execute(insert(models.TrialValueModel), value_rows)
        session.execute(insert(models.TrialUserAttributeModel), attr_rows)
    return save_front(db, name, ACCURACY_LATENCY, list(range(n_trials)), values)


@contextmanager
def recorded_statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends while the block runs."""
    statements: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def reads_trial_tables(statements: list[str]) -> bool:
    """Whether a statement names one of Optuna's trial tables (not a column like x.trial_id)."""
    from optuna.storages._rdb import models

    names = "|".join(name for name in models.BaseModel.metadata.tables if name.startswith("trial"))
    table = re.compile(rf"(?<![.\w])\"?({names})\b")
    return any(table.search(statement) for statement in statements)


def test_pareto_rows_of_10000_trials_read_only_the_snapshot(db):
    front = bulk_study(db, "big", n_trials=10_000, front_size=50)
    assert front == list(range(50))
    with recorded_statements() as statements:
        assert [row["n_complete"] for row in list_studies(db)] == [10_000]
    assert reads_trial_tables(statements)  # the check sees a query that counts trials
    with recorded_statements() as statements:
        rows = pareto_rows(db, "big")
        write_rows(rows, "json", io.StringIO())
    assert statements and not reads_trial_tables(statements)
    assert [row["number"] for row in rows] == list(range(49, -1, -1))  # most accurate first


def test_queries_on_postgresql(postgres_cluster):
    """The trial counts come from Optuna's tables directly: check PostgreSQL's types too."""
    db = Database(postgres_cluster.create_database("tnas_query"))
    try:
        completed = make_study(db, "alpha")
        [row] = list_studies(db)
        counts = [row[key] for key in ("n_trials", "n_complete", "n_failed", "n_running")]
        assert counts == [27, 20, 4, 3]
        assert row["datetime_start"].endswith("+00:00")
        assert len(list_trials(db, "alpha", states=["fail"])) == 4
        front = brute_force_front(completed, ACCURACY_LATENCY)
        assert sorted(row["number"] for row in pareto_rows(db, "alpha")) == front
        with pytest.raises(LookupError, match=r"studies in postgresql\+psycopg://.*: alpha$"):
            pareto_rows(db, "gamma")
    finally:
        db.close()
