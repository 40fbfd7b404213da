"""The per-block latency predictor on this CPU: calibrate, then predict unseen whole models.

    python bench/latency.py [--space simq] [--budget 200] [--test 40] [--threads 1]

1. `calibrate` measures a per-block table of the space on this CPU with at most `--budget`
   measurements (as `tnas predictors calibrate` does), and the predictor fits its residual on
   the whole models timed during calibration.
2. `--test` configs sampled with another seed (none seen in calibration) are timed whole with
   `profile`, and predicted. Printed: MAPE, the share within ±10 % and Kendall tau.
3. The baseline, in the same run: a linear model of latency on params, weight bytes (bits
   applied) and depth, fitted by
   least squares on the same whole-model measurements the residual saw.
4. Adaptation: the same CPU with `--adapt-threads` threads stands in for a new device. The
   predictor adapts from `--adapt` whole-model measurements there, and is tested on the same
   test configs measured there; the unadapted table is the baseline.

Run it on a quiet machine: the ±10 % share measures the predictor and the timer together.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from tnas.predictors.latency import LatencyPredictor
from tnas.predictors.selection import kendall_tau, mape
from tnas.space import ArchConfig, load_space
from tnas.workers.calibrate import calibrate
from tnas.workers.profile import profile


def measure(configs, batch, seq_len, threads, repeats) -> np.ndarray:
    return np.array(
        [
            profile(c, "cpu", batch=batch, seq_len=min(seq_len, c.max_seq_len), repeats=repeats,
                    threads=threads)["latency_ms"]
            for c in configs
        ]
    )  # fmt: skip


def scores(measured: np.ndarray, predicted: np.ndarray) -> str:
    within = float(np.mean(np.abs(predicted - measured) <= 0.1 * measured))
    return (
        f"MAPE {100 * mape(measured, predicted):5.2f} %  within ±10 % {100 * within:5.1f} %  "
        f"Kendall tau {kendall_tau(measured, predicted):.3f}"
    )


def derived(config: ArchConfig) -> dict:
    return config.derived()


def linear_baseline(train: list[ArchConfig], train_ms, test: list[ArchConfig]) -> np.ndarray:
    def features(configs):
        return np.array(
            [[1.0, d["params"] / 1e6, d["weight_mb"], d["n_layers"]] for d in map(derived, configs)]
        )

    coef, *_ = np.linalg.lstsq(features(train), np.asarray(train_ms), rcond=None)
    return features(test) @ coef


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="simq")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--adapt", type=int, default=5)
    parser.add_argument("--adapt-threads", type=int, default=2)
    args = parser.parse_args()
    space = load_space(args.space)
    print(
        f"space {args.space}; torch {torch.__version__}, {os.cpu_count()} logical cores, "
        f"batch {args.batch} x {args.seq_len} tokens, {args.threads} thread(s)"
    )
    start = time.perf_counter()
    table = calibrate(
        space, "cpu", budget=args.budget, batch=args.batch, seq_len=args.seq_len,
        threads=args.threads, repeats=args.repeats,
    )  # fmt: skip
    seen = [ArchConfig.from_json(text) for text, *_ in table.full_models]
    seen_ms = [ms for *_, ms in table.full_models]
    predictor = LatencyPredictor(table).fit_residual(
        seen, seen_ms, batch=args.batch, seq_len=args.seq_len
    )
    print(
        f"calibration: {table.measurements} measurements ({len(table.entries)} blocks, "
        f"{len(table.overhead)} overheads, {len(seen)} whole models) in "
        f"{time.perf_counter() - start:.0f} s"
    )
    rng = np.random.default_rng(12345)
    hashes = {c.hash for c in seen}
    test: list[ArchConfig] = []
    while len(test) < args.test:
        config = space.sample(rng)
        if config.hash not in hashes:
            hashes.add(config.hash)
            test.append(config)
    measured = measure(test, args.batch, args.seq_len, args.threads, args.repeats)
    predicted = np.array([predictor.predict(c, args.batch, args.seq_len) for c in test])
    print(f"{len(test)} unseen configs, {measured.min():.2f}-{measured.max():.2f} ms measured")
    print(f"  per-block table + residual   {scores(measured, predicted)}")
    baseline = linear_baseline(seen, seen_ms, test)
    print(f"  baseline: params/bytes fit   {scores(measured, baseline)}")

    threads = args.adapt_threads
    few = [space.sample(rng) for _ in range(args.adapt)]
    few_ms = measure(few, args.batch, args.seq_len, threads, args.repeats)
    adapted = predictor.adapt(list(zip(few, few_ms, strict=True)), args.batch, args.seq_len)
    there = measure(test, args.batch, args.seq_len, threads, args.repeats)
    print(f"new setting ({threads} threads), adapted from {args.adapt} whole-model measurements:")
    after = np.array([adapted.predict(c, args.batch, args.seq_len) for c in test])
    print(f"  adapted table                {scores(there, after)}")
    print(f"  baseline: unadapted table    {scores(there, predicted)}")


if __name__ == "__main__":
    main()
