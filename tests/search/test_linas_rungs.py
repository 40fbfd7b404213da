"""`linas` in a multi-fidelity study: it learns from every rung, with the rung as a feature.

In-memory studies hold trials as the multi-fidelity driver leaves them (RUNNING with a `rungs`
attribute while they train or wait, PRUNED or COMPLETE at the end); the metrics follow a
made-up learning curve, accuracy `quality * steps / (steps + 20)`, latency and params fixed.
The last test runs the real multi-fidelity driver and plumbing with a stand-in evaluator.
"""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from tests.search.test_linas import COST, GAIN, SPACE, small_linas
from tnas.predictors import kendall_tau, mape
from tnas.search.db import Database
from tnas.search.driver import Objective
from tnas.search.fidelity import Rungs
from tnas.search.linas import LinasSampler
from tnas.search.multifidelity import RUNGS_ATTR, FidelityDriver
from tnas.search.run import RunSpec, make_driver, open_study
from tnas.space import ArchConfig, DesignSpace
from tnas.workers.reports import ok_report

TOP = 162
OBJECTIVES = [
    Objective("accuracy", "max"),
    Objective("latency_ms", "min"),
    Objective("params", "min"),  # derived: computed exactly from the config
]


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def space() -> DesignSpace:
    return DesignSpace.from_dict(SPACE)


@pytest.fixture(scope="module")
def configs(space) -> list[ArchConfig]:
    """Every config of the space (625), in a fixed shuffled order."""
    flats = [
        {f"layer{i}.mixer": op for i, op in enumerate(ops)}
        for ops in itertools.product(GAIN, repeat=4)
    ]
    order = np.random.default_rng(0).permutation(len(flats))
    return [space.from_flat(flats[i]) for i in order]


def ops(config: ArchConfig) -> list[str]:
    return [layer.mixer for layer in config.layers]


def metrics(config: ArchConfig, steps: int) -> dict[str, float]:
    mixers = ops(config)
    quality = 50 + 4 * sum(GAIN[o] for o in mixers)
    quality += sum(GAIN[a] * GAIN[b] for a, b in itertools.pairwise(mixers)) / 10
    return {
        "accuracy": quality * steps / (steps + 20),
        "latency_ms": 1 + sum(COST[o] for o in mixers),
        "params": config.derived()["params"],
    }


def new_study(sampler=None) -> optuna.Study:
    study = optuna.create_study(
        sampler=sampler or optuna.samplers.RandomSampler(0),
        directions=[o.optuna_direction for o in OBJECTIVES],
    )
    study.set_user_attr("tnas", {"objectives": [o.to_dict() for o in OBJECTIVES]})
    return study


def add(study, config: ArchConfig, state=TrialState.RUNNING, rungs=(), **attrs) -> None:
    """A trial as the multi-fidelity driver leaves it: its metrics at each of `rungs`."""
    user_attrs = {"config": config.to_dict(), "config_hash": config.hash} | attrs
    if rungs:
        user_attrs[RUNGS_ATTR] = {str(steps): metrics(config, steps) for steps in rungs}
    values = None
    if state in (TrialState.COMPLETE, TrialState.PRUNED):
        last = metrics(config, max(rungs))
        values = [last[o.name] for o in OBJECTIVES]
    study.add_trial(create_trial(state=state, values=values, user_attrs=user_attrs))


def rung_study(configs, sampler=None, low=30, middle=12, top=5) -> optuna.Study:
    """`low` RUNNING trials at 18 steps, `middle` RUNNING at 54, `top` COMPLETE at 162."""
    study = new_study(sampler)
    for i, config in enumerate(configs[: low + middle + top]):
        if i < low:
            add(study, config, rungs=(18,))
        elif i < low + middle:
            add(study, config, rungs=(18, 54))
        else:
            add(study, config, TrialState.COMPLETE, rungs=(18, 54, 162))
    return study


def test_history_takes_each_trial_at_its_highest_usable_rung(space, configs):
    study = new_study()
    add(study, configs[0], rungs=(18, 54))  # RUNNING, waiting at 54
    add(study, configs[1], rungs=(18, 54))  # 54 unusable (no accuracy): 18
    add(study, configs[2])  # RUNNING, training its first rung: no result yet
    add(study, configs[3], TrialState.PRUNED, rungs=(18,))
    add(study, configs[4], TrialState.PRUNED, rungs=(18,))  # the same config, two trials:
    add(study, configs[4], TrialState.COMPLETE, rungs=(18, 54, 162))  # the highest rung wins
    add(study, configs[0], TrialState.PRUNED, rungs=(18,))  # whichever comes first
    add(study, configs[5], TrialState.FAIL, rungs=(18,), reason="error")  # taken, not learnt
    add(study, configs[6], rungs=(18,), duplicate_of=0)  # in flight, not learnt
    trial = study.get_trials(deepcopy=False)[1]
    broken = trial.user_attrs[RUNGS_ATTR] | {"54": metrics(configs[1], 54) | {"accuracy": None}}
    study._storage.set_trial_user_attr(trial._trial_id, RUNGS_ATTR, broken)

    done, taken, running = LinasSampler(space, top_steps=TOP).history(study)

    steps = {digest: example.steps for digest, example in done.items()}
    assert steps == {
        configs[0].hash: 54,
        configs[1].hash: 18,
        configs[3].hash: 18,
        configs[4].hash: 162,
    }
    names = [o.name for o in OBJECTIVES]
    assert done[configs[0].hash].values == [metrics(configs[0], 54)[n] for n in names]
    assert done[configs[1].hash].values == [metrics(configs[1], 18)[n] for n in names]
    assert taken == {c.hash for c in configs[:7]}
    assert running == 2  # in flight without a result; those with one count as evaluated

    # without top_steps: only COMPLETE trials teach, every RUNNING one is in flight
    done, taken, running = LinasSampler(space).history(study)
    assert {h: e.steps for h, e in done.items()} == {configs[4].hash: None}
    assert taken == {c.hash for c in configs[:7]} - {configs[3].hash}  # PRUNED: as before
    assert running == 4


def test_models_take_the_rung_as_a_feature_and_predict_at_the_top_rung(space, configs):
    sampler = small_linas(space, top_steps=TOP)
    study = rung_study(configs)
    batch = sampler.next_batch(study)

    assert len(batch) == sampler.batch_size and sampler.last is not None
    accuracy, latency, params = sampler.last.models
    assert accuracy.uses_fidelity and latency.uses_fidelity and not params.uses_fidelity
    assert params.family == "exact"
    width = sampler.features(configs[:1]).shape[1]
    assert accuracy.mean.predict(np.zeros((1, width + 1))).shape == (1,)
    with pytest.raises(ValueError):
        accuracy.mean.predict(np.zeros((1, width)))  # fitted with one more column

    unseen = configs[100:160]
    truth = np.array([[metrics(c, TOP)[o.name] for o in OBJECTIVES] for c in unseen])
    signs = np.array([-1.0, 1.0, 1.0])
    at_top = sampler.predict(sampler.last.models, unseen)[0] * signs
    at_low = sampler.predict(sampler.last.models, unseen, [18] * len(unseen))[0] * signs
    assert kendall_tau(truth[:, 0], at_top[:, 0]) > 0.7
    assert mape(truth[:, 0], at_top[:, 0]) < 0.1  # the top rung's level, from 5 trials
    assert mape(truth[:, 0], at_low[:, 0]) > 0.3  # at 18 steps accuracy is about half
    assert np.array_equal(at_top[:, 2], [c.derived()["params"] for c in unseen])  # exact


def test_a_single_rung_leaves_the_fidelity_out_and_evaluated_values_as_measured(space, configs):
    sampler = small_linas(space, top_steps=TOP)
    study = rung_study(configs, low=20, middle=0, top=0)
    sampler.next_batch(study)
    assert not any(model.uses_fidelity for model in sampler.last.models)
    examples = list(sampler.history(study)[0].values())
    values = np.array([e.values for e in examples]) * np.array([-1.0, 1.0, 1.0])
    steps = [e.steps for e in examples]
    configs_seen = [e.config for e in examples]
    assert sampler.at_top(sampler.last.models, configs_seen, values, steps) is values


def test_evaluated_values_are_moved_to_the_top_rung_for_the_batch(space, configs):
    sampler = small_linas(space, top_steps=TOP)
    study = rung_study(configs)
    sampler.next_batch(study)
    examples = list(sampler.history(study)[0].values())
    values = np.array([e.values for e in examples]) * np.array([-1.0, 1.0, 1.0])
    steps = [e.steps for e in examples]
    moved = sampler.at_top(sampler.last.models, [e.config for e in examples], values, steps)
    at_top = np.array([s == TOP for s in steps])
    assert np.array_equal(moved[at_top], values[at_top])
    truth = -np.array([metrics(e.config, TOP)["accuracy"] for e in examples])
    # accuracies at 18 and 54 steps, moved to 162, land near the true top-rung accuracy
    assert np.abs(moved[~at_top, 0] / truth[~at_top] - 1).mean() < 0.1
    assert np.abs(values[~at_top, 0] / truth[~at_top] - 1).mean() > 0.2
    assert np.array_equal(moved[:, 2], values[:, 2])  # params: exact, no gain


def test_linas_proposes_from_predictors_once_enough_rungs_report(space, configs):
    def study_for(sampler, with_results: int, without: int) -> optuna.Study:
        study = new_study(sampler)
        for i, config in enumerate(configs[: with_results + without]):
            add(study, config, rungs=(18,) if i < with_results else ())
        return study

    # 5 trials with a result and 3 still at their first rung: 8 started, below n_initial
    sampler = small_linas(space, top_steps=TOP)
    study_for(sampler, 5, 3).ask()
    assert sampler.last is None and sampler.rounds == []
    assert len(sampler.queue) == 1  # a random batch of 10 - 8, one handed out

    # 10 trials at their first rung, none COMPLETE: a predictor round proposes the batch
    sampler = small_linas(space, top_steps=TOP)
    study = study_for(sampler, 10, 0)
    trial = study.ask()
    assert sampler.last is not None and sampler.last.number == 1
    assert len(sampler.rounds) == len(OBJECTIVES)
    assert {r["n_train"] for r in sampler.rounds} == {10}
    proposal = space.from_flat(sampler.assigned[trial.number])
    assert proposal.hash not in {c.hash for c in configs[:10]}
    assert len(sampler.queue) == sampler.batch_size - 1

    # without top_steps the same study teaches nothing: a random batch
    sampler = small_linas(space)
    study_for(sampler, 10, 0).ask()
    assert sampler.last is None and sampler.rounds == []


def test_a_config_promoted_since_the_last_round_is_scored_again(space, configs):
    sampler = small_linas(space, top_steps=TOP)
    study = rung_study(configs, low=20, middle=6, top=0)
    sampler.next_batch(study)
    # since: 4 of the 18-step trials reached 54 steps, and 3 new configs reported at 18
    for trial in study.get_trials(deepcopy=False)[:4]:
        config = ArchConfig.from_dict(trial.user_attrs["config"])
        promoted = trial.user_attrs[RUNGS_ATTR] | {"54": metrics(config, 54)}
        study._storage.set_trial_user_attr(trial._trial_id, RUNGS_ATTR, promoted)
    for config in configs[26:29]:
        add(study, config, rungs=(18,))
    sampler.next_batch(study)

    second = [r for r in sampler.rounds if r["round"] == 2]
    assert [r["n_test"] for r in second] == [7, 7, 7]
    assert [r["n_train"] for r in second] == [22, 22, 22]  # 26 examples, 4 of them moved on
    accuracy = next(r for r in second if r["objective"] == "accuracy")
    assert accuracy["kendall"] > 0.5 and accuracy["mape"] < 0.1


class LearningCurves:
    """Answers `"N@R"` keys as `FidelityJob` does, from `metrics` (nothing is trained)."""

    def __init__(self, rungs: Rungs):
        self.rungs, self.slots, self.done = rungs, 1, []

    def submit(self, key, config):
        rung = int(key.partition("@")[2])
        steps = self.rungs.steps[rung]
        report = ok_report(key, config, metrics(config, steps) | {"steps": steps})
        self.done.append(report | {"rung": rung, "steps": steps})

    def collect(self, timeout=None):
        reports, self.done = self.done, []
        return reports

    def close(self):
        pass


def test_a_multi_fidelity_search_runs_linas_rounds_before_any_trial_reaches_the_top(
    space, tmp_path
):
    rungs = Rungs(10, 90, 3)  # 10, 30, 90 steps
    space_file = tmp_path / "cells.yaml"
    space_file.write_text(json.dumps(SPACE))
    run = RunSpec(
        space=str(space_file),
        sampler="linas",
        objectives=["accuracy:max", "latency_ms:min"],
        trials=15,
        workers=1,
        study="mf",
        storage=f"sqlite:///{tmp_path / 'mf.db'}",
        fidelity="steps",
        min_steps=rungs.min_steps,
        max_steps=rungs.max_steps,
        eta=rungs.eta,
    )
    complete_at_round = []
    with Database(run.storage) as db:
        study = open_study(run, db, space)
        driver = make_driver(run, study, space, LearningCurves(rungs), db, [], None, None)
        assert isinstance(driver, FidelityDriver)
        sampler = study.sampler
        assert isinstance(sampler, LinasSampler) and sampler.top_steps == 90  # the plumbing
        sampler.n_initial = 5  # rounds start before a top-rung result can exist (9 configs)
        sampler.families, sampler.exploration = ("ridge",), 0.0  # quick rounds
        sampler.population, sampler.generations = 16, 5

        def on_round(record, save=sampler.on_round):
            states = [t.state for t in study.get_trials(deepcopy=False)]
            complete_at_round.append(states.count(TrialState.COMPLETE))
            save(record)

        sampler.on_round = on_round
        driver.run()
        rows = db.predictor_rounds("mf")

    trials = study.get_trials()
    assert any(t.state == TrialState.COMPLETE for t in trials)  # the top rung was reached
    assert rows and {r["round"] for r in rows} == set(range(1, max(r["round"] for r in rows) + 1))
    assert complete_at_round[0] == 0  # the first round learnt from rungs below the top only
    first = [r for r in rows if r["round"] == 1]
    assert all(r["n_train"] >= 5 for r in first)
