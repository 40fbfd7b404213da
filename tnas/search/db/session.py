"""The one module through which every database session, commit and rollback passes.

A ``Database`` is one SQLite file or PostgreSQL database holding Optuna's tables (through
``optuna_storage()``) and tnas's own (``models.py``), which Alembic migrations create and upgrade
each time a ``Database`` is opened. Optuna and Alembic are imported only when first needed, so
importing this module stays cheap.

>>> import os, tempfile
>>> folder = tempfile.TemporaryDirectory()
>>> db = Database(os.path.join(folder.name, "search.db"))
>>> snapshot_id = db.save_snapshot(
...     "demo",
...     objectives=[{"name": "loss", "direction": "min"}],
...     n_trials=3,
...     hypervolume=0.5,
...     reference_point=[1.0],
...     members=[{"trial_number": 2, "config_hash": "ab12", "config": {"d_model": 128},
...               "values": [0.5]}],
... )
>>> front = db.latest_snapshot("demo")
>>> front["n_trials"], [member["trial_number"] for member in front["members"]]
(3, [2])
>>> db.close()
>>> folder.cleanup()
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, delete, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from tnas.search.db.models import FrontMember, FrontSnapshot, PredictorRound

if TYPE_CHECKING:
    import optuna
    from alembic.config import Config

DEFAULT_URL = "sqlite:///tnas.db"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
ACCEPTED_FORMS = (
    "a path ending in .db, .sqlite or .sqlite3, sqlite:///PATH, "
    "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB or postgresql+psycopg://..."
)
SQLITE_TIMEOUT_S = 30
POSTGRES_CONNECT_TIMEOUT_S = 10
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Key of the PostgreSQL advisory lock that lets one process at a time run the migrations.
MIGRATION_LOCK_KEY = 0x746E6173
# Stored as "min"/"max", as tnas writes objectives everywhere; Optuna's words are accepted too.
DIRECTIONS = {"min": "min", "max": "max", "minimize": "min", "maximize": "max"}
MEMBER_KEYS = ("trial_number", "config_hash", "config", "values")
ROUND_KEYS = ("round", "objective", "family", "n_train", "n_test")
ROUND_SCORES = ("kendall", "spearman", "mape", "cv_kendall")


class StorageError(ValueError):
    """A storage URL that tnas cannot use, or a database it cannot reach, in one line."""


def mask_password(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***``.

    >>> mask_password("postgresql+psycopg://tnas:secret@db.example:5432/tnas")
    'postgresql+psycopg://tnas:***@db.example:5432/tnas'
    """
    return re.sub(r"(://[^:/?#@\s]*:)[^@/\s]*@", r"\1***@", text)


def resolve_url(text: str | os.PathLike[str] | None) -> str:
    """The SQLAlchemy URL for a ``--storage`` value: a SQLite path or URL, or a PostgreSQL URL.

    None means ``tnas.db`` in the current directory.

    >>> resolve_url(None)
    'sqlite:///tnas.db'
    >>> resolve_url("runs/search.db")
    'sqlite:///runs/search.db'
    >>> resolve_url("postgresql://tnas@127.0.0.1:5432/tnas")
    'postgresql+psycopg://tnas@127.0.0.1:5432/tnas'
    >>> resolve_url("mysql://tnas:secret@db.example/tnas")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tnas.search.db.session.StorageError: unsupported storage URL 'mysql://tnas:***@db.example/tnas'...
    """
    if text is None:
        return DEFAULT_URL
    url = os.fspath(text).strip()
    if "://" not in url:
        if url.lower().endswith(SQLITE_SUFFIXES):
            return "sqlite:///" + os.path.expanduser(url)
        raise StorageError(f"unsupported storage URL {mask_password(url)!r}; give {ACCEPTED_FORMS}")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///"):
        if url.removeprefix("sqlite:///") in ("", ":memory:"):
            raise StorageError(
                f"in-memory SQLite {url!r} cannot be shared with Optuna's storage; "
                "give a file path such as sqlite:///tnas.db"
            )
    elif not url.startswith("postgresql+psycopg://"):
        raise StorageError(f"unsupported storage URL {mask_password(url)!r}; give {ACCEPTED_FORMS}")
    try:
        make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"malformed storage URL {mask_password(url)!r}; give {ACCEPTED_FORMS}"
        ) from None
    return url


def alembic_config(url: str) -> Config:
    """An Alembic Config for our migrations, built in code (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    return {"connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}, "pool_pre_ping": True}


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")  # tnas_front_members' ON DELETE CASCADE
    cursor.close()


def _reason(error: BaseException, password: str | None) -> str:
    """The driver's message as one short line, e.g. 'connection refused'."""
    message = str(getattr(error, "orig", None) or error)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    # psycopg: 'connection failed: connection to server at "127.0.0.1", port 5999 failed: ...'
    reason = reason.rsplit("failed: ", 1)[-1]
    reason = re.sub(r"^(FATAL|ERROR):\s*", "", reason)
    if password and len(password) >= 4:  # drivers never echo it; a short one would mangle
        reason = reason.replace(password, "***")
    return mask_password(reason[:1].lower() + reason[1:])


class Database:
    """tnas's tables and Optuna's storage in one SQLite file or PostgreSQL database.

    Opening checks the connection, turns on SQLite's write-ahead log and runs our migrations,
    never touching stored rows. Every session is made by ``session()``. See the module docstring
    for an example.
    """

    def __init__(self, url: str | os.PathLike[str] | None = None) -> None:
        self._url = resolve_url(url)
        self._masked_url = mask_password(self._url)
        self._password = make_url(self._url).password
        self._is_sqlite = self._url.startswith("sqlite:")
        self._optuna_storage: optuna.storages.RDBStorage | None = None
        if self._is_sqlite:
            self._check_sqlite_directory()
        try:
            self._engine: Engine = create_engine(self._url, **_engine_kwargs(self._url))
        except ImportError as error:
            raise StorageError(
                f"cannot connect to {self._masked_url}: {error}; "
                "install the driver with pip install 'tnas[postgres]'"
            ) from None
        if self._is_sqlite:
            event.listen(self._engine, "connect", _on_sqlite_connect)
        try:
            self._connect()
            self._migrate()
        except BaseException:
            self._engine.dispose()
            raise
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self._masked_url!r})"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The resolved SQLAlchemy URL (it holds the password, if any: never print it)."""
        return self._url

    def _check_sqlite_directory(self) -> None:
        directory = Path(make_url(self._url).database or ".").expanduser().parent
        if not directory.is_dir():
            raise StorageError(
                f"cannot connect to {self._masked_url}: directory {str(directory)!r} does not exist"
            )

    def _connect(self) -> None:
        try:
            with self._engine.connect() as connection:
                if self._is_sqlite:
                    # Persistent in the file: readers no longer block the writer, or it them.
                    connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        except DBAPIError as error:
            raise StorageError(
                f"cannot connect to {self._masked_url}: {_reason(error, self._password)}"
            ) from None

    def _migrate(self) -> None:
        from alembic import command

        config = alembic_config(self._url)
        try:
            with self._engine.connect() as connection:
                # Take the write lock first, so processes opening a new database together
                # migrate it one at a time and the later ones find it at head.
                if self._is_sqlite:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
        except DBAPIError as error:
            raise StorageError(
                f"cannot migrate {self._masked_url}: {_reason(error, self._password)}"
            ) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's RDB storage on the same database (made once, then reused)."""
        if self._optuna_storage is None:
            import optuna

            self._optuna_storage = optuna.storages.RDBStorage(
                self._url, engine_kwargs=_engine_kwargs(self._url)
            )
        return self._optuna_storage

    def save_snapshot(
        self,
        study_name: str,
        objectives: Sequence[Mapping[str, str]],
        n_trials: int,
        hypervolume: float,
        reference_point: Sequence[float],
        members: Sequence[Mapping[str, Any]],
    ) -> int:
        """Store a study's Pareto front; return the snapshot's id.

        ``objectives`` is a list of ``{"name", "direction"}``; each member is a dict with
        ``trial_number``, ``config_hash``, ``config`` and ``values`` (in objective order).
        """
        objectives = [_objective(objective) for objective in objectives]
        if not objectives:
            raise StorageError("a snapshot needs at least one objective")
        reference_point = _floats(reference_point, len(objectives), "reference_point")
        hypervolume = float(hypervolume)
        if not math.isfinite(hypervolume):
            raise StorageError(f"hypervolume must be finite, got {hypervolume}")
        snapshot = FrontSnapshot(
            study_name=study_name,
            n_trials=int(n_trials),
            hypervolume=hypervolume,
            reference_point=reference_point,
            objectives=objectives,
            members=[_member(member, len(objectives)) for member in members],
        )
        with self.session() as session:
            session.add(snapshot)
            session.flush()
            return snapshot.id

    def latest_snapshot(self, study_name: str) -> dict[str, Any] | None:
        """The study's newest snapshot with its members, best first on the first objective."""
        latest = (
            select(FrontSnapshot)
            .where(FrontSnapshot.study_name == study_name)
            .order_by(FrontSnapshot.id.desc())
            .limit(1)
            .options(selectinload(FrontSnapshot.members))
        )
        with self.session() as session:
            snapshot = session.scalars(latest).first()
            if snapshot is None:
                return None
            sign = 1.0 if snapshot.objectives[0]["direction"] == "min" else -1.0
            members = sorted(snapshot.members, key=lambda m: (sign * m.values[0], m.trial_number))
            return {
                "id": snapshot.id,
                "study_name": snapshot.study_name,
                "created_at": snapshot.created_at,
                "n_trials": snapshot.n_trials,
                "hypervolume": snapshot.hypervolume,
                "reference_point": snapshot.reference_point,
                "objectives": snapshot.objectives,
                "members": [
                    {key: getattr(member, key) for key in MEMBER_KEYS} for member in members
                ],
            }

    def snapshot_history(self, study_name: str) -> list[dict[str, Any]]:
        """Every snapshot of the study, oldest first, with its front size (one query)."""
        front_size = func.count(FrontMember.id).label("front_size")
        history = (
            select(
                FrontSnapshot.id,
                FrontSnapshot.created_at,
                FrontSnapshot.n_trials,
                FrontSnapshot.hypervolume,
                front_size,
            )
            .outerjoin(FrontMember, FrontMember.snapshot_id == FrontSnapshot.id)
            .where(FrontSnapshot.study_name == study_name)
            .group_by(
                FrontSnapshot.id,
                FrontSnapshot.created_at,
                FrontSnapshot.n_trials,
                FrontSnapshot.hypervolume,
            )
            .order_by(FrontSnapshot.id)
        )
        with self.session() as session:
            return [dict(row._mapping) for row in session.execute(history)]

    def delete_study_snapshots(self, study_name: str) -> int:
        """Delete the study's snapshots and their members; return how many snapshots went."""
        with self.session() as session:
            result = session.execute(
                delete(FrontSnapshot).where(FrontSnapshot.study_name == study_name)
            )
            return result.rowcount

    def save_predictor_round(self, study_name: str, record: Mapping[str, Any]) -> int:
        """Store one round's predictor quality for one objective (see `PredictorRound`); a
        missing or non-finite score is stored as null. Returns the row's id."""
        missing = [key for key in ROUND_KEYS if key not in record]
        if missing:
            raise StorageError(f"predictor round lacks {', '.join(missing)}: {dict(record)!r}")
        scores = {}
        for key in ROUND_SCORES:
            value = record.get(key)
            scores[key] = float(value) if value is not None and math.isfinite(value) else None
        row = PredictorRound(
            study_name=study_name,
            round=int(record["round"]),
            objective=str(record["objective"]),
            family=str(record["family"]),
            n_train=int(record["n_train"]),
            n_test=int(record["n_test"]),
            **scores,
        )
        with self.session() as session:
            session.add(row)
            session.flush()
            return row.id

    def predictor_rounds(self, study_name: str) -> list[dict[str, Any]]:
        """The study's predictor-quality rows, oldest first."""
        query = (
            select(PredictorRound)
            .where(PredictorRound.study_name == study_name)
            .order_by(PredictorRound.id)
        )
        keys = ("created_at", *ROUND_KEYS, *ROUND_SCORES)
        with self.session() as session:
            return [{key: getattr(row, key) for key in keys} for row in session.scalars(query)]

    def close(self) -> None:
        """Release every pooled connection, Optuna's included."""
        if self._optuna_storage is not None:
            self._optuna_storage.remove_session()
            self._optuna_storage.engine.dispose()
            self._optuna_storage = None
        self._engine.dispose()


def _objective(objective: Mapping[str, str]) -> dict[str, str]:
    name, direction = objective.get("name"), str(objective.get("direction", "")).lower()
    if not name or direction not in DIRECTIONS:
        raise StorageError(
            f"objective {dict(objective)!r} needs a name and a direction, min or max"
        )
    return {"name": str(name), "direction": DIRECTIONS[direction]}


def _floats(values: Sequence[float], length: int, what: str) -> list[float]:
    floats = [float(value) for value in values]
    if len(floats) != length or not all(math.isfinite(value) for value in floats):
        raise StorageError(f"{what} must be {length} finite numbers, got {list(values)!r}")
    return floats


def _member(member: Mapping[str, Any], n_objectives: int) -> FrontMember:
    missing = [key for key in MEMBER_KEYS if key not in member]
    if missing:
        raise StorageError(f"front member lacks {', '.join(missing)}: {dict(member)!r}")
    return FrontMember(
        trial_number=int(member["trial_number"]),
        config_hash=str(member["config_hash"]),
        config=dict(member["config"]),
        values=_floats(member["values"], n_objectives, "a front member's values"),
    )
