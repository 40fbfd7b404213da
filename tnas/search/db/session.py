"""The one module through which every database session, commit and rollback passes.

A ``Database`` is one SQLite file or PostgreSQL database holding Optuna's tables (through
``optuna_storage()``) and tnas's own (``models.py``), which Alembic migrations create and upgrade
each time a ``Database`` is opened. Optuna and Alembic are imported only when first needed, so
importing this module stays cheap.

Once open, a PostgreSQL database that goes away (a restart, a network cut) is waited for: every
Optuna call and every one of our transactions is retried with exponential backoff for up to
``retry_s`` seconds (``RETRY_S``), then fails with a one-line ``StorageError``. Any other
database error (a read-only or full SQLite file, say) fails at once, as a one-line
``StorageError`` naming the database; SQLite's journal leaves the file as it was before the
failed transaction.

A SQLite database is put in WAL mode, and every connection to it (Optuna's too) runs with
``PRAGMA synchronous=NORMAL`` (``SQLITE_SYNCHRONOUS``) rather than SQLite's default, FULL: a
commit is no longer synced to disk at once, only the write-ahead log at each checkpoint.
SQLite documents WAL with NORMAL as safe from corruption and as durable as FULL across a crash
of the process; only a power loss or an operating-system crash can undo the last transactions
committed before it (a trial's attributes or its outcome), leaving the study as it was a moment
earlier: a trial then found RUNNING is failed as ``orphaned`` and its config run again by
``tnas search resume``. In exchange each commit costs no fsync (the driver makes three per
trial, the sampler one per parameter: ``bench/driver.py``). A database SQLite cannot put in WAL
mode keeps FULL. Trial attributes are written in one transaction per batch
(``set_trial_user_attrs``), not one per attribute.

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

import json
import logging
import math
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    column,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    table,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PendingRollbackError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, selectinload, sessionmaker

from tnas.safety import redact_url
from tnas.search.db.models import (
    Base,
    DriverHeartbeat,
    FrontMember,
    FrontSnapshot,
    PredictorRound,
    utc_now,
)
from tnas.search.settings import Objective

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
# How SQLite syncs the commits of a database in WAL mode (every connection, Optuna's too): at
# each checkpoint of the log rather than at each commit. See the module docstring.
SQLITE_SYNCHRONOUS = "NORMAL"
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
POSTGRES_CONNECT_TIMEOUT_S = 10
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Key of the PostgreSQL advisory lock that lets one process at a time run the migrations.
MIGRATION_LOCK_KEY = 0x746E6173
# Stored as "min"/"max", as tnas writes objectives everywhere; Optuna's words are accepted too.
# A lost PostgreSQL connection is retried this long, waiting FIRST_BACKOFF_S, then twice as
# long each time up to MAX_BACKOFF_S, before the operation fails.
RETRY_S = 30.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
MEMBER_KEYS = ("trial_number", "config_hash", "config", "values")
ROUND_KEYS = ("round", "objective", "family", "n_train", "n_test")
ROUND_SCORES = ("kendall", "spearman", "mape", "cv_kendall")
# Optuna's `studies` table, as much of it as tnas reads and renames: a Core table, so that
# looking a study up needs no Optuna import. Optuna keeps `study_name` unique.
OPTUNA_STUDIES = table("studies", column("study_id"), column("study_name"))
# Tables that mark a database as a study database, when opened with create=False.
STUDY_TABLES = ("studies", "tnas_alembic_version")


logger = logging.getLogger(__name__)
T = TypeVar("T")


class StorageError(ValueError):
    """A storage URL that tnas cannot use, or a database it cannot reach or write, in one line."""


def resolve_url(text: str | os.PathLike[str] | None) -> str:
    """The SQLAlchemy URL for a ``--storage`` value: a SQLite path or URL, or a PostgreSQL URL.

    None means the ``TNAS_STORAGE`` environment variable, else ``tnas.db`` in the current
    directory.

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
        text = os.environ.get("TNAS_STORAGE") or DEFAULT_URL
    url = os.fspath(text).strip()
    if "://" not in url:
        if url.lower().endswith(SQLITE_SUFFIXES):
            return "sqlite:///" + os.path.expanduser(url)
        raise StorageError(f"unsupported storage URL {redact_url(url)!r}; give {ACCEPTED_FORMS}")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///"):
        if url.removeprefix("sqlite:///") in ("", ":memory:"):
            raise StorageError(
                f"in-memory SQLite {url!r} cannot be shared with Optuna's storage; "
                "give a file path such as sqlite:///tnas.db"
            )
    elif not url.startswith("postgresql+psycopg://"):
        raise StorageError(f"unsupported storage URL {redact_url(url)!r}; give {ACCEPTED_FORMS}")
    try:
        make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"malformed storage URL {redact_url(url)!r}; give {ACCEPTED_FORMS}"
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
    _sqlite_synchronous(dbapi_connection)


def _on_optuna_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    _sqlite_synchronous(dbapi_connection)


def _sqlite_synchronous(dbapi_connection: Any) -> None:
    """Set ``SQLITE_SYNCHRONOUS`` on a connection to a database in WAL mode; leave any other
    journal mode at SQLite's default (FULL): NORMAL is safe from corruption only with the WAL."""
    level = SQLITE_SYNCHRONOUS.upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"SQLITE_SYNCHRONOUS must be one of {SYNCHRONOUS_LEVELS}, not {level!r}")
    cursor = dbapi_connection.cursor()
    try:
        mode = cursor.execute("PRAGMA journal_mode").fetchone()
        if mode is not None and str(mode[0]).lower() == "wal":
            cursor.execute(f"PRAGMA synchronous={level}")
    finally:
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
    return redact_url(reason[:1].lower() + reason[1:])


def _storage_failure(error: BaseException) -> bool:
    """Whether ``error`` is the database failing, as SQLAlchemy or Optuna raise it, rather than
    an answer such as Optuna's ``DuplicatedStudyError`` (raised from an ``IntegrityError``)."""
    if isinstance(error, SQLAlchemyError):
        return True
    optuna = sys.modules.get("optuna")  # Optuna's errors can only come once it is imported
    return optuna is not None and isinstance(error, optuna.exceptions.StorageInternalError)


def _driver_error(error: BaseException) -> DBAPIError | None:
    """The database driver's error behind ``error``, if any: Optuna raises its own
    ``StorageInternalError`` from SQLAlchemy's, sometimes with another error in between."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, DBAPIError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _lost_connection(error: BaseException) -> bool:
    """Whether ``error`` says the server went away (or is not back yet), not that the
    operation itself was refused: a restart, a dropped connection, a refused reconnect."""
    if isinstance(error, PendingRollbackError):  # a session still holding a dropped connection
        return True
    driver_error = _driver_error(error)
    return driver_error is not None and (
        driver_error.connection_invalidated
        or isinstance(driver_error, OperationalError | InterfaceError)
    )


def _first_open(open_storage: Callable[[], T], tries: int = 5) -> T:
    """``open_storage()``, opened again when another process was creating Optuna's tables in
    the same new SQLite file at the same moment: both find the tables or the schema version
    missing, and the later writer's insert or ``CREATE TABLE`` fails. (SQLite has no advisory
    lock to serialise this as PostgreSQL's migration lock does.) The next open finds what the
    other process wrote."""
    attempt = 1
    while True:
        try:
            return open_storage()
        except (IntegrityError, OperationalError) as error:
            collided = isinstance(error, IntegrityError) or "already exists" in str(error)
            if not collided or attempt == tries:
                raise
            time.sleep(0.05 * attempt)
            attempt += 1


class Retry:
    """Runs database work, retrying it with exponential backoff while the connection is lost.

    Only PostgreSQL is retried (``retry_s`` > 0): a SQLite file has no connection to lose, and
    its errors (read-only, disk full, locked past the busy timeout) do not go away by waiting.
    Every database error that is not retried, or outlasts ``retry_s``, becomes a one-line
    ``StorageError``; other errors (Optuna's ``DuplicatedStudyError``, say) pass unchanged.

    Retried work runs again from the start, so it must be safe to repeat. Reads and updates
    are. An insert whose commit reached the server just before the connection dropped is made
    twice: a new trial then stays running until ``tnas search resume`` fails it, a front
    snapshot is stored twice; neither changes a search's results. A trial told its outcome
    twice is recognised (``RetryingStorage.set_trial_state_values``).
    """

    def __init__(self, masked_url: str, password: str | None, retry_s: float) -> None:
        self.masked_url = masked_url
        self.password = password
        self.retry_s = retry_s

    def __call__(self, work: Callable[[], T]) -> T:
        deadline = None
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                result = work()
            except Exception as error:
                driver_error = _driver_error(error)
                if not _storage_failure(error) or (
                    driver_error is None and not isinstance(error, PendingRollbackError)
                ):
                    raise
                reason = _reason(driver_error or error, self.password)
                if self.retry_s <= 0 or not _lost_connection(error):
                    raise StorageError(f"cannot use {self.masked_url}: {reason}") from None
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_s
                    logger.warning(
                        "lost the connection to %s (%s); retrying for up to %g s",
                        self.masked_url,
                        reason,
                        self.retry_s,
                    )
                if now >= deadline:
                    raise StorageError(
                        f"lost the connection to {self.masked_url} and could not reconnect "
                        f"within {self.retry_s:g} s: {reason}"
                    ) from None
                time.sleep(min(backoff, deadline - now))
                backoff = min(2 * backoff, MAX_BACKOFF_S)
            else:
                if deadline is not None:
                    logger.warning("reconnected to %s", self.masked_url)
                return result


class RetryingStorage:
    """Optuna's storage with every call run through a ``Retry``, so that a search rides out a
    database restart. Optuna takes any object with the storage methods as its storage.

    ``on_create(name)`` runs after each study it creates: ``Database`` passes its
    ``delete_study_records``, so that a new study never inherits the front snapshots,
    predictor rounds or heartbeats left under its name by an earlier study deleted outside
    tnas (Optuna's ``delete-study``)."""

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        retry: Retry,
        on_create: Callable[[str], object] | None = None,
    ) -> None:
        self._storage = storage
        self._retry = retry
        self._on_create = on_create

    def create_new_study(self, directions: Sequence[Any], study_name: str | None = None) -> int:
        """As Optuna's; then ``on_create(study_name)`` (a generated name is new: no call)."""
        study_id = self._retry(lambda: self._storage.create_new_study(directions, study_name))
        if self._on_create is not None and study_name is not None:
            self._on_create(study_name)
        return study_id

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._storage, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def retried(*args: Any, **kwargs: Any) -> Any:
            return self._retry(lambda: attribute(*args, **kwargs))

        return retried

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        """As Optuna's, and true when an earlier attempt, whose reply the dropped connection
        lost, already finished the trial in this state."""
        import optuna

        attempts = 0

        def tell() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return self._storage.set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if attempts > 1 and self._storage.get_trial(trial_id).state == state:
                    return True
                raise

        return self._retry(tell)

    def set_trial_user_attrs(
        self,
        trial_id: int,
        attrs: Mapping[str, Any],
        system_attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """``set_trial_user_attrs`` on the storage behind, the whole batch retried (its
        upserts are safe to repeat)."""
        self._retry(lambda: set_trial_user_attrs(self._storage, trial_id, attrs, system_attrs))


def set_trial_user_attrs(
    storage: Any,
    trial_id: int,
    attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any] | None = None,
) -> None:
    """Set several user attributes (and system attributes) of an unfinished trial in one
    transaction: one commit and one statement per kind of attribute, where Optuna's
    ``Trial.set_user_attr`` makes a transaction (a look-up of the trial, an upsert, a commit)
    for each.

    The rows are written as Optuna's ``RDBStorage.set_trial_user_attr`` writes one: the trial
    checked unfinished, the value stored as ``json.dumps(value)``, by the upsert Optuna uses
    on SQLite and PostgreSQL (on other databases, by Optuna's own code, one row at a time), so
    they read back as Optuna wrote them; if any fails, none is written. On Optuna's RDB
    storage, behind its ``_CachedStorage`` (which keeps no unfinished trial) or
    ``RetryingStorage``; on any other storage (``InMemoryStorage``) one Optuna call per
    attribute.

    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(storage="sqlite:///:memory:")
    >>> trial = study.ask()
    >>> attrs = {"config_hash": "ab12", "error": None}
    >>> set_trial_user_attrs(study._storage, trial._trial_id, attrs)
    >>> study._storage.get_trial(trial._trial_id).user_attrs
    {'config_hash': 'ab12', 'error': None}
    """
    import optuna

    system_attrs = system_attrs or {}
    if isinstance(storage, RetryingStorage):
        storage.set_trial_user_attrs(trial_id, attrs, system_attrs)
        return
    if isinstance(storage, optuna.storages._CachedStorage):
        storage = storage._backend
    if not isinstance(storage, optuna.storages.RDBStorage):
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        for key, value in system_attrs.items():
            storage.set_trial_system_attr(trial_id, key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    # A session as `RDBStorage.set_trial_user_attr` makes one, its checks made once.
    with _create_scoped_session(storage.scoped_session, True) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        storage.check_trial_is_updatable(trial_id, trial.state)
        for model, batch in (
            (models.TrialUserAttributeModel, attrs),
            (models.TrialSystemAttributeModel, system_attrs),
        ):
            if batch:
                _upsert_attrs(storage, session, model, trial_id, batch)


def _upsert_attrs(
    storage: optuna.storages.RDBStorage,
    session: Session,
    model: Any,
    trial_id: int,
    attrs: Mapping[str, Any],
) -> None:
    """Insert or update a trial's attribute rows (`model`: Optuna's user or system attribute
    model) in one statement where Optuna upserts one: SQLite (3.24 and later) and PostgreSQL;
    elsewhere as Optuna does, one by one."""
    import sqlite3

    if storage.engine.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects.sqlite import insert
    elif storage.engine.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        for key, value in attrs.items():
            storage._set_trial_attr_without_commit(session, model, trial_id, key, value)
        return
    rows = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()
    ]
    statement = insert(model).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[model.trial_id, model.key],
            set_={"value_json": statement.excluded.value_json},
        )
    )


class Database:
    """tnas's tables and Optuna's storage in one SQLite file or PostgreSQL database.

    Opening checks the connection, turns on SQLite's write-ahead log and runs our migrations,
    never touching stored rows; it fails at once when the database cannot be reached. Once
    open, a lost PostgreSQL connection is retried for up to ``retry_s`` seconds (see
    ``Retry``). Every session is made by ``session()``. See the module docstring for an example.

    A SQLite file that exists but does not start with SQLite's header (a corrupted or foreign
    file) is refused in one line and left untouched. With ``create=False`` (the read-only
    commands: ``tnas studies``, ``trials``, ``pareto``, ...) nothing new is made: a missing
    SQLite file is a ``StorageError`` (``no database at PATH``), and so is a database holding
    neither Optuna's tables nor ours, which is never given tables.

    >>> Database("no-such-file.db", create=False)
    Traceback (most recent call last):
    ...
    tnas.search.db.session.StorageError: no database at no-such-file.db
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        retry_s: float = RETRY_S,
        *,
        create: bool = True,
    ) -> None:
        self._url = resolve_url(url)
        self._masked_url = redact_url(self._url)
        self._password = make_url(self._url).password
        self._is_sqlite = self._url.startswith("sqlite:")
        self._retry = Retry(self._masked_url, self._password, 0.0 if self._is_sqlite else retry_s)
        self._rdb_storage: optuna.storages.RDBStorage | None = None
        self._optuna_storage: RetryingStorage | None = None
        if self._is_sqlite:
            self._check_sqlite_file(create)
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
            if not create:
                self._check_holds_studies()
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

    def _check_sqlite_file(self, create: bool) -> None:
        """Refuse a path that holds no SQLite database before SQLite opens, and could write,
        it; with ``create=False`` a missing or empty file too.

        The file is read through SQLite, read-only, never with a plain ``open()``: closing
        any descriptor of a file drops every POSIX lock this process holds on it, SQLite's
        included, and a connection already open here (another ``Database`` in a notebook)
        would then let another process checkpoint the write-ahead log under it, corrupting
        the database. SQLite defers such closes while its other connections hold locks."""
        text = make_url(self._url).database or ""
        path = Path(text).expanduser()
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if create:
                return
            raise StorageError(f"no database at {text}") from None
        except OSError as error:
            raise StorageError(f"cannot read {text}: {error.strerror or error}") from None
        if path.is_dir():
            raise StorageError(f"cannot connect to {self._masked_url}: {text} is a directory")
        if not os.access(path, os.R_OK):
            raise StorageError(f"cannot read {text}: permission denied")
        if size == 0:
            if create:
                return  # being made by another process: SQLite makes a database of it
            raise StorageError(f"{text} is an empty file; tnas leaves it as it is")
        import sqlite3

        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=SQLITE_TIMEOUT_S)
            try:
                connection.execute("PRAGMA schema_version").fetchone()
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            if "not a database" in str(error):
                raise StorageError(
                    f"{text} is not a SQLite database; tnas leaves it as it is"
                ) from None
            raise StorageError(f"cannot read {text}: {error}") from None

    def _check_holds_studies(self) -> None:
        """Refuse a database with neither Optuna's tables nor tnas's (``create=False``)."""
        where = make_url(self._url).database if self._is_sqlite else self._masked_url
        try:
            with self._engine.connect() as connection:
                names = set(inspect(connection).get_table_names())
        except DBAPIError as error:
            raise StorageError(
                f"cannot connect to {self._masked_url}: {_reason(error, self._password)}"
            ) from None
        if not names & set(STUDY_TABLES):
            raise StorageError(f"no study database at {where}: it holds no Optuna or tnas tables")

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
                    _sqlite_synchronous(connection.connection.dbapi_connection)
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

    def transaction(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in one transaction, run again from the start if the connection is
        lost (PostgreSQL); a database error becomes a one-line ``StorageError``."""

        def attempt() -> T:
            with self.session() as session:
                return work(session)

        return self._retry(attempt)

    def optuna_storage(self) -> RetryingStorage:
        """Optuna's storage on the same database, its calls retried across a lost connection
        (made once, then reused): Optuna's RDB storage, behind Optuna's own trial cache.

        On PostgreSQL, Optuna creates its tables under our migration lock, so that processes
        opening a new database together do not race to create them.
        """
        if self._optuna_storage is None:
            import optuna

            def make() -> optuna.storages.RDBStorage:
                if self._is_sqlite:
                    storage = _first_open(
                        lambda: optuna.storages.RDBStorage(
                            self._url, engine_kwargs=_engine_kwargs(self._url)
                        )
                    )
                    event.listen(storage.engine, "connect", _on_optuna_sqlite_connect)
                    storage.engine.dispose()  # those opened to check the tables: made again
                    return storage
                with self._engine.connect() as connection:
                    connection.execute(select(func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
                    try:
                        return optuna.storages.RDBStorage(
                            self._url, engine_kwargs=_engine_kwargs(self._url)
                        )
                    finally:
                        connection.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))

            self._rdb_storage = self._retry(make)
            # The cache Optuna puts before an RDBStorage it makes: finished trials read once.
            cached = optuna.storages._CachedStorage(self._rdb_storage)
            self._optuna_storage = RetryingStorage(
                cached, self._retry, on_create=self.delete_study_records
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
        members = [_member(member, len(objectives)) for member in members]

        def add(session: Session) -> int:
            snapshot = FrontSnapshot(
                study_name=study_name,
                n_trials=int(n_trials),
                hypervolume=hypervolume,
                reference_point=reference_point,
                objectives=objectives,
                members=[FrontMember(**member) for member in members],
            )
            session.add(snapshot)
            session.flush()
            return snapshot.id

        return self.transaction(add)

    def latest_snapshot(self, study_name: str) -> dict[str, Any] | None:
        """The study's newest snapshot with its members, best first on the first objective."""
        latest = (
            select(FrontSnapshot)
            .where(FrontSnapshot.study_name == study_name)
            .order_by(FrontSnapshot.id.desc())
            .limit(1)
            .options(selectinload(FrontSnapshot.members))
        )

        def read(session: Session) -> dict[str, Any] | None:
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

        return self.transaction(read)

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
        return self.transaction(
            lambda session: [dict(row._mapping) for row in session.execute(history)]
        )

    def delete_study_snapshots(self, study_name: str) -> int:
        """Delete the study's snapshots and their members; return how many snapshots went."""
        statement = delete(FrontSnapshot).where(FrontSnapshot.study_name == study_name)
        return self.transaction(lambda session: session.execute(statement).rowcount)

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
        fields = {
            "study_name": study_name,
            "round": int(record["round"]),
            "objective": str(record["objective"]),
            "family": str(record["family"]),
            "n_train": int(record["n_train"]),
            "n_test": int(record["n_test"]),
            **scores,
        }

        def add(session: Session) -> int:
            row = PredictorRound(**fields)
            session.add(row)
            session.flush()
            return row.id

        return self.transaction(add)

    def predictor_rounds(self, study_name: str) -> list[dict[str, Any]]:
        """The study's predictor-quality rows, oldest first."""
        query = (
            select(PredictorRound)
            .where(PredictorRound.study_name == study_name)
            .order_by(PredictorRound.id)
        )
        keys = ("created_at", *ROUND_KEYS, *ROUND_SCORES)
        return self.transaction(
            lambda session: [
                {key: getattr(row, key) for key in keys} for row in session.scalars(query)
            ]
        )

    def beat(self, driver_id: str, study_name: str, host: str, pid: int) -> None:
        """Record that driver `driver_id` (of `study_name`, on `host` as `pid`) is alive now."""

        def write(session: Session) -> None:
            row = session.get(DriverHeartbeat, driver_id)
            if row is None:
                session.add(
                    DriverHeartbeat(id=driver_id, study_name=study_name, host=host, pid=pid)
                )
            else:
                row.beat_at = utc_now()

        self.transaction(write)

    def end_heartbeat(self, driver_id: str) -> None:
        """Remove a driver's heartbeat: it has stopped."""
        statement = delete(DriverHeartbeat).where(DriverHeartbeat.id == driver_id)
        self.transaction(lambda session: session.execute(statement))

    def heartbeats(self, study_name: str) -> list[dict[str, Any]]:
        """The study's driver heartbeats (`id`, `host`, `pid`, `started_at`, `beat_at`)."""
        query = select(DriverHeartbeat).where(DriverHeartbeat.study_name == study_name)
        keys = ("id", "host", "pid", "started_at", "beat_at")
        return self.transaction(
            lambda session: [
                {key: getattr(row, key) for key in keys} for row in session.scalars(query)
            ]
        )

    def study_exists(self, study_name: str) -> bool:
        """Whether Optuna's tables hold a study named ``study_name``: one indexed lookup,
        without importing Optuna (False in a database without Optuna's tables). The readers
        use it to ignore what tnas kept of a study deleted outside tnas."""
        query = select(OPTUNA_STUDIES.c.study_id).where(OPTUNA_STUDIES.c.study_name == study_name)

        def read(session: Session) -> bool:
            if not inspect(session.connection()).has_table("studies"):
                return False
            return session.execute(query).first() is not None

        return self.transaction(read)

    def count_study_records(self, study_name: str) -> dict[str, int]:
        """How many rows tnas keeps under the study's name, per table (``study_record_models``),
        e.g. ``{"driver_heartbeats": 0, "front_snapshots": 22, "predictor_rounds": 6}``."""

        def read(session: Session) -> dict[str, int]:
            return {
                _record_key(model): session.scalar(
                    select(func.count()).select_from(model).where(model.study_name == study_name)
                )
                for model in study_record_models()
            }

        return self.transaction(read)

    def delete_study_records(self, study_name: str) -> dict[str, int]:
        """Delete every row tnas keeps under the study's name, in one transaction: its front
        snapshots (their members go with them), predictor rounds, driver heartbeats, and those
        of any later table with a ``study_name`` column. Optuna's rows stay (see
        ``tnas.search.lifecycle.delete_study``). Returns the rows deleted per table."""
        return self.transaction(lambda session: _delete_records(session, study_name))

    def rename_study(self, study_name: str, new_name: str) -> dict[str, int]:
        """Rename a study in one transaction: Optuna's row in ``studies`` (its trials and
        attributes hang on its id, not its name) and tnas's rows under the old name. Rows left
        under ``new_name`` by an earlier study of that name are deleted first. ``LookupError``
        if there is no study ``study_name``, ``ValueError`` if one named ``new_name`` exists;
        either way nothing changes. Returns the rows renamed per table. Optuna's cache of this
        Database, which keeps study names, starts afresh."""
        studies = OPTUNA_STUDIES.c

        def work(session: Session) -> dict[str, int]:
            found = session.execute(
                select(studies.study_id).where(studies.study_name == study_name)
            ).first()
            if found is None:
                raise LookupError(f"unknown study {study_name!r} in {self._masked_url}")
            taken = select(studies.study_id).where(studies.study_name == new_name)
            if session.execute(taken).first() is not None:
                raise ValueError(f"a study named {new_name!r} exists in {self._masked_url}")
            _delete_records(session, new_name)
            session.execute(
                update(OPTUNA_STUDIES)
                .where(studies.study_id == found.study_id)
                .values(study_name=new_name)
            )
            return {
                _record_key(model): session.execute(
                    update(model)
                    .where(model.study_name == study_name)
                    .values(study_name=new_name)
                    .execution_options(synchronize_session=False)
                ).rowcount
                for model in study_record_models()
            }

        renamed = self.transaction(work)
        self._forget_optuna_storage()
        return renamed

    def copy_study_records(self, study_name: str, other: Database, new_name: str) -> dict[str, int]:
        """Copy the study's front snapshots (with their members) and predictor rounds into
        ``other`` (another database, or this one) under ``new_name``, timestamps kept, in one
        transaction of ``other``. Heartbeats are not copied: no driver runs the copy. Returns
        the rows copied per table."""
        snapshots = (
            select(FrontSnapshot)
            .where(FrontSnapshot.study_name == study_name)
            .order_by(FrontSnapshot.id)
            .options(selectinload(FrontSnapshot.members))
        )
        rounds = (
            select(PredictorRound)
            .where(PredictorRound.study_name == study_name)
            .order_by(PredictorRound.id)
        )

        def read(session: Session) -> tuple[list, list]:
            return (
                [
                    (_fields(row), [_fields(member) for member in row.members])
                    for row in session.scalars(snapshots)
                ],
                [_fields(row) for row in session.scalars(rounds)],
            )

        stored_snapshots, stored_rounds = self.transaction(read)

        def write(session: Session) -> dict[str, int]:
            for fields, members in stored_snapshots:
                session.add(
                    FrontSnapshot(
                        **fields,
                        study_name=new_name,
                        members=[FrontMember(**member) for member in members],
                    )
                )
            for fields in stored_rounds:
                session.add(PredictorRound(**fields, study_name=new_name))
            return {
                _record_key(FrontSnapshot): len(stored_snapshots),
                _record_key(PredictorRound): len(stored_rounds),
            }

        return other.transaction(write)

    def _forget_optuna_storage(self) -> None:
        if self._rdb_storage is not None:
            self._rdb_storage.remove_session()
            self._rdb_storage.engine.dispose()
            self._rdb_storage = self._optuna_storage = None

    def close(self) -> None:
        """Release every pooled connection, Optuna's included."""
        if self._rdb_storage is not None:
            self._rdb_storage.remove_session()
            self._rdb_storage.engine.dispose()
            self._rdb_storage = self._optuna_storage = None
        self._engine.dispose()


def study_record_models() -> list[type[Base]]:
    """tnas's models keyed by a study's name (a ``study_name`` column), by table name: front
    snapshots, predictor rounds, driver heartbeats, and any table added later, which
    ``delete_study_records`` and ``rename_study`` then cover without a change."""
    models = (mapper.class_ for mapper in Base.registry.mappers if "study_name" in mapper.columns)
    return sorted(models, key=lambda model: model.__tablename__)


def _record_key(model: type[Base]) -> str:
    return model.__tablename__.removeprefix("tnas_")


def _delete_records(session: Session, study_name: str) -> dict[str, int]:
    return {
        _record_key(model): session.execute(
            delete(model)
            .where(model.study_name == study_name)
            .execution_options(synchronize_session=False)
        ).rowcount
        for model in study_record_models()
    }


def _fields(row: Base) -> dict[str, Any]:
    """A row's stored values for a copy: not its id, its parent's id or its study's name."""
    skipped = ("id", "snapshot_id", "study_name")
    mapper = inspect(row).mapper
    keys = [attr.key for attr in mapper.column_attrs if attr.key not in skipped]
    return {key: getattr(row, key) for key in keys}


def _objective(objective: Mapping[str, str]) -> dict[str, str]:
    try:
        return Objective.from_dict(objective).to_dict()
    except ValueError as err:
        raise StorageError(str(err)) from None


def _floats(values: Sequence[float], length: int, what: str) -> list[float]:
    floats = [float(value) for value in values]
    if len(floats) != length or not all(math.isfinite(value) for value in floats):
        raise StorageError(f"{what} must be {length} finite numbers, got {list(values)!r}")
    return floats


def _member(member: Mapping[str, Any], n_objectives: int) -> dict[str, Any]:
    """A front member's columns, checked."""
    missing = [key for key in MEMBER_KEYS if key not in member]
    if missing:
        raise StorageError(f"front member lacks {', '.join(missing)}: {dict(member)!r}")
    return {
        "trial_number": int(member["trial_number"]),
        "config_hash": str(member["config_hash"]),
        "config": dict(member["config"]),
        "values": _floats(member["values"], n_objectives, "a front member's values"),
    }
