"""SimQ-NAS: a joint search of architecture and per-layer bits, against all-int8 and all-fp32.

    python bench/simq.py [--trials 30] [--steps 150] [--sampler nsga2] [--workers 0]

1. Search the `simq` preset (width, depth, heads, FFN size and bits {32, 16, 8} per layer) on
   `digits,tokens=patch` (as `make demo` does) for accuracy (max) and CPU latency (min), with
   the real driver, sampler and storage. Each trial trains in float and reports the accuracy
   of the model quantized to its bits (post-training), and the latency of the quantized model.
2. Take the architectures on the front and evaluate each for real three ways: with its
   searched mixed-bits policy, all layers int8, all layers fp32. Same architecture, same
   training seed, so the float model is the same; only the bits change. The three run
   interleaved in one phase, so machine load affects them alike (the mixed policy is measured
   again rather than taken from the search, whose front values are the luckiest of many).
3. Print one row per architecture, and the hypervolume of each of the three sets with one
   common reference point. The all-int8 and all-fp32 sets are the baselines.

Trials run in this process on one thread by default (`--workers 0`), so latency is not
disturbed by a second trial training beside it; `--workers N` uses a Ray pool of N actors.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from tnas.launch import RunError, launch
from tnas.search.db import Database, StorageError
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.search.settings import Objective
from tnas.space import ArchConfig
from tnas.workers.backend import InlineEvaluator, ProfileSettings, TrialJob
from tnas.workers.profile import device_fingerprint
from tnas.workers.train import Budget

OBJECTIVES = [Objective("accuracy", "max"), Objective("latency_ms", "min")]
DIRECTIONS = [o.direction for o in OBJECTIVES]
POLICIES = ("mixed", "int8", "fp32")


def with_bits(config: ArchConfig, bits: int) -> ArchConfig:
    """The same architecture with every layer at `bits`."""
    return config.replace(
        layers=tuple(dataclasses.replace(layer, bits=bits) for layer in config.layers)
    )


def describe(config: ArchConfig) -> str:
    heads = "/".join(str(layer.n_heads) for layer in config.layers)
    ffn = "/".join(str(layer.ffn_dim) for layer in config.layers)
    return f"d{config.d_model} L{config.n_layers} h{heads} f{ffn}"


def policy(config: ArchConfig) -> str:
    return "/".join(str(layer.bits) for layer in config.layers)


def make_evaluator(job: TrialJob, workers: int):
    if workers == 0:
        return InlineEvaluator(job)
    from tnas.workers.pool import RayPool, connect

    connect(None, num_cpus=os.cpu_count(), _temp_dir=tempfile.mkdtemp(prefix="tnas-ray-"))
    return RayPool(job, workers=workers)


def search(args, folder: Path) -> tuple[list[ArchConfig], dict]:
    """Run the joint search through `tnas.launch`; the configs on its front and a summary."""
    storage = args.storage or f"sqlite:///{folder / 'simq.db'}"
    name = f"simq-{args.sampler}-s{args.seed}"
    start = time.perf_counter()
    try:
        result = launch(
            space="simq",
            task=args.task,
            objectives=[o.text for o in OBJECTIVES],
            trials=args.trials,
            workers=args.workers,
            sampler=args.sampler,
            seed=args.seed,
            population_size=args.population,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            profile_repeats=args.repeats,
            study=name,
            storage=storage,
        )
    except (RunError, StorageError) as err:
        raise SystemExit(str(err)) from None
    seconds = time.perf_counter() - start
    db = Database(storage)
    study = optuna.load_study(study_name=name, storage=db.optuna_storage())
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.values and "duplicate_of" not in t.user_attrs
    ]
    db.close()
    points = to_minimization(np.array([t.values for t in done]), DIRECTIONS)
    front = [done[i] for i in pareto_front(points)]
    front.sort(key=lambda t: t.values[1])  # fastest first
    summary = {
        "evaluated": result.progress.finished,
        "failed": result.progress.failed,
        "seconds": seconds,
        "front": len(front),
        "hv": hypervolume(points[pareto_front(points)], reference_point(points)),
        "fp32_share": sum(all(b == 32 for b in trial_bits(t)) for t in done) / len(done),
    }
    return [ArchConfig.from_dict(t.user_attrs["config"]) for t in front], summary


def trial_bits(trial) -> list[int]:
    return [layer["bits"] for layer in trial.user_attrs["config"]["layers"]]


def evaluate_variants(evaluator, archs: list[ArchConfig]) -> dict[tuple[int, str], dict]:
    """Metrics of each architecture under each policy; a config shared by two policies (a
    searched policy that is already uniform) is evaluated once."""
    keys: dict[str, ArchConfig] = {}
    owners: dict[tuple[int, str], str] = {}
    for i, arch in enumerate(archs):
        variants = {"mixed": arch, "int8": with_bits(arch, 8), "fp32": with_bits(arch, 32)}
        for name, config in variants.items():
            keys.setdefault(config.hash, config)
            owners[i, name] = config.hash
    for key, config in keys.items():  # interleaved: arch 0's three, then arch 1's, ...
        evaluator.submit(key, config)
    reports: dict[str, dict] = {}
    while len(reports) < len(keys):
        for report in evaluator.collect(timeout=600):
            reports[report["key"]] = report
    return {slot: reports[key] for slot, key in owners.items()}


def value(report: dict, name: str) -> float:
    return report["metrics"].get(name, math.nan) if report["status"] == "ok" else math.nan


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def print_table(archs: list[ArchConfig], results: dict[tuple[int, str], dict]) -> None:
    width = max(len(describe(a)) for a in archs)
    bits_width = max(len(policy(a)) for a in archs)
    head = " ".join(f"{name + ' acc %':>11s} {name + ' ms':>8s}" for name in POLICIES)
    print(f"{'#':>2s} {'arch':{width}s} {'mixed bits':{bits_width}s} {head}")
    for i, arch in enumerate(archs):
        cells = []
        for name in POLICIES:
            report = results[i, name]
            if report["status"] != "ok":
                cells.append(f"{'failed: ' + report['reason']:>20s}")
                continue
            accuracy, latency = value(report, "accuracy"), value(report, "latency_ms")
            cells.append(f"{100 * accuracy:11.2f} {latency:8.3f}")
        print(f"{i:2d} {describe(arch):{width}s} {policy(arch):{bits_width}s} {' '.join(cells)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits,tokens=patch")
    parser.add_argument("--trials", type=int, default=30, help="evaluated search trials")
    parser.add_argument("--steps", type=int, default=150, help="training steps per trial")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sampler", default="nsga2", help="a name in tnas.search.samplers")
    parser.add_argument("--population", type=int, default=10, help="NSGA population size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler and training")
    parser.add_argument("--workers", type=int, default=0, help="Ray actors; 0: this process")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per profile")
    parser.add_argument("--storage", default=None, help="database URL (default: a temp file)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    job = TrialJob(
        task=args.task,
        budget=Budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed),
        profile=ProfileSettings(batch=1, repeats=args.repeats, threads=args.threads),
    )
    where = "this process" if args.workers == 0 else f"{args.workers} Ray workers"
    machine = device_fingerprint("cpu")
    print(
        f"simq on {args.task}: {args.trials} trials x {args.steps} steps, sampler "
        f"{args.sampler} (seed {args.seed}), {where}, {args.threads} thread(s) per trial; "
        f"torch {torch.__version__}, {os.cpu_count()} logical cores"
    )
    print(
        f"cpu {machine['cpu']}, flags {' '.join(machine['cpu_flags'])}, "
        f"int8 engine {machine['quantized_engine']}"
    )
    folder = Path(tempfile.mkdtemp(prefix="tnas-simq-"))
    archs, summary = search(args, folder)
    print(
        f"search: {summary['evaluated']} evaluated ({summary['failed']} failed) in "
        f"{summary['seconds']:.0f} s; front of {summary['front']}, HV {summary['hv']:.4f} "
        f"(own reference); {summary['fp32_share']:.0%} of trials all-fp32"
    )
    evaluator = make_evaluator(job, args.workers)
    try:
        start = time.perf_counter()
        results = evaluate_variants(evaluator, archs)
        seconds = time.perf_counter() - start
    finally:
        evaluator.close()
    print(f"front architectures, each also as all-int8 and all-fp32 ({seconds:.0f} s):")
    print_table(archs, results)
    floats = [
        value(results[i, name], "accuracy_fp32") for i in range(len(archs)) for name in POLICIES
    ]
    floats = np.array(floats).reshape(len(archs), len(POLICIES))
    spread = float(np.nanmax(np.ptp(floats, axis=1))) if np.isfinite(floats).any() else math.nan
    print(f"float accuracy of each arch across its three runs: max spread {100 * spread:.2f} pt")
    cvs = [value(report, "latency_cv") for report in results.values()]
    print(
        f"latency CV over repeats within a profile: median {np.nanmedian(cvs):.1%}, "
        f"max {np.nanmax(cvs):.1%}; load average at the end {os.getloadavg()[0]:.1f}"
    )
    sets = {
        name: to_minimization(
            np.array(
                [[value(results[i, name], o.name) for o in OBJECTIVES] for i in range(len(archs))]
            ),
            DIRECTIONS,
        )
        for name in POLICIES
    }
    reference = reference_point(np.concatenate(list(sets.values())))
    volumes = {name: hypervolume(points, reference) for name, points in sets.items()}
    print(
        f"hypervolume (accuracy max, latency_ms min; common reference accuracy "
        f"{-reference[0]:.4f}, {reference[1]:.3f} ms): "
        + ", ".join(f"{name} {volume:.4f}" for name, volume in volumes.items())
        + f"; mixed / all-int8 {ratio(volumes['mixed'], volumes['int8'])}, "
        f"mixed / all-fp32 {ratio(volumes['mixed'], volumes['fp32'])}"
    )


if __name__ == "__main__":
    main()
