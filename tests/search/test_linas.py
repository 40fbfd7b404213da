"""The predictor-guided `linas` sampler, through the real driver, storage and replay evaluator."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from tnas.cli import app
from tnas.search.db import Database
from tnas.search.driver import Objective, SearchDriver
from tnas.search.linas import LinasSampler, crowding_distance, survivors, tournament
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.search.samplers import SamplerOptions, create_sampler
from tnas.space import DesignSpace
from tnas.workers.replay import ReplayEvaluator

OPS = ["attention", "linear_attention", "pool", "long_conv", "retention"]
SPACE = {
    "name": "cells",
    "description": "4 layers x 5 mixers, every cell in the replay table",
    "global": {"d_model": 64, "n_layers": 4, "max_seq_len": 64},
    "shared": {"n_heads": 4, "conv_kernel": 3},
    "per_layer": {"mixer": {"choices": OPS}},
}
# Accuracy rises and latency grows with the "cost" of each layer's op, with an interaction
# between neighbouring layers: a real trade-off, learnable from the one-hot encoding.
GAIN = {"attention": 3.0, "linear_attention": 2.2, "pool": 0.2, "long_conv": 1.5, "retention": 2.6}
COST = {"attention": 4.0, "linear_attention": 1.6, "pool": 0.3, "long_conv": 1.2, "retention": 2.0}


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> tuple[DesignSpace, Path, np.ndarray]:
    """The space, its exhaustive replay table (625 cells), and every cell's (acc, latency)."""
    space = DesignSpace.from_dict(SPACE)
    path = tmp_path_factory.mktemp("cells") / "cells.jsonl"
    points = []
    with path.open("w") as handle:
        for ops in itertools.product(OPS, repeat=4):
            pairs = sum(GAIN[a] * GAIN[b] for a, b in itertools.pairwise(ops)) / 10
            accuracy = 50 + 4 * sum(GAIN[o] for o in ops) + pairs
            latency = 1 + sum(COST[o] for o in ops) + 0.3 * (ops[0] == "attention")
            flat = {f"layer{i}.mixer": op for i, op in enumerate(ops)}
            metrics = {"accuracy": accuracy, "latency_ms": latency}
            handle.write(json.dumps({"config": flat, "metrics": metrics}) + "\n")
            points.append([accuracy, latency])
    return space, path, np.array(points)


OBJECTIVES = [Objective("accuracy", "max"), Objective("latency_ms", "min")]


def search(cells, tmp_path, sampler, budget, name="s", objectives=OBJECTIVES, constraints=()):
    space, table, _ = cells
    db = Database(f"sqlite:///{tmp_path / f'{name}.db'}")
    study = optuna.create_study(
        study_name=name,
        storage=db.optuna_storage(),
        sampler=sampler,
        directions=[o.optuna_direction for o in objectives],
    )
    study.set_user_attr("tnas", {"objectives": [o.to_dict() for o in objectives]})
    replay = ReplayEvaluator(table, space, slots=2)
    driver = SearchDriver(
        study, space, replay, list(objectives), db, n_trials=budget, constraints=list(constraints)
    )
    if isinstance(sampler, LinasSampler):
        sampler.feasible = driver.feasible
        sampler.on_round = lambda record: db.save_predictor_round(name, record)
    driver.run()
    trials = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    return db, study, sorted(trials, key=lambda t: t.number)


def small_linas(space, seed=0, **kw) -> LinasSampler:
    settings = {"batch_size": 5, "n_initial": 10, "population": 24, "generations": 10}
    return LinasSampler(space, seed=seed, families=("ridge", "svr"), **(settings | kw))


def hv_share(cells, trials) -> float:
    points = to_minimization(cells[2], ["max", "min"])
    reference = reference_point(points)
    best = hypervolume(points[pareto_front(points)], reference)
    found = to_minimization(np.array([t.values for t in trials]), ["max", "min"])
    return hypervolume(found[pareto_front(found)], reference) / best


def test_linas_finds_a_better_front_than_random_search_with_the_same_budget(cells, tmp_path):
    linas, random = [], []
    for seed in range(3):
        _, _, found = search(cells, tmp_path, small_linas(cells[0], seed), 40, f"l{seed}")
        linas.append(hv_share(cells, found))
        sampler = create_sampler("random", seed)
        _, _, found = search(cells, tmp_path, sampler, 40, f"r{seed}")
        random.append(hv_share(cells, found))
    assert np.mean(linas) > np.mean(random) + 0.02, (linas, random)
    assert np.mean(linas) > 0.9


def test_random_start_then_rounds_each_scored_on_held_out_trials(cells, tmp_path):
    sampler = small_linas(cells[0])
    db, study, trials = search(cells, tmp_path, sampler, 30)
    hashes = [t.user_attrs["config_hash"] for t in trials]
    assert len(set(hashes)) == len(hashes) == 30  # nothing proposed twice
    rows = db.predictor_rounds("s")
    assert rows == [{k: r[k] for k in rows[0]} for r in rows]  # plain dicts
    rounds = sorted({r["round"] for r in rows})
    assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) >= 3
    assert {r["objective"] for r in rows} == {"accuracy", "latency_ms"}
    first = [r for r in rows if r["round"] == 1]
    assert all(r["n_test"] == 0 and r["kendall"] is None for r in first)
    assert all(r["n_train"] >= sampler.n_initial for r in first)
    for row in rows:
        if row["round"] > 1:
            assert row["n_test"] >= 2
            # additive targets: the held-out ranking must be learnt
            assert row["kendall"] > 0.5 and row["spearman"] > 0.5 and 0 <= row["mape"] < 0.5
    # the rows of a round: train + test = the trials evaluated when the round was fitted
    last = max(rounds)
    row = next(r for r in rows if r["round"] == last)
    assert row["n_train"] + row["n_test"] <= len(trials)
    db.close()


def test_a_derived_objective_is_computed_exactly_and_constraints_are_respected(cells, tmp_path):
    from tnas.space.constraints import Constraint

    objectives = [Objective("accuracy", "max"), Objective("params", "min")]
    # the replay table has no params: derive it for the report from the config itself
    space, table, points = cells
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    for row in rows:
        row["metrics"]["params"] = space.from_flat(row["config"]).derived()["params"]
    with_params = tmp_path / "with_params.jsonl"
    with_params.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    limit = float(np.median([r["metrics"]["params"] for r in rows]))
    constraint = Constraint.parse(f"params <= {limit}")
    sampler = small_linas(space)
    db, _, trials = search(
        (space, with_params, points), tmp_path, sampler, 25, "d", objectives, [constraint]
    )
    assert {r["family"] for r in sampler.rounds if r["objective"] == "params"} == {"exact"}
    assert all(t.values[1] <= limit for t in trials)
    db.close()


def test_in_pool_mode_every_proposal_comes_from_the_pool(cells, tmp_path):
    space = cells[0]
    rng = np.random.default_rng(3)
    pool = list({c.hash: c for c in (space.sample(rng) for _ in range(80))}.values())
    sampler = small_linas(space, candidates=pool)
    _, _, trials = search(cells, tmp_path, sampler, 25, "p")
    assert {t.user_attrs["config_hash"] for t in trials} <= {c.hash for c in pool}
    assert len(sampler.rounds) > 0


def test_nsga2_helpers():
    points = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    distance = crowding_distance(points)
    assert np.isinf(distance[[0, 3]]).all() and np.allclose(distance[1:3], [4 / 3, 4 / 3])
    assert survivors(np.array([[1.0, 1.0], [2.0, 2.0], [0.0, 3.0]]), 2) == [0, 2]
    rng = np.random.default_rng(0)
    ranks, crowding = np.array([0, 1]), np.array([0.0, 9.0])
    assert {tournament(ranks, crowding, rng) for _ in range(50)} <= {0, 1}
    assert tournament(np.array([1, 0]), np.zeros(2), np.random.default_rng(1)) in (0, 1)


def test_create_sampler_needs_the_space_for_linas(cells):
    with pytest.raises(ValueError, match="needs the design space"):
        create_sampler("linas", 0)
    sampler = create_sampler("linas", 0, SamplerOptions(linas_batch=8), space=cells[0])
    assert isinstance(sampler, LinasSampler)
    assert sampler.batch_size == 8


def test_cli_search_with_linas_and_predictors_report(cells, tmp_path):
    space_file = tmp_path / "cells.yaml"
    space_file.write_text(json.dumps(SPACE))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    launch = [
        "search", "launch", "--space", str(space_file), "--evaluator", f"replay:{cells[1]}",
        "--sampler", "linas", "--trials", "60", "--study", "lin", "--storage", url,
        "--workers", "2",
    ]  # fmt: skip
    result = runner.invoke(app, launch)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predictors", "report", "lin", "--storage", url])
    assert result.exit_code == 0 and "predictor quality of lin" in result.output, result.output
    result = runner.invoke(
        app, ["predictors", "report", "lin", "--storage", url, "--format", "json"]
    )
    rows = json.loads(result.output)
    assert {"round", "objective", "family", "kendall", "spearman", "mape"} <= set(rows[0])
    assert max(r["round"] for r in rows) >= 2
    result = runner.invoke(app, ["predictors", "report", "nope", "--storage", url])
    assert result.exit_code == 2 and "unknown study 'nope'" in result.output
