"""Worker benchmarks, each figure beside a baseline measured in the same run.

    python bench/workers.py [--only dispatch,scaling,repeatability,int8]

1. dispatch overhead: the same near-empty trials (one step of a tiny model) through a 1-actor
   Ray pool and by direct call; the difference per trial, in ms and as a share of a 10 s trial
   (goal <= 2%).
2. scaling: throughput of CPU-bound trials on 2 workers against 1 (goal >= 1.8x on 2 cores).
3. repeatability: coefficient of variation of 10 repeated `profile` calls of one config, beside
   that of a naive timer (one forward, no warm-up, no pinning) (goal <= 3%).
4. CPU int8 against fp32 latency for FFN-heavy configs at batch 32 (goal >= 3x at width >= 1024).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from tnas.nn import build_model
from tnas.space import ArchConfig, LayerConfig
from tnas.workers.backend import InlineEvaluator, TrialJob
from tnas.workers.profile import profile
from tnas.workers.train import Budget


def config(d_model: int, ffn_dim: int, layers: int, bits: int = 32, heads: int = 4) -> ArchConfig:
    layer = LayerConfig(mixer="attention", n_heads=heads, ffn_dim=ffn_dim, bits=bits)
    return ArchConfig(d_model=d_model, n_layers=layers, max_seq_len=128, layers=(layer,) * layers)


def run_all(evaluator, configs: list[ArchConfig]) -> float:
    """Wall seconds to evaluate every config (all submitted at once)."""
    start = time.perf_counter()
    for i, c in enumerate(configs):
        evaluator.submit(f"t{i}", c)
    done = []
    while len(done) < len(configs):
        done.extend(evaluator.collect(timeout=600))
    failed = [r for r in done if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"refusing to report: a trial failed: {failed[0]['error']}")
    return time.perf_counter() - start


def bench_dispatch(job: TrialJob, trials: int) -> None:
    from tnas.workers.pool import RayPool

    configs = [config(16, 32, 1)] * trials  # a near-empty trial, so the overhead stands out
    inline = InlineEvaluator(job)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a pool actor, so both sides do the same work
    run_all(inline, configs[:1])
    direct = run_all(inline, configs) / trials
    torch.set_num_threads(threads)
    with RayPool(job, workers=1) as pool:
        run_all(pool, configs[:1])  # actor start-up and task data load, once
        pooled = run_all(pool, configs) / trials
    overhead_ms = (pooled - direct) * 1e3
    print(
        f"[dispatch] direct call {direct * 1e3:8.1f} ms/trial; through the pool "
        f"{pooled * 1e3:8.1f} ms/trial; overhead {overhead_ms:+.1f} ms "
        f"= {overhead_ms / 10_000:+.3%} of a 10 s trial (goal <= 2%)"
    )


def bench_scaling(job: TrialJob, trials: int) -> None:
    from tnas.workers.pool import RayPool

    configs = [config(128, 512, 2)] * trials
    rates = {}
    for workers in (1, 2):
        with RayPool(job, workers=workers) as pool:
            run_all(pool, configs[:workers])  # warm every actor
            rates[workers] = trials / run_all(pool, configs)
    print(
        f"[scaling] 1 worker {rates[1]:.3f} trials/s; 2 workers {rates[2]:.3f} trials/s; "
        f"speed-up {rates[2] / rates[1]:.2f}x (goal >= 1.8x)"
    )


def naive_ms(model_config: ArchConfig, batch: int, seq_len: int) -> float:
    model = build_model(model_config).eval()
    tokens = torch.zeros(batch, seq_len, dtype=torch.long)
    with torch.inference_mode():
        start = time.perf_counter()
        model(tokens)
    return (time.perf_counter() - start) * 1e3


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values)


def bench_repeatability(repeats: int) -> None:
    c = config(256, 1024, 4)
    profiled = [
        profile(c, batch=1, seq_len=128, repeats=30, threads=1)["latency_ms"]
        for _ in range(repeats)
    ]
    naive = [naive_ms(c, 1, 128) for _ in range(repeats)]
    print(
        f"[repeatability] {repeats} profiles: median {statistics.median(profiled):.3f} ms, "
        f"CV {cv(profiled):.2%} (goal <= 3%); naive single timing CV {cv(naive):.2%}"
    )


def bench_int8(threads: int) -> None:
    for ffn_dim in (1024, 2048, 4096):
        fp32 = profile(
            config(512, ffn_dim, 4, 32), batch=32, seq_len=128, repeats=5, threads=threads
        )
        int8 = profile(
            config(512, ffn_dim, 4, 8), batch=32, seq_len=128, repeats=5, threads=threads
        )
        print(
            f"[int8] d_model 512, ffn {ffn_dim}, 4 layers, batch 32 x 128, {threads} thr: "
            f"fp32 {fp32['latency_ms']:8.1f} ms, int8 {int8['latency_ms']:8.1f} ms, "
            f"speed-up {fp32['latency_ms'] / int8['latency_ms']:.2f}x (goal >= 3x); bytes "
            f"{fp32['model_bytes'] / 1e6:.1f} MB -> {int8['model_bytes'] / 1e6:.1f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default="dispatch,scaling,repeatability,int8",
        help="comma-separated figures to measure",
    )
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    figures = set(args.only.split(","))
    print(f"torch {torch.__version__}, {os.cpu_count()} logical cores")
    if figures & {"dispatch", "scaling"}:
        from tnas.workers.pool import connect

        connect(None, num_cpus=os.cpu_count(), _temp_dir=tempfile.mkdtemp(prefix="tnas-ray-"))
    if "dispatch" in figures:
        quick = TrialJob(task="digits", budget=Budget(steps=1, batch_size=8), profile=None)
        bench_dispatch(quick, 4 * args.trials)
    if "scaling" in figures:
        heavy = TrialJob(task="digits", budget=Budget(steps=60, batch_size=64), profile=None)
        bench_scaling(heavy, args.trials)
    if "repeatability" in figures:
        bench_repeatability(10)
    if "int8" in figures:
        bench_int8(threads=1)


if __name__ == "__main__":
    main()
