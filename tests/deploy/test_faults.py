"""Faults on the deployment's topology (scripts/cluster), each injected mid-search by condition:
a Ray worker node SIGKILLed, a driver SIGKILLed, PostgreSQL restarted; and a SQLite file that is
read-only or on a full disk. Each test says what must survive."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from tests.deploy.conftest import (
    HEAD_IP,
    WORKER_IP,
    check_budget_met_once_each,
    evaluated,
    trials,
    wait_until,
)
from tnas.search.db import Database, StorageError
from tnas.search.db.session import Retry, RetryingStorage

BUDGET = 6
RUNNING = "RUNNING"


def while_alive(driver, condition):
    """`condition`, failing at once with the driver's stderr if the driver has exited."""

    def check() -> bool:
        if driver.process.poll() is not None:
            pytest.fail(f"the driver exited {driver.process.returncode}:\n{driver.stderr}")
        return condition()

    return check


def launch_on_cluster(drivers, cluster, run_file, url, study, trials_, workers, *extra):
    return drivers(
        "search", "launch", str(run_file), "--storage", url, "--ray-address",
        cluster.ray_address, "--study", study, "--trials", str(trials_), "--workers", str(workers),
        *extra,
    )  # fmt: skip


def test_a_lost_worker_node_has_its_trial_retried_and_the_search_finishes(
    cluster, drivers, tiny_run
):
    url = cluster.create_database("worker_lost")
    driver = launch_on_cluster(drivers, cluster, tiny_run, url, "lost", BUDGET, workers=2)

    def trial_running_on_worker() -> bool:
        commands = cluster.node_processes("worker").values()
        return any(command.startswith("ray::TrialActor.run") for command in commands)

    wait_until(while_alive(driver, trial_running_on_worker), "a trial on the worker node")
    cluster.freeze("worker")  # mid-trial: it cannot finish before the kill
    cluster.run("kill", "worker")

    assert driver.wait() == 0, driver.stderr
    assert "worker   down" in cluster.run("status")
    done = check_budget_met_once_each(url, "lost", BUDGET)
    assert len(done) == BUDGET
    retried = [trial for trial in done if trial.user_attrs["attempts"] == 2]
    assert retried, "the worker node's trial was not retried"
    assert {trial.user_attrs["node_ip"] for trial in retried} == {HEAD_IP}
    failed = [t for t in trials(url, "lost") if t.user_attrs.get("reason") == "worker_died"]
    assert not failed


def test_a_killed_driver_resumes_losing_nothing_and_repeating_nothing(cluster, drivers, tiny_run):
    url = cluster.create_database("driver_killed")
    driver = launch_on_cluster(drivers, cluster, tiny_run, url, "killed", BUDGET, workers=2)

    def evaluated_and_running() -> bool:
        running = [t for t in trials(url, "killed") if t.state.name == RUNNING]
        submitted = any("config_hash" in trial.user_attrs for trial in running)
        return len(evaluated(url, "killed")) >= 2 and submitted

    wait_until(while_alive(driver, evaluated_and_running), "2 trials done and one running")
    driver.kill()
    before = {trial.number: trial.values for trial in evaluated(url, "killed")}

    resume = drivers("search", "resume", "killed", "--storage", url)
    assert resume.wait() == 0, resume.stderr
    done = check_budget_met_once_each(url, "killed", BUDGET)
    assert len(done) == BUDGET
    values = {trial.number: trial.values for trial in done}
    assert all(values.get(number) == kept for number, kept in before.items())
    orphans = {
        trial.user_attrs["config_hash"]
        for trial in trials(url, "killed")
        if trial.user_attrs.get("reason") == "orphaned" and "config_hash" in trial.user_attrs
    }
    assert orphans  # the killed driver's running trials, failed and queued again ...
    assert orphans <= {trial.user_attrs["config_hash"] for trial in done}  # ... and run
    assert {trial.user_attrs["node_ip"] for trial in done} == {HEAD_IP, WORKER_IP}


def test_drivers_ride_out_a_postgres_restart(cluster, drivers, tiny_run):
    url = cluster.create_database("postgres_restart")
    budget = 2 * BUDGET  # enough left after the first 2 that no driver ends before the stop
    pair = [
        launch_on_cluster(drivers, cluster, tiny_run, url, "restart", budget, 1, "--join")
        for _ in range(2)
    ]
    wait_until(
        while_alive(pair[0], lambda: len(evaluated(url, "restart")) >= 2), "2 trials evaluated"
    )
    cluster.run("stop", "postgres")
    for driver in pair:
        retrying = while_alive(driver, lambda driver=driver: "lost the connection" in driver.stderr)
        wait_until(retrying, "a driver retrying")
    cluster.up()

    for driver in pair:
        assert driver.wait() == 0, driver.stderr
        assert "reconnected to postgresql" in driver.stderr
    check_budget_met_once_each(url, "restart", budget)


def test_a_database_gone_for_good_fails_in_one_line_then_reconnects(cluster):
    url = cluster.create_database("gone")
    with Database(url, retry_s=2) as db:
        storage = db.optuna_storage()
        optuna.create_study(study_name="gone", storage=storage)
        cluster.run("stop", "postgres")
        for read in (lambda: db.latest_snapshot("gone"), storage.get_all_studies):
            with pytest.raises(StorageError) as raised:
                read()
            (line,) = str(raised.value).splitlines()
            assert line.startswith(f"lost the connection to {url.replace('://', '+psycopg://')}")
            assert "could not reconnect within 2 s" in line
        cluster.up()
        assert db.latest_snapshot("gone") is None  # the same Database, connected again
        assert [study.study_name for study in storage.get_all_studies()] == ["gone"]


def test_a_tell_whose_reply_a_dropped_connection_lost_is_not_an_error():
    """The one write a restart can make ambiguous: the commit reached the server, the reply did
    not. Told again, Optuna refuses a finished trial; the retry sees the state it asked for."""

    class Backend:
        state, calls = optuna.trial.TrialState.RUNNING, 0

        def set_trial_state_values(self, trial_id, state, values=None):
            self.calls += 1
            if self.state.is_finished():
                raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial_id} finished")
            self.state = state
            lost = OperationalError("COMMIT", {}, Exception("server closed the connection"))
            raise optuna.exceptions.StorageInternalError("commit failed") from lost

        def get_trial(self, trial_id):
            return optuna.trial.create_trial(state=self.state, values=[1.0])

    backend = Backend()
    storage = RetryingStorage(backend, Retry("postgresql+psycopg://tnas@db/tnas", None, 5))
    assert storage.set_trial_state_values(0, optuna.trial.TrialState.COMPLETE, [1.0])
    assert backend.calls == 2


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_lines(stderr: str) -> list[str]:
    """stderr without Optuna's log lines (`[I 2026-...]`)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("[")]


def without_root_privilege() -> tuple[str, ...]:
    """A command prefix under which root obeys file permissions as any user does: setpriv
    drops the capabilities that let root write a read-only file. Empty when not root."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, which ignores file permissions, and setpriv is missing")
    caps = "-dac_override,-dac_read_search,-fowner"
    return (setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--")


def replay_search(drivers, table: Path, url: str, study: str, trials_: int, *extra: str):
    return drivers(
        "search", "launch", "--pool", str(table), "--evaluator", f"replay:{table},delay=0.1",
        "--trials", str(trials_), "--study", study, "--storage", url, "--workers", "2", *extra,
    )  # fmt: skip


def test_a_read_only_sqlite_file_fails_in_one_line_and_is_unchanged(
    drivers, replay_table, tmp_path
):
    path = tmp_path / "search.db"
    assert replay_search(drivers, replay_table, str(path), "ro", 5).wait() == 0
    digest, count = sha256(path), len(trials(str(path), "ro"))
    path.chmod(0o444)
    unprivileged = without_root_privilege()

    for args in (
        ("search", "resume", "ro", "--storage", str(path)),
        ("search", "launch", "--pool", str(replay_table), "--study", "other", "--storage",
         str(path)),
    ):  # fmt: skip
        attempt = drivers(*args, prefix=unprivileged)
        assert attempt.wait() == 2, attempt.stderr
        (line,) = error_lines(attempt.stderr)
        assert line.startswith("error: ") and str(path) in line and "readonly" in line, line
    studies = drivers("studies", "--storage", str(path), prefix=unprivileged)
    assert studies.wait() == 0, studies.stderr  # reading a read-only file still works

    assert sha256(path) == digest
    assert len(trials(str(path), "ro")) == count

    path.chmod(0o000)
    unreadable = drivers("studies", "--storage", str(path), prefix=unprivileged)
    assert unreadable.wait() == 2, unreadable.stderr
    assert error_lines(unreadable.stderr) == [f"error: cannot read {path}: permission denied"]
    path.chmod(0o444)
    assert sha256(path) == digest


class SmallDisk:
    """A folder with little room: a tmpfs of `size` bytes where this process may mount one,
    else a limit on the size of any file the processes a test starts write (RLIMIT_FSIZE),
    which fails their writes the same way (the signal it sends is ignored)."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size
        folder.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        self.mounted = (
            shutil.which("mount") is not None
            and subprocess.run(mount, capture_output=True, timeout=60).returncode == 0
        )

    def limit(self) -> None:
        """A `preexec_fn`: the file-size limit, where there is no tmpfs."""
        if not self.mounted:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, self.size))

    def grow(self) -> None:
        """Room again: a bigger tmpfs (the processes started next have no limit anyway)."""
        if self.mounted:
            remount = ["mount", "-o", "remount,size=256m", str(self.folder)]
            subprocess.run(remount, check=True, capture_output=True, timeout=60)

    def remove(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], capture_output=True, timeout=60)


@pytest.fixture
def small_disk(tmp_path):
    disks: list[SmallDisk] = []

    def make(size: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size))
        return disks[-1]

    yield make
    for disk in disks:
        disk.remove()


PAGES = ("page_count", "page_size")


def test_a_full_disk_fails_in_one_line_and_the_study_resumes_intact(
    drivers, replay_table, tmp_path, small_disk
):
    made = tmp_path / "search.db"
    first = replay_search(drivers, replay_table, str(made), "full", 40)
    wait_until(while_alive(first, lambda: len(evaluated(str(made), "full")) >= 5), "5 trials")
    first.process.send_signal(signal.SIGINT)  # stops cleanly; the run asks for 40 trials
    assert first.wait() == 130, first.stderr
    before = {trial.number: trial.values for trial in evaluated(str(made), "full")}

    with closing(sqlite3.connect(made)) as connection:  # what the write-ahead log holds too
        pages, page_size = (connection.execute(f"PRAGMA {p}").fetchone()[0] for p in PAGES)
    disk = small_disk(pages * page_size + 160 * 1024)
    path = disk.folder / "search.db"
    with sqlite3.connect(made) as source, sqlite3.connect(path) as copy:
        source.backup(copy)  # a consistent copy, what the write-ahead log holds included
    full = drivers("search", "resume", "full", "--storage", str(path), preexec=disk.limit)
    assert full.wait() == 2, full.stderr
    (line,) = error_lines(full.stderr)
    assert line.startswith("error: ") and str(path) in line, line
    if disk.mounted:
        assert "database or disk is full" in line

    disk.grow()
    # The connections this test leaves open on the file (the copy's, this one) stay open while
    # `evaluated` opens tnas's Database on it: a header read through a plain open() used to
    # drop their locks on close, and the resume below then left a malformed database.
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    values = {trial.number: trial.values for trial in evaluated(str(path), "full")}
    assert all(values.get(number) == kept for number, kept in before.items())
    resume = drivers("search", "resume", "full", "--storage", str(path))
    assert resume.wait() == 0, resume.stderr
    done = check_budget_met_once_each(str(path), "full", 40)
    assert len(done) == 40
