"""The driver's writes, batched, store what one write per attribute stored.

- `set_trial_user_attrs` writes a trial's user attributes (and system attributes) in one
  transaction that reads back, through Optuna's API, as `Trial.set_user_attr` and
  `Trial.set_constraint` wrote them, the JSON text included, on every storage the driver meets;
  a batch that fails writes nothing;
- a replay search stores, trial by trial, the same states, values, parameters, user attributes
  and constraint values as the driver that wrote one attribute per commit;
- tnas's SQLite connections, Optuna's included, are in WAL mode with `synchronous=NORMAL`, and a
  database that is not in WAL mode keeps SQLite's default (FULL).

Correctness only: the timings are `bench/driver.py`'s.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import select, text

from tests.search.test_samplers import SPACE, every_config
from tnas.launch import launch
from tnas.search import run as runs
from tnas.search.db import Database
from tnas.search.db.session import _sqlite_synchronous, set_trial_user_attrs
from tnas.search.driver import DRIVER_ATTR, SearchDriver
from tnas.space import ArchConfig, DesignSpace
from tnas.workers.replay import write_table
from tnas.workers.reports import failed, ok_report

ATTRS = {
    "config": {"d_model": 64, "layers": [{"mixer": "attention", "ffn_dim": 128}]},
    "config_hash": "ab12cd34",
    "metrics": {"accuracy": 0.75, "latency_ms": 3.25},
    "curve": [[0, 2.5], [10, 1.25]],
    "fingerprint": {"device": "cpu", "id": "3f2a", "cpu": "Zeta \u00e9 \u4e2d"},
    "timings": {},
    "attempts": 2,
    "reason": None,
    "error": None,
    "node_ip": "10.0.0.7",
    "flag": True,
    "big": 1e300,
}
CONSTRAINTS = {"params <= 2e6": -12.5, "latency_ms <= 5": 0.0}
OBJECTIVES = ["accuracy:max", "latency_ms:min"]
TRIALS = 30
# The attributes of a trial the driver evaluated: the claim, then the report.
EVALUATED = {"config", "config_hash", DRIVER_ATTR}
EVALUATED |= {"metrics", "curve", "fingerprint", "timings", "attempts", "reason", "error"}
OPTIONAL = {"node_ip", "latency"}  # the Ray node; latency sources (`--latency`)


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class PerAttributeDriver(SearchDriver):
    """The driver's writes before: one Optuna call, one commit, per attribute and constraint."""

    def store(self, trial, attrs: dict, constraints: dict[str, float] | None = None) -> None:
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        for name, value in (constraints or {}).items():
            trial.set_constraint(name, value)


def tnas_storage(request, tmp_path: Path):
    """What a search writes through: `RetryingStorage` over `_CachedStorage` over RDB."""
    db = Database(tmp_path / "search.db")
    return db.optuna_storage(), db


def tnas_postgres_storage(request, tmp_path: Path):
    db = Database(request.getfixturevalue("postgres_url"))
    return db.optuna_storage(), db


def cached_storage(request, tmp_path: Path):
    """What Optuna makes of a SQLite URL: its `_CachedStorage` over `RDBStorage`."""
    return optuna.storages.get_storage(f"sqlite:///{tmp_path / 'optuna.db'}"), None


def rdb_storage(request, tmp_path: Path):
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'rdb.db'}"), None


def memory_storage(request, tmp_path: Path):
    return optuna.storages.InMemoryStorage(), None


STORAGES = {
    "tnas-sqlite": tnas_storage,
    "tnas-postgres": tnas_postgres_storage,
    "optuna-cached-sqlite": cached_storage,
    "optuna-rdb-sqlite": rdb_storage,
    "in-memory": memory_storage,
}


@pytest.fixture(params=list(STORAGES), ids=list(STORAGES))
def study(request, tmp_path):
    storage, db = STORAGES[request.param](request, tmp_path)
    yield optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    if db is not None:
        db.close()


def rdb_of(storage):
    """The `RDBStorage` behind a storage, or None."""
    storage = getattr(storage, "_storage", storage)  # RetryingStorage
    storage = getattr(storage, "_backend", storage)  # _CachedStorage
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def stored_json(storage, trial_id: int, model) -> dict[str, str]:
    """The JSON text of each attribute row of a trial, as the database holds it."""
    rdb = rdb_of(storage)
    query = select(model.key, model.value_json).where(model.trial_id == trial_id)
    with rdb.engine.connect() as connection:
        return dict(connection.execute(query).all())


def test_batch_reads_back_as_one_write_per_attribute(study):
    one_by_one, batched = study.ask(), study.ask()
    for name, value in ATTRS.items():
        one_by_one.set_user_attr(name, value)
    for name, value in CONSTRAINTS.items():
        one_by_one.set_constraint(name, value)
    system_attrs = {f"constraints:{name}": value for name, value in CONSTRAINTS.items()}
    set_trial_user_attrs(study._storage, batched._trial_id, ATTRS, system_attrs)
    for trial in (one_by_one, batched):
        study.tell(trial, [0.5, 1.0])
    first, second = study.get_trials(deepcopy=False)
    assert second.user_attrs == first.user_attrs == ATTRS
    assert second.system_attrs == first.system_attrs
    assert second.constraints == first.constraints == CONSTRAINTS
    if rdb_of(study._storage) is not None:
        for model in (models.TrialUserAttributeModel, models.TrialSystemAttributeModel):
            assert stored_json(study._storage, batched._trial_id, model) == stored_json(
                study._storage, one_by_one._trial_id, model
            )


def test_batch_overwrites_as_set_user_attr_does(study):
    trial = study.ask()
    set_trial_user_attrs(study._storage, trial._trial_id, {"reason": None, "error": None})
    set_trial_user_attrs(study._storage, trial._trial_id, {"reason": "oom", "attempts": 1})
    assert study._storage.get_trial(trial._trial_id).user_attrs == {
        "reason": "oom",
        "error": None,
        "attempts": 1,
    }


@pytest.mark.parametrize("kind", ["tnas-sqlite", "tnas-postgres", "optuna-cached-sqlite"])
def test_a_failed_batch_writes_nothing(kind, request, tmp_path):
    storage, db = STORAGES[kind](request, tmp_path)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    with pytest.raises(TypeError):  # not JSON: after the user attribute is written
        set_trial_user_attrs(
            study._storage, trial._trial_id, {"config_hash": "ab"}, {"x": object()}
        )
    assert study._storage.get_trial(trial._trial_id).user_attrs == {}
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_trial_user_attrs(study._storage, trial._trial_id, {"reason": "late"})
    assert study._storage.get_trial(trial._trial_id).user_attrs == {}
    if db is not None:
        db.close()


def test_store_updates_the_trial_object_as_set_user_attr_does(tmp_path):
    storage, db = tnas_storage(None, tmp_path)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    driver = SearchDriver(study=study, space=None, evaluator=None, objectives=[], db=db, n_trials=1)
    trial = study.ask()
    driver.store(trial, {"config_hash": "ab12"}, {"params <= 2e6": -1.0})
    driver.store(trial, {"reason": "interrupted"})
    assert trial.user_attrs == {"config_hash": "ab12", "reason": "interrupted"}
    assert trial._cached_frozen_trial.system_attrs == {"constraints:params <= 2e6": -1.0}
    with pytest.raises(ValueError, match="NaN"):  # as `set_constraint` refuses it
        driver.store(trial, {}, {"params <= 2e6": math.nan})
    db.close()


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, Path, int]:
    """A space file and a replay table of every config of the space, some failed, some
    lacking an objective or with an unusable one; and a params bound that about half the
    configs exceed."""
    import yaml

    folder = tmp_path_factory.mktemp("writes")
    space_file = folder / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    space = DesignSpace.from_yaml(space_file)
    configs = every_config(space)
    rows = []
    for i, config in enumerate(configs):
        params = config.derived()["params"]
        metrics = {"accuracy": 1 - 1 / (1 + params / 2e4), "latency_ms": params / 1e4}
        if i % 7 == 3:
            report = failed(str(i), config, "oom", "out of memory")
        elif i % 11 == 5:
            report = ok_report(str(i), config, {"accuracy": metrics["accuracy"]})
        elif i % 13 == 6:
            report = ok_report(str(i), config, metrics | {"latency_ms": 1e40})
        else:
            report = ok_report(str(i), config, metrics)
        rows.append((config, report))
    table = folder / "table.jsonl"
    write_table(table, rows)
    params = sorted(c.derived()["params"] for c in configs)
    return space_file, table, params[len(params) // 2]


def search(folder: Path, table, driver_class, monkeypatch) -> list[optuna.trial.FrozenTrial]:
    space_file, rows, bound = table
    monkeypatch.setattr(runs, "SearchDriver", driver_class)  # what `make_driver` builds
    url = f"sqlite:///{folder / f'{driver_class.__name__}.db'}"
    launch(
        space=str(space_file),
        objectives=OBJECTIVES,
        constraints=[f"params <= {bound}"],
        evaluator=f"replay:{rows}",
        sampler="random",
        seed=3,
        trials=TRIALS,
        workers=1,
        storage=url,
        study="writes",
    )
    with Database(url) as db:
        return optuna.load_study(study_name="writes", storage=db.optuna_storage()).get_trials()


def test_a_search_stores_what_one_write_per_attribute_stored(table, tmp_path, monkeypatch):
    batched = search(tmp_path, table, SearchDriver, monkeypatch)
    before = search(tmp_path, table, PerAttributeDriver, monkeypatch)
    assert len(batched) == len(before) >= TRIALS
    for now, then in zip(batched, before, strict=True):
        assert (now.number, now.state, now.values, now.params) == (
            then.number,
            then.state,
            then.values,
            then.params,
        )
        assert now.system_attrs == then.system_attrs
        drivers = now.user_attrs.pop(DRIVER_ATTR), then.user_attrs.pop(DRIVER_ATTR)
        assert all(drivers)  # each run's own heartbeat id
        assert now.user_attrs == then.user_attrs
    reasons = {t.user_attrs.get("reason") for t in batched}
    assert {"infeasible", "oom", "missing_metric", "bad_metric", None} <= reasons
    bound = table[2]
    for trial in batched:
        attrs = set(trial.user_attrs) | {DRIVER_ATTR}
        params = ArchConfig.from_dict(trial.user_attrs["config"]).derived()["params"]
        assert trial.constraints == {f"params <= {bound}": float(params - bound)}
        if trial.user_attrs.get("reason") == "infeasible":
            assert trial.state == TrialState.FAIL
            assert attrs == {"config", "config_hash", DRIVER_ATTR, "reason"}
        elif "duplicate_of" in attrs:
            assert trial.user_attrs["duplicate_of"] == trial.user_attrs["config_hash"]
        else:
            assert EVALUATED <= attrs <= EVALUATED | OPTIONAL
            if trial.user_attrs["reason"] in ("missing_metric", "bad_metric"):
                assert trial.state == TrialState.FAIL and trial.user_attrs["error"]


def test_sqlite_connections_are_wal_with_synchronous_normal(tmp_path):
    with Database(tmp_path / "search.db") as db:
        with db.session() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        db.optuna_storage()
        with db._rdb_storage.engine.connect() as connection:  # Optuna's own engine
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1


def test_a_database_not_in_wal_mode_keeps_synchronous_full(tmp_path):
    connection = sqlite3.connect(tmp_path / "rollback.db")
    connection.execute("PRAGMA journal_mode=DELETE")
    _sqlite_synchronous(connection)
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, the default
    connection.execute("PRAGMA journal_mode=WAL")
    _sqlite_synchronous(connection)
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1
    connection.close()
