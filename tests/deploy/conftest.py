"""Fixtures for the deployment tests: the docker-compose topology on this machine, as
`scripts/cluster` starts it (PostgreSQL on 127.0.0.1, a Ray head on 127.0.0.2 and a Ray worker
on 127.0.0.3, one CPU each; the worker is also a latency target, resource `edge`), search
drivers run as `tnas` processes, and a run of tiny real trials. Every process a test starts is
stopped by a finalizer, also when the test fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from tests.conftest import poll_trials, write_replay_table
from tests.search.conftest import POSTGRES_USER, postgres_bin_dir
from tnas.space import load_space

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "scripts" / "cluster"
WORKER_IP = "127.0.0.3"
TARGET = "edge"  # the worker node's custom resource: the latency target device
HEAD_IP = "127.0.0.2"
# Generous: two cores shared with other jobs; a condition is polled, never slept for.
LIMIT_S = 300

optuna.logging.set_verbosity(optuna.logging.WARNING)


def wait_until(condition: Callable[[], bool], what: str, limit: float = LIMIT_S) -> None:
    """Poll `condition` until it holds; fail naming `what` after `limit` seconds."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit, f"waited {limit:g} s for {what}"
        time.sleep(0.2)


class LocalCluster:
    """One `scripts/cluster` directory: run its commands, read its state, make databases."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env: dict[str, str] = {}

    def run(self, *args: str) -> str:
        """`scripts/cluster --dir ROOT ARGS`; its stdout. Fails the test with its stderr."""
        done = subprocess.run(
            [sys.executable, str(CLUSTER_SCRIPT), "--dir", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
        )
        if done.returncode != 0 and args[0] != "status":
            pytest.fail(f"scripts/cluster {' '.join(args)}:\n{done.stderr}", pytrace=False)
        return done.stdout

    def up(self) -> None:
        """Start whatever part is down; read the addresses it prints. The worker node offers
        the custom resource `edge` (a latency target, `--latency node:edge`)."""
        lines = self.run("up", "--worker-resources", json.dumps({TARGET: 1})).splitlines()
        self.env = dict(line.removeprefix("export ").split("=", 1) for line in lines)

    @property
    def state(self) -> dict:
        return json.loads((self.root / "cluster.json").read_text())

    @property
    def ray_address(self) -> str:
        return self.env["RAY_ADDRESS"]

    def create_database(self, name: str) -> str:
        """A new database on the cluster's PostgreSQL; its URL, as `--storage` takes it."""
        port = str(self.state["ports"]["postgres"])
        createdb = postgres_bin_dir() / "createdb"
        subprocess.run(
            [str(createdb), "-h", "127.0.0.1", "-p", port, "-U", POSTGRES_USER, name],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{port}/{name}"

    def node_processes(self, part: str) -> dict[int, str]:
        """The command lines of a Ray node's processes (`head`, `worker`), by pid: its daemons
        and its trial workers, `ray::TrialActor.run` while one runs a trial."""
        session = self.state[part]["session"]
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                if int(text[text.rindex(")") + 2 :].split()[3]) == session:
                    cmdline = (stat.parent / "cmdline").read_text()
                    found[int(stat.parent.name)] = cmdline.replace("\0", " ").strip()
            except (OSError, ValueError):
                continue  # it exited
        return found

    def freeze(self, part: str) -> None:
        """SIGSTOP every process of a Ray node, so that none acts before it is killed."""
        for pid in self.node_processes(part):
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """The whole topology, started once; `down` in the finalizer, whatever happened."""
    # Short (Ray's socket paths) and outside pytest's 0700 tmp dirs (PostgreSQL runs as
    # `postgres` under root).
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="tnas-c-", dir="/tmp")))
    try:
        cluster.up()
        yield cluster
    finally:
        done = subprocess.run(
            [sys.executable, str(CLUSTER_SCRIPT), "--dir", str(cluster.root), "down"],
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
        )
        shutil.rmtree(cluster.root, ignore_errors=True)
        assert done.returncode == 0, done.stderr


@pytest.fixture
def cluster(local_cluster: LocalCluster) -> LocalCluster:
    """The cluster with every part up: a fault test before may have left one down."""
    local_cluster.up()
    return local_cluster


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run file of tiny real trials (2 training steps, a short profile) over a pool of the
    smallest configs of the `primer` space, so that a trial takes a few seconds."""
    space = load_space("primer")
    rng = np.random.default_rng(0)
    configs = {config.hash: config for config in (space.sample(rng) for _ in range(2000))}
    smallest = sorted(configs.values(), key=lambda config: config.derived()["params"])[:24]
    folder = tmp_path_factory.mktemp("tiny")
    pool = folder / "pool.jsonl"
    pool.write_text("".join(json.dumps({"config": c.to_dict()}) + "\n" for c in smallest))
    run = {
        "space": "primer",
        "task": "digits",
        "objectives": ["accuracy:max", "latency_ms:min"],
        "pool": str(pool),
        "steps": 2,
        "batch_size": 8,
        "profile_repeats": 2,
        "profile_seq_len": 16,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


@pytest.fixture(scope="session")
def replay_table(tmp_path_factory) -> Path:
    """A replay table of 60 distinct primer configs, for searches that train nothing."""
    return write_replay_table(tmp_path_factory.mktemp("replay") / "table.jsonl", 60, seed=1)


class Driver:
    """One `tnas` process; its stdout and stderr go to files the test can poll."""

    def __init__(self, args: list[str], folder: Path, name: str, preexec=None, prefix=()):
        self.stdout_path = folder / f"{name}.out"
        self.stderr_path = folder / f"{name}.err"
        env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "tnas.cli", *args],
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=folder,
                preexec_fn=preexec,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait(self, limit: float = LIMIT_S) -> int:
        return self.process.wait(timeout=limit)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=60)


@pytest.fixture
def drivers(tmp_path) -> Iterator[Callable[..., Driver]]:
    """Start `tnas ARGS` processes; every one still running is killed after the test."""
    started: list[Driver] = []

    def start(*args: str, preexec=None, prefix=()) -> Driver:
        driver = Driver(list(args), tmp_path, f"tnas-{len(started)}", preexec, prefix)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.kill()


def trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials (tests poll this while drivers run)."""
    return poll_trials(url, study)


def evaluated(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's completed trials that ran an evaluation (not told a duplicate's values)."""
    return [
        trial
        for trial in trials(url, study)
        if trial.state == optuna.trial.TrialState.COMPLETE
        and "duplicate_of" not in trial.user_attrs
    ]


def check_budget_met_once_each(url: str, study: str, budget: int) -> list:
    """The study has at least `budget` evaluated trials, no config evaluated twice, and no
    trial left running; returns the evaluated trials."""
    done = evaluated(url, study)
    hashes = [trial.user_attrs["config_hash"] for trial in done]
    assert len(done) >= budget, f"{len(done)} of {budget} trials evaluated"
    assert len(set(hashes)) == len(hashes), "a config was evaluated twice"
    running = [t.number for t in trials(url, study) if t.state == optuna.trial.TrialState.RUNNING]
    assert not running, f"trials {running} were left running"
    return done
