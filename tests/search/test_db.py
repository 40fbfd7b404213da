"""The database layer on SQLite files and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

import math
import multiprocessing
import subprocess
import sys
import traceback
from datetime import UTC, datetime

import optuna
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tnas.search.db import Database, FrontMember, FrontSnapshot, StorageError, resolve_url
from tnas.search.db.models import Base
from tnas.search.db.session import alembic_config

OBJECTIVES = [
    {"name": "loss", "direction": "min"},
    {"name": "accuracy", "direction": "max"},
]
OUR_HEAD = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db")).get_current_head()

optuna.logging.set_verbosity(optuna.logging.WARNING)


def member(trial_number: int, loss: float, accuracy: float) -> dict:
    return {
        "trial_number": trial_number,
        "config_hash": f"{trial_number:064x}",
        "config": {"d_model": 128, "layers": [{"mixer": "gla", "bits": 8}], "trial": trial_number},
        "values": [loss, accuracy],
    }


def save(db: Database, study_name: str, members: list[dict], n_trials: int = 10) -> int:
    return db.save_snapshot(
        study_name,
        objectives=OBJECTIVES,
        n_trials=n_trials,
        hypervolume=0.25 * len(members),
        reference_point=[10.0, 0.0],
        members=members,
    )


def statements(db: Database) -> list[str]:
    """A list that collects every SQL statement ``db`` sends from now on."""
    with db.session() as session:
        engine = session.get_bind()
    sent: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    return sent


def version_rows(db: Database, table_name: str) -> list[str]:
    version_table = sa.table(table_name, sa.column("version_num"))
    with db.session() as session:
        return list(session.scalars(sa.select(version_table.c.version_num)))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tnas.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def study_name(request) -> str:
    """Unique per test, as the PostgreSQL database is shared by the whole session."""
    return request.node.name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "sqlite:///tnas.db"),
        ("runs/search.db", "sqlite:///runs/search.db"),
        ("/tmp/a.sqlite", "sqlite:////tmp/a.sqlite"),
        ("b.sqlite3", "sqlite:///b.sqlite3"),
        ("sqlite:///runs/search.db", "sqlite:///runs/search.db"),
        ("postgresql://tnas:pw@db:5432/tnas", "postgresql+psycopg://tnas:pw@db:5432/tnas"),
        ("postgresql+psycopg://tnas@db/tnas", "postgresql+psycopg://tnas@db/tnas"),
    ],
    ids=["default", "db-path", "sqlite-path", "sqlite3-path", "sqlite-url", "postgres", "psycopg"],
)
def test_resolve_url(text, expected):
    assert resolve_url(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "search.txt",
        "mysql://tnas:hunter2@db/tnas",
        "postgresql+psycopg2://tnas:hunter2@db/tnas",
        "postgres://tnas:hunter2@db/tnas",
        "sqlite:///:memory:",
        "sqlite://",
        "postgresql+psycopg://tnas:hunter2@db:notaport/tnas",
    ],
    ids=[
        "empty",
        "txt",
        "mysql",
        "psycopg2",
        "postgres-scheme",
        "memory",
        "sqlite-no-path",
        "port",
    ],
)
def test_bad_url_is_one_line_without_password(text):
    with pytest.raises(StorageError) as raised:
        resolve_url(text)
    message = str(raised.value)
    assert "\n" not in message
    assert "hunter2" not in message
    assert "sqlite:///" in message


def test_unreachable_postgres_is_one_line_without_password(unused_port):
    url = f"postgresql://tnas:hunter2@127.0.0.1:{unused_port}/tnas"
    with pytest.raises(StorageError) as raised:
        Database(url)
    assert str(raised.value) == (
        f"cannot connect to postgresql+psycopg://tnas:***@127.0.0.1:{unused_port}/tnas: "
        "connection refused"
    )


def test_missing_sqlite_directory(tmp_path):
    with pytest.raises(StorageError, match="does not exist") as raised:
        Database(tmp_path / "missing" / "tnas.db")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "missing").exists()


def test_import_is_light():
    check = (
        "import sys, tnas.search.db; assert not {'torch', 'optuna', 'alembic'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_migrations_put_our_tables_beside_optunas(url, study_name):
    with Database(url) as db:
        optuna.create_study(study_name=study_name, storage=db.optuna_storage())
        with db.session() as session:
            tables = set(sa.inspect(session.connection()).get_table_names())
        assert {"tnas_front_snapshots", "tnas_front_members", "tnas_alembic_version"} <= tables
        assert {"studies", "trials", "trial_values", "alembic_version"} <= tables
        assert version_rows(db, "tnas_alembic_version") == [OUR_HEAD]
        [optuna_revision] = version_rows(db, "alembic_version")
        assert optuna_revision != OUR_HEAD
    # Both open again without complaint: Optuna's version check, then our migrations.
    with Database(url) as db:
        assert optuna.load_study(study_name=study_name, storage=db.optuna_storage())
        assert version_rows(db, "tnas_alembic_version") == [OUR_HEAD]
        assert version_rows(db, "alembic_version") == [optuna_revision]


def test_optuna_first_then_ours(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna-first.db'}"
    storage = optuna.storages.RDBStorage(url)
    optuna.create_study(study_name="first", storage=storage)
    storage.engine.dispose()
    with Database(url) as db:
        assert optuna.load_study(study_name="first", storage=db.optuna_storage())
        assert version_rows(db, "tnas_alembic_version") == [OUR_HEAD]
        assert save(db, "first", [member(0, 1.0, 0.5)]) > 0


def test_models_match_the_migrations(url):
    with Database(url) as db, db.session() as session:
        context = MigrationContext.configure(
            session.connection(),
            opts={
                "version_table": "tnas_alembic_version",
                "include_name": lambda name, type_, parents: (
                    type_ != "table" or name.startswith("tnas_")
                ),
            },
        )
        assert compare_metadata(context, Base.metadata) == []


def test_snapshot_round_trip(url, study_name):
    members = [member(3, 0.5, 0.9), member(7, 0.25, 0.5), member(1, 2.0, 0.95)]
    before = datetime.now(UTC)
    with Database(url) as db:
        snapshot_id = save(db, study_name, members, n_trials=40)
        front = db.latest_snapshot(study_name)
    assert front["id"] == snapshot_id
    assert front["study_name"] == study_name
    assert front["n_trials"] == 40
    assert front["hypervolume"] == 0.75
    assert front["reference_point"] == [10.0, 0.0]
    assert front["objectives"] == OBJECTIVES
    assert front["created_at"].tzinfo is not None
    assert before <= front["created_at"] <= datetime.now(UTC)
    # Best first on the first objective (loss, minimised).
    assert front["members"] == [members[1], members[0], members[2]]


def test_predictor_rounds_round_trip_with_undefined_scores_as_null(url, study_name):
    first = {"round": 1, "objective": "accuracy", "family": "gbt", "n_train": 20, "n_test": 0}
    second = first | {"round": 2, "n_test": 8, "kendall": 0.8, "spearman": float("nan")}
    with Database(url) as db:
        db.save_predictor_round(study_name, first | {"cv_kendall": 0.7})
        db.save_predictor_round(study_name, second | {"mape": 0.05})
        db.save_predictor_round("other", first)
        rows = db.predictor_rounds(study_name)
        with pytest.raises(StorageError, match="lacks family"):
            db.save_predictor_round(study_name, {k: v for k, v in first.items() if k != "family"})
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["cv_kendall"] == 0.7 and rows[0]["kendall"] is None
    assert rows[1]["kendall"] == 0.8 and rows[1]["spearman"] is None and rows[1]["mape"] == 0.05
    assert rows[1]["created_at"].tzinfo is not None


def test_members_of_a_maximised_first_objective_come_best_first(tmp_path):
    with Database(tmp_path / "tnas.db") as db:
        db.save_snapshot(
            "max",
            objectives=[{"name": "accuracy", "direction": "maximize"}],  # Optuna's word is fine
            n_trials=3,
            hypervolume=0.9,
            reference_point=[0.0],
            members=[
                {"trial_number": n, "config_hash": str(n), "config": {}, "values": [value]}
                for n, value in [(0, 0.5), (1, 0.9), (2, 0.7)]
            ],
        )
        ranked = [m["trial_number"] for m in db.latest_snapshot("max")["members"]]
    assert ranked == [1, 2, 0]


def test_latest_snapshot_is_the_newest_and_none_when_absent(url, study_name):
    with Database(url) as db:
        assert db.latest_snapshot(study_name) is None
        save(db, study_name, [member(0, 1.0, 0.1)])
        newest = save(db, study_name, [member(0, 1.0, 0.1), member(5, 0.5, 0.05)])
        save(db, f"{study_name}-other", [member(9, 0.1, 0.1)])
        assert db.latest_snapshot(study_name)["id"] == newest


def test_reopening_keeps_rows(url, study_name):
    with Database(url) as db:
        save(db, study_name, [member(0, 1.0, 0.5), member(1, 0.5, 0.25)])
        history = db.snapshot_history(study_name)
        front = db.latest_snapshot(study_name)
    for _ in range(2):
        with Database(url) as db:
            assert db.snapshot_history(study_name) == history
            assert db.latest_snapshot(study_name) == front


def test_history_in_one_query(url, study_name):
    with Database(url) as db:
        ids = [
            save(db, study_name, [member(n, 1.0 / (n + 1), 0.1) for n in range(size)], n_trials)
            for size, n_trials in [(2, 10), (0, 20), (5, 30)]
        ]
        sent = statements(db)
        history = db.snapshot_history(study_name)
    assert len(sent) == 1
    assert [(h["id"], h["n_trials"], h["front_size"]) for h in history] == [
        (ids[0], 10, 2),
        (ids[1], 20, 0),
        (ids[2], 30, 5),
    ]
    assert [h["hypervolume"] for h in history] == [0.5, 0.0, 1.25]
    assert all(h["created_at"].tzinfo is not None for h in history)
    assert history[0]["created_at"] <= history[2]["created_at"]


def test_latest_snapshot_reads_only_our_tables(url, study_name):
    with Database(url) as db:
        study = optuna.create_study(study_name=study_name, storage=db.optuna_storage())
        for _ in range(5):
            trial = study.ask()
            study.tell(trial, trial.suggest_float("x", 0, 1))
        save(db, study_name, [member(n, n, 0.1) for n in range(20)])
        sent = statements(db)
        assert len(db.latest_snapshot(study_name)["members"]) == 20
    assert len(sent) == 2
    assert all(" trials" not in sql and "studies" not in sql for sql in sent)


def test_delete_study_snapshots(url, study_name):
    with Database(url) as db:
        gone = [
            save(db, study_name, [member(0, 1.0, 0.5), member(1, 0.5, 0.25)]),
            save(db, study_name, [member(2, 0.1, 0.1)]),
        ]
        kept = save(db, f"{study_name}-kept", [member(0, 1.0, 0.5)])
        assert db.delete_study_snapshots(study_name) == 2
        assert db.latest_snapshot(study_name) is None
        assert db.snapshot_history(study_name) == []
        assert db.latest_snapshot(f"{study_name}-kept")["id"] == kept
        with db.session() as session:
            owners = set(session.scalars(sa.select(FrontMember.snapshot_id)))
        assert kept in owners
        assert not owners & set(gone)  # the members went with their snapshots


def test_session_rolls_back_on_error(url, study_name):
    with Database(url) as db:
        with pytest.raises(RuntimeError, match="abandon"), db.session() as session:
            session.add(
                FrontSnapshot(
                    study_name=study_name,
                    n_trials=1,
                    hypervolume=0.0,
                    reference_point=[0.0],
                    objectives=[{"name": "loss", "direction": "minimize"}],
                )
            )
            session.flush()
            raise RuntimeError("abandon")
        assert db.latest_snapshot(study_name) is None


@pytest.mark.parametrize(
    "change",
    [
        {"objectives": []},
        {"objectives": [{"name": "loss", "direction": "lower"}]},
        {"reference_point": [1.0, 2.0]},
        {"hypervolume": math.nan},
        {"members": [{"trial_number": 0, "config_hash": "0", "config": {}, "values": [1, 2]}]},
        {"members": [{"trial_number": 0, "config_hash": "0", "values": [1.0]}]},
        {"members": [{"trial_number": 0, "config_hash": "0", "config": {}, "values": [math.inf]}]},
    ],
    ids=["no-objectives", "direction", "reference", "nan-hv", "values", "no-config", "inf"],
)
def test_save_snapshot_rejects_bad_input(tmp_path, change):
    arguments = {
        "study_name": "bad",
        "objectives": [{"name": "loss", "direction": "minimize"}],
        "n_trials": 1,
        "hypervolume": 0.5,
        "reference_point": [1.0],
        "members": [{"trial_number": 0, "config_hash": "0", "config": {}, "values": [0.5]}],
    }
    with Database(tmp_path / "tnas.db") as db:
        with pytest.raises(StorageError):
            db.save_snapshot(**(arguments | change))
        assert db.latest_snapshot("bad") is None


def test_wal_mode_is_on(tmp_path):
    path = tmp_path / "tnas.db"
    Database(path).close()
    with Database(path) as db, db.session() as session:
        connection = session.connection()
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def open_database(worker: int, barrier, results, url: str) -> None:
    """Open a new database, ours and Optuna's tables, at the same moment as the others."""
    try:
        barrier.wait(timeout=120)
        with Database(url) as db:
            db.optuna_storage()
        results.put((worker, None))
    except BaseException:
        results.put((worker, traceback.format_exc()))


def create_trials_and_snapshots(
    worker: int, barrier, results, url: str, study_name: str, count: int
) -> None:
    """Ask and tell ``count`` trials, saving a snapshot after each, alongside other processes."""
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        db = Database(url)
        study = optuna.load_study(study_name=study_name, storage=db.optuna_storage())
        barrier.wait(timeout=120)
        for step in range(count):
            trial = study.ask()
            loss = trial.suggest_float("loss", 0.0, 1.0)
            study.tell(trial, [loss, 1.0 - loss])
            entry = member(trial.number, loss, 1.0 - loss)
            entry["config"] = {"worker": worker, "step": step}
            save(db, study_name, [entry], n_trials=trial.number + 1)
        db.close()
        results.put((worker, None))
    except BaseException:
        results.put((worker, traceback.format_exc()))


def run_processes(target, n_processes: int, *args) -> None:
    """Run ``target(worker, barrier, results, *args)`` in fresh processes; fail on any error."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(n_processes), context.Queue()
    processes = [
        context.Process(target=target, args=(worker, barrier, results, *args))
        for worker in range(n_processes)
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    failures = [error for error in outcomes.values() if error]
    assert not failures, "\n".join(failures)
    assert [process.exitcode for process in processes] == [0] * n_processes


def check_concurrent_writes(url: str, study_name: str, n_processes: int, count: int) -> None:
    with Database(url) as db:
        optuna.create_study(
            study_name=study_name,
            storage=db.optuna_storage(),
            directions=["minimize", "maximize"],
        )
    run_processes(create_trials_and_snapshots, n_processes, url, study_name, count)
    with Database(url) as db:
        study = optuna.load_study(study_name=study_name, storage=db.optuna_storage())
        trials = study.get_trials(deepcopy=False)
        assert sorted(t.number for t in trials) == list(range(n_processes * count))
        assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
        history = db.snapshot_history(study_name)
        assert len(history) == n_processes * count
        assert {h["front_size"] for h in history} == {1}
        with db.session() as session:
            configs = session.scalars(
                sa.select(FrontMember.config)
                .join(FrontMember.snapshot)
                .where(FrontSnapshot.study_name == study_name)
            ).all()
    assert sorted((c["worker"], c["step"]) for c in configs) == [
        (worker, step) for worker in range(n_processes) for step in range(count)
    ]


def test_four_processes_share_one_sqlite_file(tmp_path):
    check_concurrent_writes(f"sqlite:///{tmp_path / 'shared.db'}", "shared", 4, 25)


def test_two_processes_share_one_postgres_database(postgres_url):
    check_concurrent_writes(postgres_url, "shared-postgres", 2, 25)


@pytest.mark.parametrize("round_", range(3))  # a collision is likely, not certain, per round
def test_four_processes_open_a_new_sqlite_file_at_once(tmp_path, round_):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    run_processes(open_database, 4, url)
    with Database(url) as db:
        assert version_rows(db, "tnas_alembic_version") == [OUR_HEAD]
        assert len(version_rows(db, "alembic_version")) == 1  # Optuna's, stamped once


def test_four_processes_open_a_new_postgres_database_at_once(postgres_cluster):
    url = postgres_cluster.create_database("tnas_new")
    run_processes(open_database, 4, url)
    with Database(url) as db:
        assert version_rows(db, "tnas_alembic_version") == [OUR_HEAD]
        assert len(version_rows(db, "alembic_version")) == 1  # Optuna's, stamped once


def test_storage_defaults_to_the_tnas_storage_variable(tmp_path, monkeypatch):
    from tnas.search.db.session import DEFAULT_URL, resolve_url

    monkeypatch.delenv("TNAS_STORAGE", raising=False)
    assert resolve_url(None) == DEFAULT_URL
    monkeypatch.setenv("TNAS_STORAGE", str(tmp_path / "team.db"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'team.db'}"
    assert resolve_url("other.db") == "sqlite:///other.db"  # a given --storage wins
