"""The Ray pool against a real local Ray, bound to loopback (one module: one Ray instance)."""

from __future__ import annotations

import os
import signal

import pytest

from tnas.space import ArchConfig, LayerConfig
from tnas.workers.backend import ProfileSettings, TrialJob
from tnas.workers.pool import RayPool
from tnas.workers.train import Budget

pytestmark = pytest.mark.usefixtures("local_ray")


def tiny(ffn_dim: int = 32, mixer: str = "attention") -> ArchConfig:
    layer = LayerConfig(mixer=mixer, n_heads=2, ffn_dim=ffn_dim)
    return ArchConfig(d_model=16, n_layers=1, layers=(layer,))


QUICK = TrialJob(
    task="digits",
    budget=Budget(steps=5, batch_size=8),
    profile=ProfileSettings(batch=1, seq_len=16, repeats=3),
)
LONG = TrialJob(task="digits", budget=Budget(steps=10**6, batch_size=8), profile=None)


def collect_all(pool, expected: int) -> list[dict]:
    reports = []
    while len(reports) < expected:
        reports.extend(pool.collect(timeout=120))
    return reports


def test_trials_run_on_two_actors_and_stream_back():
    pool = RayPool(QUICK, workers=2)
    try:
        assert len(set(pool.actor_pids())) == 2
        configs = {f"t{i}": tiny(16 * (i + 1), ["attention", "gla", "pool"][i]) for i in range(3)}
        for key, config in configs.items():
            pool.submit(key, config)
        reports = collect_all(pool, 3)
    finally:
        pool.close()
    assert sorted(r["key"] for r in reports) == ["t0", "t1", "t2"]
    for report in reports:
        assert report["status"] == "ok", report
        assert report["config_hash"] == configs[report["key"]].hash
        metrics = report["metrics"]
        assert 0 <= metrics["accuracy"] <= 1
        assert metrics["latency_ms"] > 0 and metrics["params"] > 0
        assert report["fingerprint"]["torch"]
        assert len(report["curve"]) == 5


def test_a_killed_actor_is_replaced_and_its_trial_retried():
    pool = RayPool(QUICK, workers=1)
    try:
        (pid,) = pool.actor_pids()
        pool.submit("victim", tiny())
        os.kill(pid, signal.SIGKILL)
        (report,) = collect_all(pool, 1)
        assert report["status"] == "ok", report
        assert report["attempts"] == 2
        assert pool.actor_pids()[0] != pid
    finally:
        pool.close()


def test_a_trial_whose_worker_dies_twice_fails_with_the_reason():
    pool = RayPool(QUICK, workers=1, max_retries=0)
    try:
        (pid,) = pool.actor_pids()
        pool.submit("victim", tiny())
        os.kill(pid, signal.SIGKILL)
        (report,) = collect_all(pool, 1)
    finally:
        pool.close()
    assert report["status"] == "failed" and report["reason"] == "worker_died"
    assert report["error"]


def test_a_trial_past_its_timeout_is_killed_and_reported():
    pool = RayPool(LONG, workers=1, trial_timeout=2.0)
    try:
        pool.submit("slow", tiny())
        (report,) = collect_all(pool, 1)
        assert report["status"] == "failed" and report["reason"] == "timeout"
        pool.job, pool.trial_timeout = QUICK, 120.0  # the replaced actor takes new trials
        pool.submit("next", tiny())
        (after,) = collect_all(pool, 1)
        assert after["status"] == "ok", after
    finally:
        pool.close()


def test_nan_loss_comes_back_as_a_failed_report():
    job = TrialJob(task="digits", budget=Budget(steps=30, batch_size=8, lr=1e30), profile=None)
    pool = RayPool(job, workers=1)
    try:
        pool.submit("nan", tiny())
        (report,) = collect_all(pool, 1)
    finally:
        pool.close()
    assert report["status"] == "failed" and report["reason"] == "nan_loss"
