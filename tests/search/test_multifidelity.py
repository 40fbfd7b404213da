"""The multi-fidelity driver: promotion by rung, the front of the top rung, rung storage, and a
resume that adopts a killed driver's trials.

The evaluator here answers rung keys (`"12@1"`) as `FidelityJob` does, from a made-up learning
curve: accuracy grows with the steps towards a ceiling set by the config, latency is fixed.
Nothing is trained; `tests/workers/test_continuation.py` checks the real job.
"""

from __future__ import annotations

import logging

import optuna
import pytest
from optuna.trial import TrialState

from tnas.launch import launch, resume
from tnas.search.db import Database
from tnas.search.fidelity import AshaScheduler, Rungs
from tnas.search.multifidelity import RUNGS_ATTR, TARGET_ATTR, FidelityDriver
from tnas.search.run import RunError, RunSpec, make_driver, open_study, requeue_orphans
from tnas.space import load_space
from tnas.workers.reports import ok_report

RUNGS = Rungs(10, 90, 3)  # 10, 30, 90 steps


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Curves:
    """Answers `"N@R"` with accuracy `ceiling * steps / (steps + 20)`: the ranking of configs
    is the same at every rung, as for well-behaved learning curves."""

    def __init__(self, slots=1):
        self.slots, self.done, self.keys = slots, [], []

    def submit(self, key, config):
        rung = int(key.partition("@")[2])
        steps = RUNGS.steps[rung]
        params = config.derived()["params"]
        ceiling = 1 - 1 / (1 + params / 2e6)
        metrics = {
            "accuracy": ceiling * steps / (steps + 20),
            "latency_ms": params / 1e5,
            "steps": steps,
        }
        report = ok_report(key, config, metrics) | {"rung": rung, "steps": steps}
        self.done.append(report)
        self.keys.append(key)

    def collect(self, timeout=None):
        reports, self.done = self.done, []
        return reports

    def close(self):
        pass


def spec(tmp_path, **settings) -> RunSpec:
    return RunSpec(
        space="simq",
        sampler="random",
        trials=9,
        workers=1,
        study="mf",
        storage=f"sqlite:///{tmp_path / 'mf.db'}",
        fidelity="steps",
        min_steps=RUNGS.min_steps,
        max_steps=RUNGS.max_steps,
        eta=RUNGS.eta,
        **settings,
    )


def search(run: RunSpec, evaluator, on_update=None, resume_it=False):
    space = load_space("simq")
    with Database(run.storage) as db:
        study = open_study(run, db, space)
        if resume_it:
            requeue_orphans(study, space, adopt_rungs=True)
        discarded = []
        driver = make_driver(
            run, study, space, evaluator, db, [], None, on_update,
            discard=lambda key, digest: discarded.append(key),
        )  # fmt: skip
        assert isinstance(driver, FidelityDriver)
        return study, driver.run(), discarded


def reached(trial) -> list[int]:
    return sorted(int(steps) for steps in trial.user_attrs.get(RUNGS_ATTR, {}))


def test_the_top_third_of_each_rung_goes_on_and_only_the_top_rung_is_complete(tmp_path):
    evaluator = Curves()
    study, progress, discarded = search(spec(tmp_path), evaluator)

    trials = study.get_trials()
    assert len(trials) == 9
    top = [t for t in trials if reached(t) == list(RUNGS.steps)]  # every rung it passed
    assert top and all(t.state == TrialState.COMPLETE for t in top)
    below = [t for t in trials if t not in top]
    assert below and all(t.state == TrialState.PRUNED for t in below)
    assert all(t.values is not None for t in below)  # their last rung's values
    assert sorted(discarded, key=int) == sorted(str(t.number) for t in below)
    assert {t.number for t in study.best_trials} <= {t.number for t in top}  # top rung only
    assert progress.finished == 9
    # Replayed in the order the driver sent them (one slot: each result came back before the
    # next key), every promotion was of a trial then in the top 1/eta of its rung.
    values = {
        (t.number, steps): [m["accuracy"], m["latency_ms"]]
        for t in trials
        for steps, m in ((int(s), m) for s, m in t.user_attrs[RUNGS_ATTR].items())
    }
    replay = AshaScheduler(RUNGS, ["max", "min"])
    for key in evaluator.keys:
        number, rung = (int(part) for part in key.split("@"))
        if rung:
            assert number in replay.promotable(rung - 1), key
            replay.promote(number)
        replay.report(number, rung, values[number, RUNGS.steps[rung]])
    assert sum(key.endswith("@0") for key in evaluator.keys) == 9


def test_a_killed_driver_is_resumed_and_its_rung_trials_adopted(tmp_path):
    class Killed(Exception):
        pass

    def kill(progress):
        if progress.in_flight == 0 and len(evaluator.keys) >= 6:
            raise Killed

    evaluator = Curves()
    run = spec(tmp_path)
    with pytest.raises(Killed):
        search(run, evaluator, on_update=kill)
    before = optuna.load_study(study_name="mf", storage=run.storage).get_trials()
    assert any(t.state == TrialState.RUNNING for t in before)

    again = Curves()
    study, progress, _ = search(run, again, resume_it=True)

    trials = study.get_trials()
    assert len(trials) == 9  # the budget counts configs started, before and after
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    keys = evaluator.keys + again.keys
    assert len(keys) == len(set(keys))  # no rung of a trial evaluated twice
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(reached(t) == list(RUNGS.steps) for t in complete)
    assert all(TARGET_ATTR in t.user_attrs for t in trials)
    adopted = {t.number for t in before if t.state == TrialState.RUNNING}
    assert any(int(key.split("@")[0]) in adopted for key in again.keys)  # went on


def test_bad_fidelity_settings_are_one_line(tmp_path):
    with pytest.raises(RunError, match="--fidelity steps needs --min-steps"):
        launch(**spec(tmp_path).model_dump() | {"min_steps": None})
    with pytest.raises(RunError, match="make one rung"):
        launch(**spec(tmp_path).model_dump() | {"max_steps": 10})
    with pytest.raises(RunError, match="unknown study"):
        resume("mf", storage=spec(tmp_path).storage)


def test_a_real_inline_fidelity_search_trains_in_rungs_and_cleans_its_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    result = launch(
        space="simq",
        task="digits",
        trials=3,
        workers=0,
        fidelity="steps",
        min_steps=2,
        max_steps=6,
        eta=3,
        checkpoint_dir=str(folder),
        study="real",
        storage=f"sqlite:///{tmp_path / 'real.db'}",
        profile_repeats=2,
    )

    trials = optuna.load_study(study_name="real", storage=result.storage).get_trials()
    [top] = [t for t in trials if t.state == TrialState.COMPLETE]
    assert reached(top) == [2, 6]
    assert top.user_attrs["metrics"]["steps"] == 6
    assert top.user_attrs[RUNGS_ATTR]["2"]["latency_ms"] == top.values[1]  # measured once
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "PRUNED", "PRUNED"]
    assert list(folder.iterdir()) == []  # stopped and finished trials leave no checkpoint


def test_trials_show_each_rung_and_pareto_shows_the_front_of_any_rung(tmp_path):
    from tnas.search.query import list_trials, rung_front

    run = spec(tmp_path)
    study, _, _ = search(run, Curves())

    with Database(run.storage) as db:
        rows = list_trials(db, "mf")
        fronts = [rung_front(db, "mf", rung) for rung in range(len(RUNGS.steps))]
        with pytest.raises(LookupError, match="has rungs 0..2, not 3"):
            rung_front(db, "mf", 3)
    trials = {t.number: t for t in study.get_trials()}
    assert [row["steps"] for row in rows] == [max(reached(trials[r["number"]])) for r in rows]
    assert list(rows[0])[:3] == ["number", "state", "steps"]
    assert all(row["accuracy"] is not None for row in rows)  # pruned: their last rung's
    assert all(
        row["steps"] == steps
        for front, steps in zip(fronts, RUNGS.steps, strict=True)
        for row in front
    )
    assert {row["number"] for row in fronts[-1]} == {t.number for t in study.best_trials}
    assert len(fronts[0]) >= 1
