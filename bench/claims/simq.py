"""SimQ-NAS's claim in miniature: searching each layer's bit-width jointly with the architecture
finds models as accurate as an all-int8 baseline that are faster and smaller.

    python bench/claims/simq.py [--trials 40] [--steps 200] [--seeds 0,1] [--workers 2]

1. The baseline: the largest architecture of the `simq` space (d_model 256, 4 layers, 8 heads,
   FFN 1024), every layer int8 (post-training dynamic quantization, as tnas runs `bits: 8`
   on CPU).
2. The joint search, through the CLI as a user would run it: `tnas search launch --space simq`
   (width, depth, heads, FFN size and bits {32, 16, 8} per layer) on `digits,tokens=patch` for
   accuracy (max), CPU latency (min) and model bytes (min), NSGA-II, `--trials` trials of
   `--steps` steps on `--workers` Ray workers; then `tnas pareto --format json` for its front.
3. Every front member and the baseline are trained again with each of `--seeds` (in
   `--workers` processes, quantized to their bits for evaluation), and their latency is
   measured afterwards in this process alone, one thread, batch 1, all configs interleaved
   over `--rounds` rounds (median), so a noisy search-time latency cannot pick the winner.
4. "Equal accuracy": a front member whose mean accuracy over the seeds is at most `--tolerance`
   (0.5 points) below the baseline's. Printed: each front member against the baseline, and the
   fastest and the smallest equal-accuracy models with their latency and size ratios. For
   each, the same architecture with every layer int8 is measured too, which separates the
   gain of the searched bit policy from the gain of the searched architecture.

Verdict: held if an equal-accuracy model is both faster and smaller than the baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import pyplot, run_jobs, verdict

TASK = "digits,tokens=patch"
OBJECTIVES = ("accuracy:max", "latency_ms:min", "model_bytes:min")


def baseline_config():
    """The simq space's largest architecture, every layer int8."""
    from tnas.space import ArchConfig, LayerConfig, load_space

    layer = LayerConfig(mixer="attention", n_heads=8, ffn_dim=1024, activation="gelu", bits=8)
    config = ArchConfig(
        d_model=256, n_layers=4, vocab_size=256, max_seq_len=128, layers=(layer,) * 4
    )
    if not load_space("simq").contains(config):
        raise SystemExit("the baseline is not in the simq space: has the preset changed?")
    return config


def with_bits(config, bits: int):
    return config.replace(layers=tuple(dataclasses.replace(l, bits=bits) for l in config.layers))


def describe(config) -> str:
    heads = "/".join(str(layer.n_heads) for layer in config.layers)
    ffn = "/".join(str(layer.ffn_dim) for layer in config.layers)
    return f"d{config.d_model} h{heads} f{ffn}"


def tnas(*arguments: str) -> str:
    """Run the `tnas` CLI of this interpreter's environment; its stdout."""
    command = [str(Path(sys.executable).with_name("tnas")), *arguments]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def search(args, storage: str) -> list[dict]:
    """The joint search through the CLI; its stored front, one dict per trial."""
    objectives = [part for name in OBJECTIVES for part in ("--objective", name)]
    tnas(
        "search", "launch", "--space", "simq", "--task", TASK, *objectives,
        "--trials", str(args.trials), "--steps", str(args.steps), "--workers", str(args.workers),
        "--sampler", "nsga2", "--seed", "0", "--study", "claim-simq", "--storage", storage,
    )  # fmt: skip
    return json.loads(tnas("pareto", "claim-simq", "--storage", storage, "--format", "json"))


def all_trials(storage: str) -> np.ndarray:
    """(accuracy, latency_ms) of every finished search trial, for the plot."""
    import optuna

    from tnas.search.db import Database

    db = Database(storage)
    study = optuna.load_study(study_name="claim-simq", storage=db.optuna_storage())
    points = [t.values[:2] for t in study.get_trials(deepcopy=False) if t.values]
    db.close()
    return np.array(points)


def job(args, config_dict: dict, seed: int) -> dict:
    """Train one config with one seed; the validation accuracy of the trained model quantized to
    its own bits and, from the same float weights, to int8 in every layer."""
    import torch

    from tnas.space import ArchConfig
    from tnas.workers.tasks import parse_task
    from tnas.workers.train import Budget, evaluate_quantized, train

    torch.set_num_threads(args.threads)
    task = parse_task(TASK)
    budget = Budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed)
    result = train(ArchConfig.from_dict(config_dict), task, budget)
    int8 = dataclasses.replace(result, config=with_bits(result.config, 8))
    return {
        "accuracy": evaluate_quantized(result, task)["accuracy"],
        "accuracy_int8": evaluate_quantized(int8, task)["accuracy"],
    }


def measure(configs: dict, rounds: int, repeats: int) -> dict[str, dict]:
    """Latency (median over rounds) and model bytes of each config, interleaved, 1 thread."""
    from tnas.workers.profile import profile

    latencies: dict[str, list[float]] = {key: [] for key in configs}
    sizes: dict[str, float] = {}
    for _ in range(rounds):
        for key, config in configs.items():
            measured = profile(config, batch=1, repeats=repeats, threads=1)
            latencies[key].append(measured["latency_ms"])
            sizes[key] = measured["model_bytes"]
    return {
        key: {"latency_ms": float(np.median(latencies[key])), "bytes": sizes[key]}
        for key in configs
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="search trials")
    parser.add_argument("--steps", type=int, default=200, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0,1", help="training seeds of the re-evaluation")
    parser.add_argument("--tolerance", type=float, default=0.5, help="accuracy points")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers, then processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds per config")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per round")
    parser.add_argument("--storage", default=None, help="database URL (default: a temp file)")
    parser.add_argument("--out", default="docs/results/simq.png", help="the plot to write")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    start = time.perf_counter()
    from tnas.space import ArchConfig
    from tnas.workers.tasks import parse_task

    folder = Path(tempfile.mkdtemp(prefix="tnas-claim-simq-"))
    storage = args.storage or f"sqlite:///{folder / 'simq.db'}"
    print(
        f"simq on {TASK}: {args.trials} trials x {args.steps} steps (NSGA-II, {args.workers} "
        f"workers), objectives {', '.join(OBJECTIVES)}; re-evaluation seeds {seeds}"
    )
    front = search(args, storage)
    print(f"search: front of {len(front)} in {time.perf_counter() - start:.0f} s")

    baseline = baseline_config()
    configs = {"baseline": baseline}
    configs |= {f"front{i}": ArchConfig.from_dict(row["config"]) for i, row in enumerate(front)}
    jobs = [((k, s), (args, config.to_dict(), s)) for k, config in configs.items() for s in seeds]
    runs = run_jobs(job, jobs, args.workers)
    accuracy = {k: np.array([runs[k, s]["accuracy"] for s in seeds]) for k in configs}
    accuracy |= {
        f"{k}-int8": np.array([runs[k, s]["accuracy_int8"] for s in seeds]) for k in configs
    }
    task = parse_task(TASK)
    adapted = {k: task.adapt(config) for k, config in configs.items()}
    adapted |= {f"{k}-int8": with_bits(adapted[k], 8) for k in configs if k != "baseline"}
    measured = measure(adapted, args.rounds, args.repeats)
    measured["baseline-int8"] = measured["baseline"]  # the baseline is all-int8 already

    base_accuracy, base = 100 * accuracy["baseline"].mean(), measured["baseline"]
    equal = [
        key
        for key in adapted
        if key != "baseline" and 100 * accuracy[key].mean() >= base_accuracy - args.tolerance
    ]

    def cells(key: str) -> str:
        m = measured[key]
        return (
            f"{100 * accuracy[key].mean():6.2f} ±{100 * accuracy[key].std():4.2f}"
            f"{'*' if key in equal else ' '} {m['latency_ms']:6.3f} "
            f"{m['latency_ms'] / base['latency_ms']:5.2f}x {m['bytes'] / 2**10:6.0f} "
            f"{m['bytes'] / base['bytes']:5.2f}x"
        )

    columns = f"{'accuracy %':>14s} {'ms':>6s} {'x base':>6s} {'KiB':>6s} {'x base':>6s}"
    print(f"{'':<9s} {'architecture':<36s} {'bits':<12s} {columns}   all-int8: {columns}")
    for key, config in configs.items():
        bits = "/".join(str(layer.bits) for layer in config.layers)
        print(
            f"{key:<9s} {describe(config):<36s} {bits:<12s} {cells(key)}   {cells(key + '-int8')}"
        )
    print(
        f"* equal accuracy: at most {args.tolerance} points below the baseline's "
        f"{base_accuracy:.2f} %; ratios are against the all-int8 baseline (latency: batch 1, "
        f"1 thread, median of {args.rounds} interleaved rounds)"
    )
    searched = [key for key in equal if not key.endswith("-int8")]
    dominated = sum(
        measured[k + "-int8"]["latency_ms"] <= measured[k]["latency_ms"]
        and measured[k + "-int8"]["bytes"] <= measured[k]["bytes"]
        and accuracy[k + "-int8"].mean() >= accuracy[k].mean() - args.tolerance / 100
        for k in configs
        if k != "baseline"
    )
    print(
        f"searched bits against all-int8 on the same architecture: the all-int8 twin is as "
        f"accurate (within {args.tolerance} pt), as fast and as small in {dominated} of "
        f"{len(front)} front architectures"
    )
    if searched:
        fastest = min(searched, key=lambda k: measured[k]["latency_ms"])
        smallest = min(searched, key=lambda k: measured[k]["bytes"])
        held = any(
            measured[k]["latency_ms"] < base["latency_ms"] and measured[k]["bytes"] < base["bytes"]
            for k in searched
        )
        reason = (
            f"{len(searched)} of {len(front)} searched models match the all-int8 baseline's "
            f"accuracy; the fastest ({fastest}) runs at "
            f"{measured[fastest]['latency_ms'] / base['latency_ms']:.2f}x its latency, the "
            f"smallest ({smallest}) is {measured[smallest]['bytes'] / base['bytes']:.2f}x its size"
            f"; all-int8 beat the searched bits on {dominated} of {len(front)} architectures"
        )
    else:
        held, reason = False, "no searched model reached the all-int8 baseline's accuracy"
    print(f"total {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f}")
    verdict(held, reason)

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    points = all_trials(storage)
    axes[0].scatter(points[:, 1], 100 * points[:, 0], s=8, c="lightgray", label="search trials")
    panels = ((axes[0], "latency_ms", 1, "latency (ms, batch 1, 1 thread)"),
              (axes[1], "bytes", 2**-10, "model size (KiB)"))  # fmt: skip
    styles = {
        "searched bits": ([k for k in configs if k != "baseline"], "o", "tab:blue"),
        "same architecture, all-int8": ([k + "-int8" for k in configs if k != "baseline"], "s",
                                        "tab:orange"),
        "all-int8 baseline": (["baseline"], "*", "red"),
    }  # fmt: skip
    for axis, metric, scale, label in panels:
        for name, (keys, marker, colour) in styles.items():
            axis.errorbar(
                [measured[k][metric] * scale for k in keys],
                [100 * accuracy[k].mean() for k in keys],
                yerr=[100 * accuracy[k].std() for k in keys],
                fmt=marker, color=colour, markersize=12 if marker == "*" else 5, label=name,
            )  # fmt: skip
        axis.axhline(base_accuracy - args.tolerance, color="red", linestyle=":", linewidth=1)
        axis.set_xlabel(label)
        axis.set_ylabel(f"accuracy % (mean of {len(seeds)} seeds)")
    axes[0].legend(loc="best", fontsize=8)
    figure.suptitle(f"SimQ-style joint search of architecture and bits on {TASK}")
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
