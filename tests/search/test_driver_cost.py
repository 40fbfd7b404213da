"""The driver's bookkeeping, made cheap, gives what the plain code gave.

- the pool lookup (`PoolIndex`, by array operations) returns the member the per-member loop
  returned, ties and taken members included;
- the incremental view of a study (`StudyView`) equals a full re-read of its trials after
  interleaved asks and tells by two drivers on one SQLite study;
- tables and pools read by `ConfigReader` equal what `from_flat` / `from_dict` read, errors
  included, and a pool that is the replay table is read once.

Correctness only: the timings are `bench/driver.py`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tnas.predictors import encode
from tnas.search.db import Database
from tnas.search.driver import SearchDriver
from tnas.search.pareto import pareto_front, to_minimization
from tnas.search.reference import usable_metric
from tnas.search.settings import NOT_EVALUATED
from tnas.search.view import StudyView
from tnas.space import PRESETS, ArchConfig, DesignSpace, load_space
from tnas.space.reader import ConfigReader
from tnas.workers.replay import load_table

TIES = {  # few distinct encodings: many pool members at one distance
    "name": "ties",
    "global": {"d_model": {"choices": [32, 64]}, "n_layers": {"low": 1, "high": 3}},
    "shared": {"n_heads": 4},
    "per_layer": {
        "mixer": {"choices": ["attention", "linear_attention", "retention"]},
        "ffn_dim": {"choices": [64, 128]},
    },
}
DIRECTIONS = ["max", "min"]


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def loop_nearest(space, pool, config, taken):
    """The lookup as the driver did it before: every candidate encoded, in pool order."""
    candidates = [c for c in pool if c.hash not in taken]
    if not candidates:
        return None
    target = encode(space, config)
    distances = [float(np.sum((encode(space, c) - target) ** 2)) for c in candidates]
    return candidates[int(np.argmin(distances))]


def pool_driver(space: DesignSpace, pool: list[ArchConfig]) -> SearchDriver:
    study = optuna.create_study(directions=["maximize", "minimize"])
    return SearchDriver(
        study=study, space=space, evaluator=None, objectives=[], db=None, n_trials=1, pool=pool
    )


@pytest.mark.parametrize("space_name", ["ties", "primer", "mixers"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pool_lookup_returns_what_the_loop_returned(space_name, seed):
    space = DesignSpace.from_dict(TIES) if space_name == "ties" else load_space(space_name)
    rng = np.random.default_rng(seed)
    pool = [space.sample(rng) for _ in range(150)]
    pool += [pool[int(i)] for i in rng.integers(len(pool), size=20)]  # the same config twice
    rng.shuffle(pool)
    driver = pool_driver(space, pool)
    hashes = sorted({c.hash for c in pool})
    taken: set[str] = set()
    for step in range(80):
        if step % 9 == 8 and taken:  # a trial cut short: its config is free again
            taken.discard(sorted(taken)[int(rng.integers(len(taken)))])
        taken |= {hashes[int(i)] for i in rng.integers(len(hashes), size=int(rng.integers(3)))}
        taken.add(f"not-in-the-pool-{step}")
        target = pool[int(rng.integers(len(pool)))] if step % 2 else space.sample(rng)
        expected = loop_nearest(space, pool, target, taken)
        found = driver.nearest_unevaluated(target, set(taken))
        assert found is expected  # the same member: the first of the nearest in pool order
        if expected is not None and step % 3 == 0:
            taken.add(expected.hash)
    every = {c.hash for c in pool}
    assert driver.nearest_unevaluated(pool[0], every) is None
    assert loop_nearest(space, pool, pool[0], every) is None


def test_pool_lookup_breaks_exact_ties_by_pool_order():
    space = DesignSpace.from_dict(TIES)
    base = space.from_flat({"d_model": 32, "n_layers": 1, "layer0.mixer": "attention"} | FFN)
    near = [  # each one knob from `base`, so at one distance from it
        space.from_flat({"d_model": 32, "n_layers": 1, "layer0.mixer": mixer} | FFN)
        for mixer in ("retention", "linear_attention")
    ]
    driver = pool_driver(space, [*near, base])
    assert driver.nearest_unevaluated(base, {base.hash}) is near[0]
    driver = pool_driver(space, [near[1], near[0], base])
    assert driver.nearest_unevaluated(base, {base.hash}) is near[1]
    assert driver.nearest_unevaluated(base, {base.hash, near[1].hash}) is near[0]


FFN = {"layer0.ffn_dim": 64}


def full_read(study, directions):
    """Everything `StudyView` keeps, from one pass over every trial (the driver's old way)."""
    values, running, members, claims, failed_configs = {}, set(), [], {}, set()
    evaluated = failed = 0
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        digest = attrs.get("config_hash")
        duplicate = "duplicate_of" in attrs
        if trial.state in (TrialState.RUNNING, TrialState.COMPLETE) and digest and not duplicate:
            claims.setdefault(digest, set()).add(trial.number)
        if trial.state == TrialState.RUNNING and digest:
            running.add(digest)
        elif trial.state == TrialState.COMPLETE and not duplicate:
            evaluated += 1
            values[digest] = list(trial.values)
            members.append((trial.number, digest, attrs.get("config", {}), list(trial.values)))
        elif trial.state == TrialState.FAIL and attrs.get("reason") not in NOT_EVALUATED:
            evaluated += 1
            failed += 1
            failed_configs.add(digest)
    usable = [m for m in members if all(map(usable_metric, m[3]))]
    points = np.array([m[3] for m in usable], dtype=float).reshape(len(usable), 2)
    front = [usable[i][0] for i in pareto_front(to_minimization(points, directions))]
    return {
        "values": values,
        "running": running,
        "members": members,
        "claims": claims,
        "evaluated": evaluated,
        "failed": failed,
        "failed_configs": failed_configs,
        "usable": [m[0] for m in usable],
        "usable_values": points.tolist(),
        "front": front if usable else [],
    }


def view_read(view: StudyView, directions):
    return {
        "values": view.values,
        "running": view.running_hashes(),
        "members": [(m.number, m.config_hash, m.config, m.values) for m in view.members],
        "claims": {digest: set(numbers) for digest, numbers in view.claims.items() if numbers},
        "evaluated": view.evaluated,
        "failed": view.failed,
        "failed_configs": view.failed_configs,
        "usable": [m.number for m in view.usable],
        "usable_values": view.usable_values().tolist(),
        "front": [m.number for m in view.front(directions)] if view.usable else [],
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_view_equals_a_full_read_with_two_drivers(tmp_path, seed):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first, second, reader = Database(url), Database(url), Database(url)
    try:
        optuna.create_study(
            study_name="s", storage=first.optuna_storage(), directions=["maximize", "minimize"]
        )
        studies = [
            optuna.load_study(study_name="s", storage=db.optuna_storage()) for db in (first, second)
        ]
        views = [StudyView(study) for study in studies]
        open_trials: list[list] = [[], []]
        rng = np.random.default_rng(seed)
        hashes = [f"h{i}" for i in range(12)]  # few: the drivers collide on configs
        reasons = ["error", "nan_loss", *sorted(NOT_EVALUATED)]
        for step in range(90):
            side = int(rng.integers(2))
            study, view, trials = studies[side], views[side], open_trials[side]
            action = rng.choice(["ask", "ask", "tell", "tell", "enqueue"])
            if action == "enqueue":
                study.enqueue_trial({}, skip_if_exists=False)
            elif action == "ask" or not trials:
                trial = study.ask()
                digest = hashes[int(rng.integers(len(hashes)))]
                trial.set_user_attr("config", {"d_model": int(rng.integers(64))})
                trial.set_user_attr("config_hash", digest)  # the claim, then the read
                view.refresh()
                if len(view.claimed_by(digest) - {trial.number}) and rng.random() < 0.7:
                    trial.set_user_attr("duplicate_of", digest)
                trials.append(trial)
            else:
                trial = trials.pop(int(rng.integers(len(trials))))
                outcome = rng.random()
                if outcome < 0.6:
                    accuracy = float(rng.choice([0.5, 0.7, 0.9, 1e31]))  # 1e31: not usable
                    study.tell(trial, [accuracy, float(rng.choice([1.0, 2.0, 3.0]))])
                else:
                    trial.set_user_attr("reason", reasons[int(rng.integers(len(reasons)))])
                    study.tell(trial, state=TrialState.FAIL)
            for either in range(2):
                if either == side or rng.random() < 0.5:
                    views[either].refresh()
                    truth = full_read(
                        optuna.load_study(study_name="s", storage=reader.optuna_storage()),
                        DIRECTIONS,
                    )
                    assert view_read(views[either], DIRECTIONS) == truth, f"step {step}"
    finally:
        for db in (first, second, reader):
            db.close()


def old_rows(path: Path, space: DesignSpace) -> dict:
    """A JSONL replay table read as before: `from_flat` / `from_dict` per row."""
    rows = {}
    for text in path.read_text().splitlines():
        record = json.loads(text)
        value = record["config"]
        config = ArchConfig.from_dict(value) if "layers" in value else space.from_flat(value)
        metrics = {name: float(number) for name, number in record["metrics"].items()}
        rows[config.hash] = (config, metrics, record.get("status", "ok"), record.get("reason"))
    return rows


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "full"])
def test_replay_table_reads_as_before(tmp_path, flat):
    space = load_space("primer")
    rng = np.random.default_rng(3)
    configs = [space.sample(rng) for _ in range(300)]
    configs += configs[:5]  # a config recorded twice: the later row's metrics, the first's place
    lines = []
    for i, config in enumerate(configs):
        record = {"config": space.to_flat(config) if flat else config.to_dict()}
        record["metrics"] = {"accuracy": i / 1000, "latency_ms": 1 + i % 7}
        if i % 11 == 0:
            record |= {"status": "failed", "reason": "nan_loss"}
        lines.append(json.dumps(record))
    table = tmp_path / "table.jsonl"
    table.write_text("\n".join(lines) + "\n")
    rows = load_table(table, space)
    expected = old_rows(table, space)
    assert list(rows) == list(expected)
    for digest, (config, metrics, status, reason) in expected.items():
        row = rows[digest]
        assert row["config"] == config and row["config"].hash == digest
        assert (row["metrics"], row["status"], row["reason"]) == (metrics, status, reason)


def outcome(read, value):
    try:
        config = read(value)
    except Exception as err:  # the same error, type and message, is part of the contract
        return type(err).__name__, str(err)
    return "ok", config, config.hash


def variants(flat: dict, rng) -> list:
    """`flat` and copies of it broken or bent in the ways a hand-made table can be."""
    keys = sorted(flat)
    out = [flat, {**flat, "not_a_knob": 1}, list(flat.items()), "d_model"]
    for _ in range(12):
        key = keys[int(rng.integers(len(keys)))]
        value = flat[key]
        bent = [None, str(value), True, [value]]
        if isinstance(value, int) and not isinstance(value, bool):
            bent += [value + 1, float(value), 3]
        out.append({**flat, key: bent[int(rng.integers(len(bent)))]})
        out.append({k: v for k, v in flat.items() if k != key})
    return out


@pytest.mark.parametrize("space_name", PRESETS)
def test_config_reader_gives_from_flat_and_from_dict_results_and_errors(space_name):
    space = load_space(space_name)
    reader = ConfigReader(space)
    rng = np.random.default_rng(5)
    for _ in range(25):
        config = space.sample(rng)
        for value in variants(space.to_flat(config), rng):
            assert outcome(reader.read_flat, value) == outcome(space.from_flat, value)
        full = config.to_dict()
        layer = dict(full["layers"][0])
        broken = [
            full,
            {**full, "d_model": float(full["d_model"])},
            {**full, "layers": [{**layer, "ffn_dim": "wide"}]},
            {**full, "layers": [{**layer, "width": 3}], "n_layers": 1},
            {**full, "layers": [layer], "n_layers": 1},
            {**full, "layers": [{**layer, "n_heads": 7}], "n_layers": 1},
            {**full, "extra": 1},
            {**full, "layers": "none"},
        ]
        for value in broken:
            assert outcome(reader.read_full, value) == outcome(ArchConfig.from_dict, value)


def test_a_pool_that_is_the_replay_table_is_read_once(tmp_path, monkeypatch):
    from tnas import launch
    from tnas.search import run
    from tnas.workers import replay

    space = load_space("primer")
    rng = np.random.default_rng(0)
    table = tmp_path / "table.jsonl"
    table.write_text(
        "".join(
            json.dumps({"config": space.to_flat(space.sample(rng)), "metrics": {"accuracy": 0.5}})
            + "\n"
            for _ in range(20)
        )
    )
    reads = []
    monkeypatch.setattr(run, "read_pool", lambda *a: reads.append("pool") or [])
    original = replay.load_table
    monkeypatch.setattr(replay, "load_table", lambda *a: reads.append("table") or original(*a))
    spec = launch.run_spec(space="primer", pool=str(table), objectives=["accuracy:max"])
    plan = launch.prepare(spec)
    assert reads == ["table"]
    assert [c.hash for c in plan.pool] == list(plan.start_evaluator().rows)
