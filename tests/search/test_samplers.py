"""Conformance of every registered sampler (Optuna's `BasicSamplerTestCase`, through our driver).

Each sampler in `SAMPLERS` searches a small design space through `tnas.launch`, answered by a
replay table that holds every config of the space, with a SQLite file per study. Every sampler
must stay in the space, meet the budget exactly, never evaluate a config twice, respect the
run's constraints, and finish its budget on `resume` after its driver is killed mid-search.
A sampler added to the registry is picked up here without a line changed.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tnas.launch import launch, resume
from tnas.search.samplers import SAMPLERS
from tnas.search.settings import NOT_EVALUATED
from tnas.space import ArchConfig, DesignSpace
from tnas.workers.replay import write_table
from tnas.workers.reports import ok_report

MIXERS = ["attention", "linear_attention", "retention"]
SPACE = {
    "name": "tiny",
    "description": "1 to 3 layers of 3 mixers x 2 FFN widths, 2 widths: 516 configs",
    "global": {
        "d_model": {"choices": [32, 64]},
        "n_layers": {"low": 1, "high": 3},
        "vocab_size": 64,
        "max_seq_len": 32,
    },
    "shared": {"n_heads": 4},
    "per_layer": {"mixer": {"choices": MIXERS}, "ffn_dim": {"choices": [64, 128]}},
}
GAIN = {"attention": 0.08, "linear_attention": 0.05, "retention": 0.06}
COST = {"attention": 0.9, "linear_attention": 0.4, "retention": 0.5}
BUDGET = 14  # past the 10 random trials that gp, tpe and linas start with: one linas round
POPULATION = 4  # NSGA-II/III's population and linas's batch: several generations in the budget
KILL_AFTER = 6  # evaluated trials before the driver of the resume test is killed


class DriverKilled(Exception):
    """Stands in for a driver dying mid-search (the process killed, the machine lost)."""


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def every_config(space: DesignSpace) -> list[ArchConfig]:
    """Every config of the tiny space, enumerated knob by knob."""
    configs = []
    for d_model, n_layers in itertools.product(space.values("d_model"), space.values("n_layers")):
        cells = itertools.product(space.values("mixer"), space.values("ffn_dim"))
        for layers in itertools.product(list(cells), repeat=n_layers):
            flat = {"d_model": d_model, "n_layers": n_layers}
            for i, (mixer, ffn_dim) in enumerate(layers):
                flat |= {f"layer{i}.mixer": mixer, f"layer{i}.ffn_dim": ffn_dim}
            configs.append(space.from_flat(flat))
    return configs


def metrics_of(config: ArchConfig) -> dict[str, float]:
    """Made-up accuracy and latency that trade off: both grow with size and with the mixers."""
    params = config.derived()["params"]
    accuracy = 1 - 1 / (1 + params / 2e4) + sum(GAIN[layer.mixer] for layer in config.layers)
    latency = params / 1e4 + sum(COST[layer.mixer] for layer in config.layers)
    return {"accuracy": accuracy, "latency_ms": latency}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[DesignSpace, Path, Path, int]:
    """The space, its YAML file, a replay table of all its configs, and a params bound that
    about half of them exceed."""
    import yaml

    folder = tmp_path_factory.mktemp("tiny")
    space_file = folder / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    space = DesignSpace.from_yaml(space_file)
    configs = every_config(space)
    assert len({c.hash for c in configs}) == len(configs) == space.size()  # the whole space
    table = folder / "table.jsonl"
    write_table(table, [(c, ok_report(c.short_hash, c, metrics_of(c))) for c in configs])
    params = sorted(c.derived()["params"] for c in configs)
    bound = params[len(params) // 2]
    assert params[0] <= bound < params[-1]  # satisfiable, and binding
    return space, space_file, table, bound


def settings(tiny, tmp_path: Path, sampler: str, **overrides) -> dict:
    _, space_file, table, bound = tiny
    return {
        "space": str(space_file),
        "objectives": ["accuracy:max", "latency_ms:min"],
        "constraints": [f"params <= {bound}"],
        "trials": BUDGET,
        "workers": 1,
        "sampler": sampler,
        "seed": 0,
        "study": sampler,
        "storage": f"sqlite:///{tmp_path / f'{sampler}.db'}",
        "evaluator": f"replay:{table}",
        "population_size": POPULATION,
        "linas_batch": POPULATION,
    } | overrides


def evaluated(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that count against the budget, as the driver counts them."""
    return [
        t
        for t in trials
        if (t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs)
        or (t.state == TrialState.FAIL and t.user_attrs.get("reason") not in NOT_EVALUATED)
    ]


def repeated(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    counts = Counter(t.user_attrs["config_hash"] for t in trials)
    return {digest: n for digest, n in counts.items() if n > 1}


def outside_the_space(space: DesignSpace, trials) -> list[int]:
    return [
        t.number for t in trials if not space.contains(ArchConfig.from_dict(t.user_attrs["config"]))
    ]


def over_the_bound(bound: int, trials) -> dict[int, int]:
    params = {t.number: ArchConfig.from_dict(t.user_attrs["config"]).derived() for t in trials}
    return {number: p["params"] for number, p in params.items() if p["params"] > bound}


# One search per sampler checks four properties: a search each would cost four times the time,
# and a module fixture shared by four tests is searched again by every xdist worker.
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_constrained_search_stays_in_the_space_meets_the_budget_never_repeats(
    tiny, tmp_path, name
):
    space, _, _, bound = tiny

    result = launch(**settings(tiny, tmp_path, name))

    assert result.stopped == f"{BUDGET} trials evaluated", result.stopped
    trials = optuna.load_study(study_name=name, storage=result.storage).get_trials()
    done = evaluated(trials)
    assert len(done) == BUDGET
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert not outside_the_space(space, done), "evaluated configs outside the space"
    assert not repeated(done), "configs evaluated twice"
    assert not over_the_bound(bound, done), f"evaluated configs over params <= {bound}"


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_killed_search_resumes_to_its_budget(tiny, tmp_path, name):
    def kill_with_trials_in_flight(progress):
        if progress.finished >= KILL_AFTER and progress.in_flight:
            raise DriverKilled

    # a simulated trial time, so that a batch of results comes back while others still run
    run = settings(tiny, tmp_path, name, workers=2, evaluator=f"replay:{tiny[2]},delay=0.02")
    with pytest.raises(DriverKilled):
        launch(**run, progress=kill_with_trials_in_flight)
    storage = run["storage"]
    killed = optuna.load_study(study_name=name, storage=storage).get_trials()
    orphans = {
        t.number: t.user_attrs["config_hash"] for t in killed if t.state == TrialState.RUNNING
    }
    assert orphans, "the driver was killed with no trial in flight"
    assert KILL_AFTER <= len(evaluated(killed)) < BUDGET

    result = resume(name, storage=storage)

    assert result.stopped == f"{BUDGET} trials evaluated", result.stopped
    assert result.progress.requeued == len(orphans)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    done = evaluated(trials)
    assert len(done) == BUDGET
    assert not repeated(done)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    for number in orphans:
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs["reason"] == "orphaned"
    assert set(orphans.values()) <= {t.user_attrs["config_hash"] for t in done}  # requeued
