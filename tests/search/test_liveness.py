"""Liveness: a driver's heartbeat keeps `resume` and a second `launch` off its study; Ctrl-C
and SIGTERM stop an inline search at the next training step; `resume` re-runs what was cut.

The end-to-end tests run `tnas search launch` in a child process and wait for it through the
database (polled until a deadline), never by sleeping a fixed time.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from tests.conftest import poll_trials, write_replay_table
from tnas.cli import app
from tnas.launch import launch, resume
from tnas.search.db import Database
from tnas.search.driver import DRIVER_ATTR
from tnas.search.liveness import STALE_AFTER_S, Heartbeat, LiveDriver, live_drivers
from tnas.space import ArchConfig, load_space

WAIT_S = 120  # the most a child process is waited for; a pass takes a few seconds


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@pytest.fixture
def run(tmp_path) -> dict:
    table = write_replay_table(tmp_path / "table.jsonl", rows=60, seed=0)
    return {
        "space": "primer",
        "objectives": ["accuracy:max", "latency_ms:min"],
        "trials": 4,
        "workers": 1,
        "sampler": "random",
        "study": "s1",
        "storage": f"sqlite:///{tmp_path / 'studies.db'}",
        "pool": str(table),
    }


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"waited {WAIT_S} s for {what}")


def test_a_live_driver_keeps_launch_and_resume_off_its_study_unless_they_join(run):
    launch(**run)
    with Database(run["storage"]) as db, Heartbeat(db, "s1"):
        with pytest.raises(LiveDriver, match=r"^study 's1' has a live driver \(pid \d+ on "):
            resume("s1", storage=run["storage"], trials=6)
        with pytest.raises(LiveDriver, match="pass --join to run a second driver"):
            launch(**run | {"trials": 6})
        refused = CliRunner().invoke(app, ["search", "resume", "s1", "--storage", run["storage"]])
        assert refused.exit_code == 2
        assert refused.output.startswith("error: study 's1' has a live driver")
        assert refused.output.count("\n") == 1

        joined = resume("s1", storage=run["storage"], trials=6, join=True)
        assert joined.progress.finished == 6

    assert resume("s1", storage=run["storage"], trials=7).progress.finished == 7


def test_a_heartbeat_is_dead_when_its_process_is_gone_or_its_beat_is_stale(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    with Database(tmp_path / "beats.db") as db:
        db.beat("gone", "s", socket.gethostname(), int(dead.stdout))  # this host, no process
        db.beat("remote", "s", "another-host", 1)
        now = datetime.now(UTC)

        fresh = live_drivers(db, "s", now=now)
        stale = live_drivers(db, "s", now=now + timedelta(seconds=STALE_AFTER_S + 1))

    assert [row["id"] for row in fresh] == ["remote"]  # can't see its process: trust the beat
    assert stale == []


def test_a_driver_removes_its_heartbeat_when_it_stops_even_by_an_exception(run):
    class Stop(Exception):
        pass

    def stop(progress):
        if progress.finished:
            raise Stop

    with pytest.raises(Stop):
        launch(**run, progress=stop)

    with Database(run["storage"]) as db:
        assert db.heartbeats("s1") == []


def test_resume_beside_a_live_driver_leaves_that_drivers_trials_running(run):
    launch(**run)
    study = optuna.load_study(study_name="s1", storage=run["storage"])
    with Database(run["storage"]) as db, Heartbeat(db, "s1") as beat:
        trial = study.ask()  # a trial the live driver is running
        trial.set_user_attr(DRIVER_ATTR, beat.id)
        resume("s1", storage=run["storage"], trials=6, join=True)
        assert study.get_trials()[trial.number].state == TrialState.RUNNING
    resume("s1", storage=run["storage"], trials=6)  # its driver is gone now
    frozen = study.get_trials()[trial.number]
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["reason"] == "orphaned"


@pytest.mark.parametrize("reason", ["interrupted", "profile_failed"])
def test_resume_reruns_interrupted_and_unprofiled_trials(run, reason):
    launch(**run)
    study = optuna.load_study(study_name="s1", storage=run["storage"])
    done = {t.user_attrs["config_hash"] for t in study.get_trials()}
    space = load_space("primer")
    rows = [line for line in open(run["pool"]) if line.strip()]
    cut = next(
        ArchConfig.from_dict(json.loads(line)["config"])
        for line in rows
        if ArchConfig.from_dict(json.loads(line)["config"]).hash not in done
    )
    trial = study.ask()
    trial.set_user_attr("config", cut.to_dict())
    trial.set_user_attr("config_hash", cut.hash)
    trial.set_user_attr("reason", reason)
    study.tell(trial, state=TrialState.FAIL)

    result = resume("s1", storage=run["storage"], trials=6)

    assert result.progress.requeued == 1
    completed = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert cut.hash in {t.user_attrs["config_hash"] for t in completed}
    assert space.contains(cut)


def child(args: list[str], cwd) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    return subprocess.Popen(
        [sys.executable, "-m", "tnas.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def running_trials(storage: str, study: str) -> list:
    return poll_trials(storage, study, states=(TrialState.RUNNING,))


def test_resume_while_the_driver_runs_is_refused_and_the_driver_finishes(run, tmp_path):
    args = ["search", "launch", "--space", "primer", "--pool", run["pool"], "--trials", "6"]
    args += ["--evaluator", f"replay:{run['pool']},delay=0.5", "--workers", "1"]
    args += ["--sampler", "random", "--study", "s1", "--storage", run["storage"]]
    driver = child(args, tmp_path)
    try:
        wait_for(lambda: running_trials(run["storage"], "s1"), "a trial in flight")

        refused = CliRunner().invoke(app, ["search", "resume", "s1", "--storage", run["storage"]])

        assert refused.exit_code == 2, refused.output
        assert "has a live driver" in refused.output
        output, _ = driver.communicate(timeout=WAIT_S)
    finally:
        driver.kill()
    assert driver.returncode == 0, output
    assert "Error" not in output
    study = optuna.load_study(study_name="s1", storage=run["storage"])
    assert sum(t.state == TrialState.COMPLETE for t in study.get_trials()) == 6


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["int", "term"])
def test_a_signal_cuts_an_inline_trial_at_its_next_step_and_resume_reruns_it(
    tmp_path, signal_number
):
    storage = f"sqlite:///{tmp_path / 'inline.db'}"
    args = ["search", "launch", "--space", "simq", "--task", "digits", "--workers", "0"]
    args += ["--steps", "1000000", "--trials", "2", "--study", "sig", "--storage", storage]
    driver = child(args, tmp_path)  # a million steps: only an interruption ends it in time
    try:
        wait_for(lambda: running_trials(storage, "sig"), "the first trial to start")
        driver.send_signal(signal_number)
        output, _ = driver.communicate(timeout=WAIT_S)
    finally:
        driver.kill()

    assert driver.returncode == 130, output
    assert "resume with `tnas search resume sig`" in output
    assert "Traceback" not in output
    trial = optuna.load_study(study_name="sig", storage=storage).get_trials()[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"] == "interrupted"
    with Database(storage) as db:
        assert db.heartbeats("sig") == []
