"""End-to-end searches through the CLI, on the replay evaluator (fast) and one on real training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from tnas.cli import app
from tnas.search.pareto import pareto_front, to_minimization
from tnas.search.samplers import SAMPLERS
from tnas.space import load_space

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """A replay table of 60 distinct primer configs with metrics that trade off."""
    space = load_space("primer")
    rng = np.random.default_rng(1)
    rows, seen = [], set()
    while len(rows) < 60:
        config = space.sample(rng)
        if config.hash in seen:
            continue
        seen.add(config.hash)
        params = config.derived()["params"]
        jitter = int(config.hash[:6], 16) / 16**6
        metrics = {
            "accuracy": 1 - 1 / (1 + params / 2e6) + 0.05 * jitter,
            "latency_ms": params / 1e5 + 2 * config.n_layers + jitter,
        }
        rows.append({"config": config.to_dict(), "metrics": metrics})
    path = tmp_path_factory.mktemp("replay") / "table.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def evaluated(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    return [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_replay_search_stores_trials_and_the_front(table, tmp_path, sampler):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = cli(
        "search",
        "launch",
        "--space",
        "primer",
        "--pool",
        str(table),
        "--trials",
        "25",
        "--sampler",
        sampler,
        "--study",
        "s",
        "--storage",
        url,
        "--workers",
        "2",
    )
    assert result.exit_code == 0, result.output
    done = evaluated(url, "s")
    assert len(done) == 25
    hashes = [t.user_attrs["config_hash"] for t in done]
    assert len(set(hashes)) == len(hashes)  # no config evaluated twice
    points = to_minimization(np.array([t.values for t in done]), ["max", "min"])
    expected = sorted(done[i].number for i in pareto_front(points))
    front = json.loads(cli("pareto", "s", "--storage", url, "--format", "json").output)
    assert sorted(row["number"] for row in front) == expected
    assert "Pareto front of s" in result.output


def test_query_commands_on_a_finished_study(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    assert (
        cli(
            "search",
            "launch",
            "--pool",
            str(table),
            "--trials",
            "12",
            "--study",
            "q",
            "--storage",
            url,
        ).exit_code
        == 0
    )
    studies = cli("studies", "--storage", url)
    assert studies.exit_code == 0 and "q" in studies.output
    trials = cli("trials", "q", "--storage", url, "--format", "csv")
    assert trials.exit_code == 0 and len(trials.output.strip().splitlines()) >= 13
    history = cli("pareto", "q", "--storage", url, "--history")
    assert history.exit_code == 0, history.output
    plot = tmp_path / "front.png"
    assert cli("pareto", "q", "--storage", url, "--plot", str(plot)).exit_code == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_run_file_reproduces_the_same_search(table, tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(f"pool: {table}\ntrials: 10\nsampler: tpe\nseed: 3\nstudy: r\n")
    numbers = []
    for name in ("a.db", "b.db"):
        url = f"sqlite:///{tmp_path / name}"
        assert cli("search", "launch", str(run), "--storage", url).exit_code == 0
        numbers.append([t.user_attrs["config_hash"] for t in evaluated(url, "r")])
    assert numbers[0] == numbers[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objective", "accuracy:max", "--objective", "speed:min"], "unknown objective 'speed'"),
        (["--objective", "accuracy:up"], "must be NAME:max or NAME:min"),
        (["--constraint", "params <= 10"], "no feasible config"),
        (["--constraint", "latency <= 10"], "unknown quantity 'latency'"),
        (["--sampler", "cmaes"], "unknown sampler 'cmaes'"),
    ],
    ids=["unknown-objective", "bad-direction", "infeasible", "unknown-quantity", "bad-sampler"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(table, tmp_path, args, message):
    db = tmp_path / "untouched.db"
    result = cli("search", "launch", "--pool", str(table), "--storage", f"sqlite:///{db}", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not db.exists()


def test_bad_storage_urls_are_one_line_exit_2(table, tmp_path):
    for url in (
        "mysql://x/y",
        f"sqlite:///{tmp_path}/missing/dir/x.db",
        "postgresql://tnas@127.0.0.1:1/tnas",
    ):
        result = cli("search", "launch", "--pool", str(table), "--storage", url)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1


def launch_process(table: Path, url: str, study: str, trials: int, delay: float, join=False):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tnas.cli",
            "search",
            "launch",
            "--pool",
            str(table),
            "--evaluator",
            f"replay:{table},delay={delay}",
            "--trials",
            str(trials),
            "--study",
            study,
            "--storage",
            url,
            "--workers",
            "2",
            *(["--join"] if join else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_evaluated(url: str, study: str, count: int, limit: float = 120) -> None:
    """Poll the database until the study has `count` evaluated trials (a running driver)."""

    def reached() -> bool:
        try:
            return len(evaluated(url, study)) >= count
        except KeyError:  # the study is not created yet
            return False

    start = time.monotonic()
    while not reached():
        assert time.monotonic() - start < limit, f"{study} never reached {count} trials"
        time.sleep(0.2)


def test_resume_after_sigkill_loses_nothing_and_repeats_nothing(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    driver = launch_process(table, url, "k", trials=20, delay=0.3)

    wait_for_evaluated(url, "k", 5)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {t.number: t.values for t in evaluated(url, "k")}
    result = cli("search", "resume", "k", "--storage", url)
    assert result.exit_code == 0, result.output
    after = evaluated(url, "k")
    assert len(after) == 20
    hashes = [t.user_attrs["config_hash"] for t in after]
    assert len(set(hashes)) == 20
    assert all({t.number: t.values for t in after}[n] == v for n, v in before.items())
    states = optuna.load_study(study_name="k", storage=url).get_trials()
    assert not [t for t in states if t.state == optuna.trial.TrialState.RUNNING]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_drivers_share_one_study(table, tmp_path, request, backend):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("postgres_cluster").create_database("shared")
    create = cli(
        "search",
        "launch",
        "--pool",
        str(table),
        "--trials",
        "1",
        "--study",
        "two",
        "--storage",
        url,
    )
    assert create.exit_code == 0, create.output  # the study exists; now two drivers race
    drivers = [launch_process(table, url, "two", 24, delay=0.05, join=True) for _ in range(2)]
    for driver in drivers:
        _, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr
    done = evaluated(url, "two")
    hashes = [t.user_attrs["config_hash"] for t in done]
    assert len(done) >= 24 and len(set(hashes)) == len(hashes)


def test_ctrl_c_fails_in_flight_trials_and_the_study_resumes(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    driver = launch_process(table, url, "i", trials=20, delay=0.3)

    wait_for_evaluated(url, "i", 4)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    trials = optuna.load_study(study_name="i", storage=url).get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("reason") == "interrupted"]
    assert interrupted
    assert cli("search", "resume", "i", "--storage", url).exit_code == 0
    hashes = [t.user_attrs["config_hash"] for t in evaluated(url, "i")]
    assert len(hashes) == 20 and len(set(hashes)) == 20


def test_a_small_real_search_trains_and_profiles(tmp_path):
    url = f"sqlite:///{tmp_path / 'real.db'}"
    result = cli(
        "search",
        "launch",
        "--space",
        "wide",
        "--task",
        "digits",
        "--trials",
        "2",
        "--workers",
        "0",
        "--steps",
        "3",
        "--study",
        "real",
        "--storage",
        url,
    )
    assert result.exit_code == 0, result.output
    done = evaluated(url, "real")
    assert len(done) == 2
    for trial in done:
        assert 0 <= trial.values[0] <= 1 and trial.values[1] > 0
        assert trial.user_attrs["fingerprint"]["torch"]
        assert len(trial.user_attrs["curve"]) == 3


def test_query_commands_do_not_import_torch(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'light.db'}"
    launched = cli(
        "search", "launch", "--pool", str(table), "--trials", "5", "--study", "l", "--storage", url
    )
    assert launched.exit_code == 0, launched.output
    code = (
        "import sys; from typer.testing import CliRunner; from tnas.cli import app; "
        f"results = [CliRunner().invoke(app, [*args, '--storage', {url!r}]) "
        "for args in (['studies'], ['pareto', 'l'])]; "
        "assert all(r.exit_code == 0 for r in results), [r.output for r in results]; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
