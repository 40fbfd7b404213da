"""Whether a study's driver is alive: a heartbeat in the database, and the checks that use it.

A running driver (`Heartbeat`) writes a row to `tnas_driver_heartbeats` when it starts, renews
its `beat_at` every `HEARTBEAT_S` seconds from a thread, and deletes the row when it stops,
however it stops short of being killed. A driver is *live* while its beat is younger than
`STALE_AFTER_S` seconds and, on the same host, its process exists; a killed driver's row is
therefore stale at once on its own machine, and after `STALE_AFTER_S` seconds elsewhere.

`tnas search launch` and `tnas search resume` refuse a study with a live driver, in one line
naming it, unless asked to `join` it as a second driver; `resume` fails and re-queues only the
RUNNING trials of drivers that are not live (each trial records its driver's id).

>>> import os, tempfile
>>> from tnas.search.db import Database
>>> folder = tempfile.TemporaryDirectory()
>>> db = Database(os.path.join(folder.name, "live.db"))
>>> with Heartbeat(db, "demo") as beat:
...     [row["id"] for row in live_drivers(db, "demo")] == [beat.id]
True
>>> live_drivers(db, "demo")
[]
>>> db.close()
>>> folder.cleanup()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime

from tnas.search.db import Database, StorageError
from tnas.search.run import RunError

HEARTBEAT_S = 5.0  # how often a driver renews its beat
STALE_AFTER_S = 30.0  # a beat older than this belongs to a dead driver

logger = logging.getLogger(__name__)


class LiveDriver(RunError):
    """The study has a live driver, and this one was not asked to join it."""


class Heartbeat:
    """A driver's heartbeat for `study_name`: written on `start()` (so a second launch sees it
    at once), renewed every `interval` seconds by a daemon thread, deleted on `stop()`.
    A database that fails a renewal is logged and tried again at the next beat; the driver
    itself meets the failure on its own next write."""

    def __init__(self, db: Database, study_name: str, interval: float = HEARTBEAT_S):
        self.db, self.study_name, self.interval = db, study_name, interval
        self.id = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.db.beat(self.id, self.study_name, self.host, self.pid)

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="tnas-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.beat()
            except StorageError as err:
                # The driver meets the same failure at its next write and reports it once.
                logger.debug("heartbeat of %s not written: %s", self.study_name, err)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.db.end_heartbeat(self.id)
        except StorageError as err:  # the beat goes stale instead; the driver said why
            logger.debug("heartbeat of %s not removed: %s", self.study_name, err)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def process_exists(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_drivers(
    db: Database,
    study_name: str,
    stale_after: float = STALE_AFTER_S,
    now: datetime | None = None,
    rows: list[dict] | None = None,
) -> list[dict]:
    """The study's live drivers: heartbeat rows (`id`, `host`, `pid`, `started_at`, `beat_at`,
    `age_s`) younger than `stale_after` seconds whose process, on this host, still exists
    (`rows`: the study's heartbeats, when already read)."""
    now = now or datetime.now(UTC)
    host = socket.gethostname()
    live = []
    for row in db.heartbeats(study_name) if rows is None else rows:
        age = (now - row["beat_at"]).total_seconds()
        if age > stale_after or (row["host"] == host and not process_exists(row["pid"])):
            continue
        live.append(row | {"age_s": max(0.0, age)})
    return live


def check_live(db: Database, study_name: str, join: bool) -> set[str]:
    """The ids of the study's live drivers; `LiveDriver` in one line if there is one and this
    driver was not asked to `join` it. Dead drivers' heartbeats are removed."""
    rows = db.heartbeats(study_name)
    live = live_drivers(db, study_name, rows=rows)
    alive = {row["id"] for row in live}
    for row in rows:
        if row["id"] not in alive:
            db.end_heartbeat(row["id"])
    if live and not join:
        row = min(live, key=lambda r: r["age_s"])
        raise LiveDriver(
            f"study {study_name!r} has a live driver (pid {row['pid']} on {row['host']}, "
            f"heartbeat {row['age_s']:.0f} s ago); wait for it or stop it, or pass --join to "
            f"run a second driver (a dead driver's study is free after {STALE_AFTER_S:g} s)"
        )
    return {row["id"] for row in live}
