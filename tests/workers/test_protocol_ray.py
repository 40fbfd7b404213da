"""Latency is measured the same way in this process and on a Ray worker (issue 16): one thread,
the same batch, sequence length, repeats and warmup, so the two agree within the noise."""

from __future__ import annotations

import statistics

import pytest

from tnas.space import ArchConfig, LayerConfig
from tnas.workers.backend import InlineEvaluator, ProfileSettings, TrialJob
from tnas.workers.pool import RayPool
from tnas.workers.train import Budget

pytestmark = pytest.mark.usefixtures("local_ray")

ROUNDS = 3
# Before issue 16 the two differed by 10-100x on a busy 2-core machine (all cores inline,
# one on Ray); the same protocol keeps them within timing noise, far inside this. CI runs
# saw 2.0x and 3.1x for a 0.3 ms model while the other test worker ran on the Ray actor's
# pinned core: a shared core, not a protocol difference, which this factor still catches.
FACTOR = 5.0

JOB = TrialJob(
    task="digits",
    budget=Budget(steps=2, batch_size=8),
    profile=ProfileSettings(seq_len=32, repeats=5, warmup=2),
)
CONFIGS = {
    "narrow": ArchConfig(d_model=32, n_layers=1, layers=(LayerConfig(n_heads=2, ffn_dim=64),)),
    "wide": ArchConfig(d_model=64, n_layers=2, layers=(LayerConfig(n_heads=4, ffn_dim=256),) * 2),
}


def latency(report: dict) -> float:
    assert report["status"] == "ok", report
    return report["metrics"]["latency_ms"]


def spread(values: list[float]) -> float:
    return max(values) / min(values)


def test_inline_and_ray_latencies_agree_within_their_noise():
    inline = InlineEvaluator(JOB)
    pool = RayPool(JOB, workers=1)
    measured = {(name, where): [] for name in CONFIGS for where in ("inline", "ray")}
    try:
        for round_ in range(ROUNDS):  # interleaved, so a load change hits both alike
            for name, config in CONFIGS.items():
                inline.submit(f"{name}-{round_}", config)
                (report,) = inline.collect()
                measured[name, "inline"].append(latency(report))
                pool.submit(f"{name}-{round_}", config)
                reports = []
                while not reports:
                    reports = pool.collect(timeout=120)
                measured[name, "ray"].append(latency(reports[0]))
                assert reports[0]["metrics"]["threads"] == report["metrics"]["threads"] == 1
    finally:
        pool.close()
        inline.close()
    for name in CONFIGS:
        inline_ms, ray_ms = measured[name, "inline"], measured[name, "ray"]
        allowed = max(FACTOR, spread(inline_ms) * spread(ray_ms))
        ratio = statistics.median(inline_ms) / statistics.median(ray_ms)
        assert 1 / allowed <= ratio <= allowed, (name, inline_ms, ray_ms)
