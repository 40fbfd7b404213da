"""Wide attention's claim in miniature (Brown et al. 2022, "Wide Attention Is The Way Forward for
Transformers?"): at an equal total number of attention heads, one wide attention layer is about
as accurate as deeper, narrower stacks, with fewer parameters and a lower CPU latency.

    python bench/claims/wide.py [--steps 400] [--batch-size 64] [--lr 3e-3] [--seeds 0,1]
        [--workers 2] [--repeats 20] [--rounds 3] [--d-model 128] [--ffn 256] [--out PNG]

The sweep is the feasible set of the `wide` preset (`tnas.space.load_space("wide")`): L layers
of 16 / L softmax-attention heads for L in 1, 2, 4, 8, 16 (the constraint total_heads == 16),
GELU FFN, LayerNorm. Each point is taken from the space with `space.from_flat` and checked with
`space.contains`. The preset's width (d_model 256, FFN 512) costs too much CPU time for this
budget, so by default `--d-model 128 --ffn 256` shrink every point alike (head sizes then run
from 8 to 128 instead of 16 to 256); `--d-model 256 --ffn 512` runs the preset as it is.

Each point is trained with `tnas.workers.train.train` on two tasks, with the same steps, batch,
learning rate and seeds for every point: `digits` as 16 patch tokens per image (classification,
chance 10 %), and `mqar` (multi-query associative recall) with 4 pairs over a vocabulary of 16
in 12 tokens, small enough for a 2-layer stack to learn it in this budget: chance is
1 / num_values = 12.5 %, and a model that copies any value from its context without binding it
to its key gets 1 / num_pairs = 25 %.
Printed: parameters, validation accuracy mean ± std over the seeds, and CPU inference latency
(batch 1, each task's own sequence length, `--threads` threads) of each point as adapted to the
task, measured with `tnas.workers.profile.profile` in this process after all training is done,
interleaved over `--rounds` rounds and reduced to the median, so drift of a shared machine hits
every point alike. The plot shows accuracy and latency against the number of layers.

Verdict, fixed before running: the claim held if, on both tasks, the 1-layer model's mean
accuracy is at least the best deeper stack's minus a tolerance (the larger of 1 point and the
two models' seed std), and the 1-layer model has the lowest latency on both tasks.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
from common import pyplot, run_jobs, verdict

TASKS = ("digits", "mqar")
MQAR = "mqar,num_pairs=4,seq_len=12,vocab_size=16"  # 2 layers learn it in ~250 steps at lr 3e-3


def sweep(d_model: int | None, ffn: int | None) -> dict[int, object]:
    """`{n_layers: ArchConfig}`: the `wide` space's feasible points, one per depth, then
    resized to `d_model` and `ffn` where given."""
    from tnas.space import load_space

    space = load_space("wide")
    configs = {}
    for n_layers in space.values("n_layers"):
        points = [
            space.from_flat({"n_layers": n_layers, "n_heads": n_heads})
            for n_heads in space.values("n_heads")
        ]
        feasible = [config for config in points if space.feasible(config)]
        assert len(feasible) == 1 and space.contains(feasible[0]), (n_layers, feasible)
        config = feasible[0]
        layers = tuple(
            dataclasses.replace(layer, ffn_dim=ffn or layer.ffn_dim) for layer in config.layers
        )
        configs[n_layers] = config.replace(d_model=d_model or config.d_model, layers=layers)
    return configs


def job(args, config: dict, task_spec: str, seed: int) -> dict:
    """Train one point on one task with one seed: its metrics and its config as adapted."""
    import torch

    from tnas.space import ArchConfig
    from tnas.workers.tasks import parse_task
    from tnas.workers.train import Budget, train

    torch.set_num_threads(args.threads)
    budget = Budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed)
    result = train(ArchConfig.from_dict(config), parse_task(task_spec), budget)
    return {"metrics": result.metrics, "config": result.config.to_dict()}


def measure_latency(configs: dict, args) -> dict:
    """`{key: (median latency_ms, median latency_iqr_ms, params)}` for each adapted config,
    profiled in `args.rounds` interleaved rounds in this process."""
    from tnas.workers.profile import profile

    samples: dict = {key: [] for key in configs}
    for _ in range(args.rounds):
        for key, config in configs.items():
            samples[key].append(
                profile(config, batch=1, repeats=args.repeats, threads=args.threads)
            )
    return {
        key: (
            statistics.median(run["latency_ms"] for run in runs),
            statistics.median(run["latency_iqr_ms"] for run in runs),
            runs[0]["params"],
        )
        for key, runs in samples.items()
    }


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", default="digits,tokens=patch", help="the digits task spec")
    parser.add_argument("--mqar", default=MQAR, help="the mqar task spec")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--d-model", type=int, default=128, help="0: the preset's 256")
    parser.add_argument("--ffn", type=int, default=256, help="0: the preset's 512")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--workers", type=int, default=2, help="processes running the jobs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per profile")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    parser.add_argument("--out", default="docs/results/wide.png", help="the plot to write")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    specs = {"digits": args.digits, "mqar": args.mqar}
    configs = sweep(args.d_model, args.ffn)
    depths = list(configs)
    first = configs[depths[0]]
    print(
        f"wide space: {', '.join(f'{n}x{c.layers[0].n_heads}' for n, c in configs.items())} "
        f"(layers x heads), d_model {first.d_model}, FFN {first.layers[0].ffn_dim}; "
        f"{args.steps} steps x batch {args.batch_size}, lr {args.lr}, seeds {seeds}; "
        f"tasks {args.digits} | {args.mqar}"
    )

    # the deepest (slowest) jobs first, so the last ones to finish are short
    jobs = [
        ((n, task, seed), (args, configs[n].to_dict(), specs[task], seed))
        for n in reversed(depths)
        for task in reversed(TASKS)
        for seed in seeds
    ]
    runs = run_jobs(job, jobs, args.workers)

    from tnas.space import ArchConfig
    from tnas.workers.tasks import parse_task

    adapted = {
        (n, task): ArchConfig.from_dict(runs[n, task, seeds[0]]["config"])
        for n in depths
        for task in TASKS
    }
    latency_start = time.perf_counter()
    latency = measure_latency(adapted, args)
    print(f"latency of {len(adapted)} models x {args.rounds} rounds in "
          f"{time.perf_counter() - latency_start:.0f} s")  # fmt: skip
    accuracy = {
        (n, task): np.array([runs[n, task, s]["metrics"]["accuracy"] for s in seeds])
        for n in depths
        for task in TASKS
    }
    mqar = parse_task(args.mqar)
    chance = {"digits": 0.1, "mqar": 1 / mqar.num_values}
    seq_len = {task: adapted[depths[0], task].max_seq_len for task in TASKS}
    print(
        f"chance: digits 10.0 %, mqar {100 * chance['mqar']:.1f} % (copying any value from "
        f"the context: {100 / mqar.num_pairs:.1f} %); latency at batch 1, seq "
        f"{seq_len['digits']} (digits) and {seq_len['mqar']} (mqar), {args.threads} thread(s)"
    )
    print(
        f"{'layers x heads':<15s} {'params digits':>13s} {'params mqar':>11s} "
        f"{'digits acc %':>13s} {'mqar acc %':>13s} {'digits ms':>9s} {'mqar ms':>9s}"
    )
    for n in depths:
        heads = configs[n].layers[0].n_heads
        cells = [f"{n}x{heads}".ljust(15)]
        params = [latency[n, task][2] / 1e6 for task in TASKS]
        cells += [f"{params[0]:12.2f}M", f"{params[1]:10.2f}M"]
        for task in TASKS:
            mean, std = 100 * accuracy[n, task].mean(), 100 * accuracy[n, task].std()
            cells.append(f"{mean:6.1f} ±{std:4.1f}")
        cells += [f"{latency[n, task][0]:9.2f}" for task in TASKS]
        print(" ".join(cells))

    reasons, held = [], True
    for task in TASKS:
        wide = accuracy[depths[0], task]
        best = max(depths[1:], key=lambda n: accuracy[n, task].mean())
        tolerance = max(0.01, wide.std(), accuracy[best, task].std())
        gap = accuracy[best, task].mean() - wide.mean()
        close = gap <= tolerance
        fastest = min(depths, key=lambda n: latency[n, task][0]) == depths[0]
        held = held and close and fastest
        reasons.append(
            f"{task}: 1 layer {100 * wide.mean():.1f} % vs best deeper ({best} layers) "
            f"{100 * accuracy[best, task].mean():.1f} % (gap {100 * gap:+.1f} pt, "
            f"{'within' if close else 'beyond'} the {100 * tolerance:.1f} pt tolerance), "
            f"1-layer latency {'lowest' if fastest else 'not lowest'}"
        )

    plt = pyplot()
    figure, (acc_axis, latency_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for task, color in zip(TASKS, ("C0", "C1"), strict=True):
        means = [100 * accuracy[n, task].mean() for n in depths]
        stds = [100 * accuracy[n, task].std() for n in depths]
        acc_axis.errorbar(depths, means, yerr=stds, marker="o", capsize=3, color=color, label=task)
        acc_axis.axhline(100 * chance[task], color=color, linestyle=":", linewidth=1)
        latency_axis.errorbar(
            depths,
            [latency[n, task][0] for n in depths],
            yerr=[latency[n, task][1] / 2 for n in depths],
            marker="o",
            capsize=3,
            color=color,
            label=f"{task} (seq {seq_len[task]})",
        )
    acc_axis.axhline(100 / mqar.num_pairs, color="C1", linestyle="--", linewidth=1)
    for axis in (acc_axis, latency_axis):
        axis.set_xscale("log", base=2)
        axis.set_xticks(depths, [f"{n}x{configs[n].layers[0].n_heads}" for n in depths])
        axis.set_xlabel("layers x heads per layer (16 heads in all)")
        axis.legend()
    acc_axis.set_ylabel(f"validation accuracy % (mean ± std, {len(seeds)} seeds)")
    acc_axis.set_title("accuracy (dotted: chance; dashed: mqar copy baseline)", fontsize=9)
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel(f"CPU latency ms (batch 1, {args.threads} thread)")
    latency_axis.set_title("inference latency (median of rounds, bar: IQR)", fontsize=9)
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    verdict(held, "; ".join(reasons))


if __name__ == "__main__":
    main()
