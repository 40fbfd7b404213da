"""Learning-curve tables: `record_curves` trains configs through every rung as a multi-fidelity
search does, and `--evaluator replay:TABLE --fidelity steps` replays a search on them."""

from __future__ import annotations

import json
import logging

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tnas.launch import launch, record_curves
from tnas.search.multifidelity import RUNGS_ATTR
from tnas.search.run import RunError
from tnas.space import ArchConfig, load_space
from tnas.workers.replay import ReplayError, load_table, write_table

RUN = {"space": "simq", "fidelity": "steps", "min_steps": 2, "max_steps": 6, "eta": 3}
OBJECTIVES = ["accuracy:max", "latency_ms:min"]


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def trials_of(result):
    return optuna.load_study(study_name=result.study, storage=result.storage).get_trials()


def synthetic_table(path, count=12):
    """`count` simq configs with made-up curves at 2 and 6 steps (accuracy rises with steps)."""
    space = load_space("simq")
    rng = np.random.default_rng(1)
    configs = {c.hash: c for c in (space.sample(rng) for _ in range(4 * count))}
    rows = []
    for i, config in enumerate(list(configs.values())[:count]):
        curve = {s: {"accuracy": (i + 1) / count * s / 6, "latency_ms": 1.0 + i} for s in (2, 6)}
        report = {"status": "ok", "reason": None, "metrics": curve[6], "rungs": curve}
        rows.append((config, report))
    write_table(path, rows)
    return {config.hash: report["rungs"] for config, report in rows}


def test_a_recorded_curve_is_what_a_real_fidelity_search_trains(tmp_path):
    settings = RUN | {"task": "digits", "workers": 0, "profile_repeats": 2}
    searched = launch(
        **settings,
        trials=3,
        study="real",
        storage=f"sqlite:///{tmp_path / 'real.db'}",
        checkpoint_dir=str(tmp_path / "c1"),
    )
    [top] = [t for t in trials_of(searched) if t.state == TrialState.COMPLETE]
    config = ArchConfig.from_dict(top.user_attrs["config"])
    table = tmp_path / "curves.jsonl"
    seen = []

    recorded = record_curves(
        [config],
        table,
        **settings,
        checkpoint_dir=str(tmp_path / "c2"),
        progress=lambda done, total: seen.append((done, total)),
    )

    assert recorded == 1 and seen == [(1, 1)]
    [row] = load_table(table).values()
    assert sorted(row["rungs"]) == [2, 6]
    assert row["metrics"] == row["rungs"][6]
    for steps in (2, 6):  # the same training, bit for bit; latency is measured again
        searched_accuracy = top.user_attrs[RUNGS_ATTR][str(steps)]["accuracy"]
        assert row["rungs"][steps]["accuracy"] == searched_accuracy
    assert list((tmp_path / "c2").iterdir()) == []


def test_a_fidelity_search_replays_the_table_rung_by_rung(tmp_path):
    table = tmp_path / "curves.jsonl"
    curves = synthetic_table(table)

    result = launch(
        **RUN,
        objectives=OBJECTIVES,
        evaluator=f"replay:{table}",
        trials=9,
        workers=2,
        study="replayed",
        storage=f"sqlite:///{tmp_path / 'r.db'}",
    )

    trials = trials_of(result)
    assert len(trials) == 9
    states = {t.state for t in trials}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in trials:
        curve = curves[trial.user_attrs["config_hash"]]
        stored = trial.user_attrs[RUNGS_ATTR]
        assert stored == {str(s): curve[s] for s in map(int, stored)}
        last = curve[max(map(int, stored))]
        assert trial.values == [last["accuracy"], last["latency_ms"]]
        complete = trial.state == TrialState.COMPLETE
        assert complete == ("6" in stored)


def test_a_table_without_curves_is_refused_in_one_line(tmp_path):
    table = tmp_path / "flat.jsonl"
    config = load_space("simq").sample(np.random.default_rng(0))
    write_table(table, [(config, {"status": "ok", "reason": None, "metrics": {"accuracy": 1}})])
    settings = RUN | {"evaluator": f"replay:{table}", "storage": f"sqlite:///{tmp_path / 'x.db'}"}

    with pytest.raises(RunError, match=r"rungs \[2, 6\] steps .*it has no curves") as err:
        launch(**settings, objectives=["accuracy:max"])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.db").exists()


def test_a_table_with_other_rungs_says_which_it_has(tmp_path):
    table = tmp_path / "curves.jsonl"
    synthetic_table(table)
    settings = RUN | {"max_steps": 18, "evaluator": f"replay:{table}"}

    with pytest.raises(RunError, match=r"rungs \[2, 6, 18\] .*records curves at \[2, 6\]"):
        launch(**settings, objectives=["accuracy:max"], storage=f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.parametrize(
    "rungs, message",
    [
        ({"ten": {"accuracy": 1}}, "rungs key 'ten' must be a positive step count"),
        ({"0": {"accuracy": 1}}, "rungs key '0' must be a positive step count"),
        ({"5": {"accuracy": "x"}}, r"rungs\[5\]: metric 'accuracy' must be a number"),
        ([1, 2], "rungs must be an object of step counts, got a list"),
    ],
    ids=["word", "zero", "bad-metric", "list"],
)
def test_a_bad_curve_names_its_line(tmp_path, rungs, message):
    config = load_space("simq").sample(np.random.default_rng(0))
    table = tmp_path / "bad.jsonl"
    good = {"config": config.to_dict(), "metrics": {"accuracy": 1}}
    table.write_text(json.dumps(good) + "\n" + json.dumps(good | {"rungs": rungs}) + "\n")

    with pytest.raises(ReplayError, match=f"bad.jsonl:2: {message}"):
        load_table(table)
