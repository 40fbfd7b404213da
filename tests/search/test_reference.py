"""A study's hypervolume reference point is fixed once, so that its hypervolumes agree and
compare; metric values that would poison it fail their trial instead (issue 16).

Searches here replay a recorded table (nothing is trained), each in a SQLite file under
tmp_path; the table doubles as the pool, so every search evaluates configs from it alone.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from tnas.cli import app
from tnas.launch import launch
from tnas.search.db import Database
from tnas.search.pareto import hypervolume, to_minimization
from tnas.search.query import compare_fronts, front_history, list_studies
from tnas.search.reference import (
    ATTR,
    check_reference,
    derive_reference,
    measure,
    parse_reference,
    study_reference,
)
from tnas.space import load_space

OBJECTIVES = ["accuracy:max", "latency_ms:min"]
DIRECTIONS = ["max", "min"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def write_table(path, rows: int, seed: int, bad: dict[int, dict] | None = None):
    """A replay table of `rows` distinct primer configs whose accuracy and latency trade off
    with dominated points among them; `bad` replaces the metrics of some rows by number."""
    space = load_space("primer")
    rng = np.random.default_rng(seed)
    table: dict[str, dict] = {}
    while len(table) < rows:
        config = space.sample(rng)
        params = config.derived()["params"]
        jitter = int(config.hash[:6], 16) / 16**6
        metrics = {
            "accuracy": 1 - 1 / (1 + params / 2e6) + 0.05 * jitter,
            "latency_ms": params / 1e5 + 2 * config.n_layers + jitter,
        }
        table[config.hash] = {"config": config.to_dict(), "metrics": metrics}
    lines = list(table.values())
    for number, metrics in (bad or {}).items():
        lines[number]["metrics"] |= metrics
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))  # inf, nan as JSON allows
    return path


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "table.jsonl", rows=24, seed=1)


def settings(tmp_path, table, **overrides) -> dict:
    return {
        "space": "primer",
        "objectives": OBJECTIVES,
        "trials": 12,
        "workers": 2,
        "sampler": "random",
        "study": "s",
        "storage": f"sqlite:///{tmp_path / 'studies.db'}",
        "pool": str(table),
    } | overrides


def study_of(run: dict) -> optuna.Study:
    return optuna.load_study(study_name=run["study"], storage=run["storage"])


def completed_values(study) -> np.ndarray:
    return np.array([t.values for t in study.get_trials(states=(TrialState.COMPLETE,))])


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_a_point_worse_than_the_reference_in_one_objective_adds_nothing():
    inside = [[1.0, 1.0]]
    worse_in_one = [[0.0, 3.0], [3.0, 0.0], [2.0, 0.5]]  # each beyond the reference in one
    assert hypervolume(inside, [2.0, 2.0]) == 1.0
    assert hypervolume(np.array(inside + worse_in_one), [2.0, 2.0]) == 1.0
    # natural units: accuracy 0.2 is below the reference's 0.5, latency 30 above its 20
    assert measure([[0.9, 10.0], [0.2, 1.0], [0.99, 30.0]], [0.5, 20.0], DIRECTIONS) == 4.0


def test_derived_reference_is_the_worst_value_plus_a_tenth_of_the_range():
    assert derive_reference([[0.75, 12.0], [0.5, 8.0], [0.6, 10.0]], DIRECTIONS) == [0.475, 12.4]
    # one point: a tenth of its magnitude; unusable rows are left out
    assert derive_reference([[0.5, 10.0], [math.nan, 1.0], [0.9, 1e308]], DIRECTIONS) == [
        0.45,
        11.0,
    ]


def test_the_reference_is_frozen_from_the_first_batch_and_never_moves(tmp_path, table):
    run = settings(tmp_path, table, trials=8)
    seen = []  # (reference stored, completed values) at each progress update
    storage = {}

    def watch(progress):
        if "rdb" not in storage:
            storage["rdb"] = optuna.storages.RDBStorage(run["storage"])
        rdb = storage["rdb"]
        study_id = rdb.get_study_id_from_name(run["study"])
        reference = study_reference(rdb.get_study_user_attrs(study_id))
        trials = rdb.get_all_trials(study_id, states=(TrialState.COMPLETE,))
        seen.append((reference, [t.values for t in trials]))

    launch(**run, progress=watch)
    launch(**run | {"trials": 16, "sampler": "nsga2"}, progress=watch)  # more trials later

    frozen = [(reference, values) for reference, values in seen if reference is not None]
    assert frozen and len(frozen) < len(seen)  # not before the first batch
    first_reference, first_values = frozen[0]
    assert len(first_values) >= 2  # max(2, slots) with 2 workers
    assert first_reference == derive_reference(first_values, DIRECTIONS)
    assert all(reference == first_reference for reference, _ in frozen)
    study = study_of(run)
    assert study.user_attrs[ATTR] == first_reference
    assert len(completed_values(study)) == 16

    db = Database(run["storage"])
    try:
        bound = to_minimization(first_reference, DIRECTIONS).tolist()
        history = front_history(db, "s")
        assert db.latest_snapshot("s")["reference_point"] == bound
        volumes = [row["hypervolume"] for row in history]
        assert volumes == sorted(volumes)  # one reference: the front's volume only grows
    finally:
        db.close()


def test_progress_studies_snapshot_and_history_show_one_hypervolume(tmp_path, table):
    run = settings(tmp_path, table, trials=14)
    updates = []
    result = launch(**run, progress=lambda progress: updates.append(progress.hypervolume))
    db = Database(run["storage"])
    try:
        [row] = list_studies(db)
        latest = db.latest_snapshot("s")
        history = front_history(db, "s")
    finally:
        db.close()

    final = result.progress.hypervolume
    assert final > 0 and final == updates[-1]
    # `tnas studies` prints list_studies' rows; `tnas pareto --history` front_history's
    assert final == row["hypervolume"] == latest["hypervolume"] == history[-1]["hypervolume"]


def test_a_given_ref_point_is_stored_and_measured_against(tmp_path, table):
    run = settings(tmp_path, table, ref_point=[0.0, 100.0])
    result = launch(**run)
    study = study_of(run)
    db = Database(run["storage"])
    try:
        latest = db.latest_snapshot("s")
    finally:
        db.close()

    assert study_reference(study) == [0.0, 100.0]
    assert latest["reference_point"] == [0.0, 100.0]  # minimised: -0.0 for the max objective
    front = [member["values"] for member in latest["members"]]
    assert result.progress.hypervolume == measure(front, [0.0, 100.0], DIRECTIONS)


def test_a_ref_point_of_the_wrong_length_is_one_line(tmp_path, table):
    with pytest.raises(ValueError) as raised:
        check_reference([0.5, 50.0, 3.0], OBJECTIVES)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("reference point [0.5, 50, 3] has 3 values for 2 objectives")

    with pytest.raises(ValueError, match="has 3 values for 2 objectives") as raised:
        launch(**settings(tmp_path, table, ref_point=[0.5, 50.0, 3.0]))
    assert "\n" not in str(raised.value)

    run = settings(tmp_path, table, study="ok")
    args = ["--pool", str(table), "--trials", "3", "--storage", run["storage"]]
    refused = cli("search", "launch", *args, "--study", "bad", "--ref-point", "0.5,50,3")
    assert refused.exit_code == 2
    errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: reference point [0.5, 50, 3] has 3 values for 2 objectives "
        "(accuracy:max, latency_ms:min); give one per objective, in that order"
    ]
    launch(**run)
    refused = cli("pareto", "ok", "--storage", run["storage"], "--ref-point", "0.5,50,3")
    assert refused.exit_code == 2
    assert refused.output.count("\n") == 1
    assert refused.output.startswith("error: reference point [0.5, 50, 3] has 3 values")
    assert parse_reference(["0.5", "50"]) == parse_reference(["0.5,50"]) == [0.5, 50.0]


def test_two_studies_of_the_same_configs_compare_on_one_reference(tmp_path):
    table = write_table(tmp_path / "small.jsonl", rows=10, seed=4)
    one = settings(tmp_path, table, study="one", trials=10, workers=1, seed=0)
    two = settings(tmp_path, table, study="two", trials=10, workers=2, seed=7, sampler="tpe")
    launch(**one)
    launch(**two)
    db = Database(one["storage"])
    try:
        assert len(completed_values(study_of(one))) == len(completed_values(study_of(two))) == 10
        rows, reference, source = compare_fronts(db, ["one", "two"])
        own = [study_reference(study_of(run)) for run in (one, two)]
        given_rows, given, given_source = compare_fronts(db, ["one", "two"], [0.0, 100.0])
        studies = {row["name"]: row for row in list_studies(db, ref_point=[0.0, 100.0])}
    finally:
        db.close()

    assert source == "worst of stored"
    assert reference == [min(p[0] for p in own), max(p[1] for p in own)]
    assert rows[0]["hypervolume"] == rows[1]["hypervolume"] > 0
    assert given_source == "given" and given == [0.0, 100.0]
    assert given_rows[0]["hypervolume"] == given_rows[1]["hypervolume"]
    assert studies["one"]["hypervolume"] == studies["two"]["hypervolume"]
    assert studies["one"]["hypervolume"] == given_rows[0]["hypervolume"]


@pytest.mark.parametrize(
    "bad",
    [
        {"latency_ms": 1e308},
        {"latency_ms": math.inf},
        {"accuracy": math.nan},
        {"accuracy": 1e308},
    ],
    ids=["1e308", "inf", "nan", "huge-max"],
)
def test_an_unusable_metric_fails_its_trial_and_the_search_goes_on(tmp_path, bad):
    # rows 0..2 of a pool of 8 hold the bad value: a search of the whole pool meets them
    table = write_table(tmp_path / "bad.jsonl", rows=8, seed=3, bad={n: bad for n in range(3)})
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    args = ["--pool", str(table), "--study", "bad", "--storage", url, "--sampler", "random"]

    launched = cli("search", "launch", *args, "--trials", "8", "--workers", "2")

    assert launched.exit_code == 0, launched.output
    trials = optuna.load_study(study_name="bad", storage=url).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 3 and all(t.user_attrs["reason"] == "bad_metric" for t in failed)
    [(name, value)] = bad.items()
    assert all(f"{name}={value!r}" in t.user_attrs["error"] for t in failed)
    assert len(completed_values(optuna.load_study(study_name="bad", storage=url))) == 5
    hashes = [t.user_attrs["config_hash"] for t in trials]
    assert len(set(hashes)) == len(hashes) == 8  # a failed config is not picked again
    resumed = cli("search", "resume", "bad", "--storage", url)
    assert resumed.exit_code == 0, resumed.output
    again = cli("search", "launch", *args, "--trials", "8", "--workers", "1")
    assert again.exit_code == 0, again.output
    db = Database(url)
    try:
        [row] = list_studies(db)
        history = front_history(db, "bad")
    finally:
        db.close()
    assert row["n_failed"] == 3  # bad_metric counts as an evaluated failure
    assert math.isfinite(row["hypervolume"]) and row["hypervolume"] > 0
    assert all(math.isfinite(snapshot["hypervolume"]) for snapshot in history)


def test_a_study_without_a_stored_reference_falls_back_then_freezes(tmp_path, table):
    run = settings(tmp_path, table, trials=6)
    launch(**run)
    study = study_of(run)
    study.set_user_attr(ATTR, None)  # as a study made before reference points were stored
    config = load_space("primer").sample(np.random.default_rng(99))
    poisoned = create_trial(  # a value recorded before such values were refused
        values=[0.999, 1e308],
        user_attrs={"config": config.to_dict(), "config_hash": config.hash},
    )
    study.add_trial(poisoned)
    db = Database(run["storage"])
    try:
        latest = db.latest_snapshot("s")
        [row] = list_studies(db)
        assert row["hypervolume"] == latest["hypervolume"]  # the latest snapshot's reference

        result = launch(**run | {"trials": 10})

        frozen = study_reference(study_of(run))
        latest = db.latest_snapshot("s")
        [row] = list_studies(db)
    finally:
        db.close()
    assert frozen is not None and all(math.isfinite(value) for value in frozen)
    assert frozen[1] < 1e30  # the poisoned trial does not stretch the reference
    assert row["hypervolume"] == result.progress.hypervolume == latest["hypervolume"]
    assert poisoned.number not in [m["trial_number"] for m in latest["members"]]


def test_pareto_of_two_studies_names_the_reference_it_used(tmp_path, table):
    first = settings(tmp_path, table, study="a", trials=8)
    launch(**first)
    launch(**first | {"study": "b", "seed": 3})
    launch(**first | {"study": "c", "objectives": ["latency_ms:min", "accuracy:max"]})
    url = first["storage"]

    compared = cli("pareto", "a", "b", "--storage", url)
    assert compared.exit_code == 0, compared.output
    assert "Pareto front of a" in compared.output and "Pareto front of b" in compared.output
    last = compared.output.strip().splitlines()[-1]
    assert last.startswith("reference point: accuracy=") and last.endswith("(worst of stored)")

    for option in (["--ref-point", "0", "--ref-point", "100"], ["--ref-point", "0,100"]):
        given = cli("pareto", "a", "b", "--storage", url, *option)
        assert given.exit_code == 0, given.output
        last = given.output.strip().splitlines()[-1]
        assert last == "reference point: accuracy=0, latency_ms=100 (given)"

    rows = json.loads(cli("pareto", "a", "b", "--storage", url, "--format", "json").output)
    assert [row["study"] for row in rows] == ["a", "b"]
    assert {row["reference_source"] for row in rows} == {"worst of stored"}

    history = cli("pareto", "a", "b", "--storage", url, "--history", "--ref-point", "0,100")
    assert history.exit_code == 0 and "front history of b" in history.output

    studies = cli("studies", "--storage", url, "--ref-point", "0,100")
    assert studies.exit_code == 2  # c has other objectives
    assert studies.output.count("\n") == 1 and "different objectives" in studies.output

    mixed = cli("pareto", "a", "c", "--storage", url)
    assert mixed.exit_code == 2
    assert mixed.output.count("\n") == 1
    assert mixed.output.startswith("error: cannot compare studies with different objectives")
    assert "a (accuracy:max, latency_ms:min); c (latency_ms:min, accuracy:max)" in mixed.output


def test_studies_with_a_ref_point_says_so(tmp_path, table):
    run = settings(tmp_path, table, trials=6)
    launch(**run)
    listed = cli("studies", "--storage", run["storage"], "--ref-point", "0", "--ref-point", "100")
    assert listed.exit_code == 0, listed.output
    assert "reference point: accuracy=0, latency_ms=100 (given)" in listed.output
