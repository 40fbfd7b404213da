"""MatFormer on textlm, CPU: extracted submodels against independently trained twins.

    python bench/matformer.py [--steps 1000] [--seeds 0,1] [--workers 2] [--d-model 128]

1. One supernet per seed (every layer's FFN at F/8, F/4, F/2, F) is trained jointly with the
   "all" strategy: each step sums the loss of the 4 nested granularities, so each sees
   `--steps` steps.
2. The baseline, in the same run: per seed, 4 dense models of the same shapes, each trained on
   its own with the same steps, batch, learning rate and seed (`tnas.workers.train.train`).
3. Each granularity is cut out of the supernet (`tnas.elastic.extract`) and its validation
   bits per byte, averaged over the seeds, is printed next to its twins' (goal: within 2 %).
   A single short run is noisy (twins of one seed can swap order), hence the seeds.
4. Mix'n'Match: submodels mixing two neighbouring granularities (half the layers at each)
   are cut out too; their bpb should fall between their neighbours' on the bpb-vs-params curve.

The runs are independent jobs spread over `--workers` processes of `--threads` torch threads.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

from tnas.elastic import Granularities, extract
from tnas.space import DesignSpace
from tnas.workers.supernet import build_supernet, train_supernet
from tnas.workers.tasks import parse_task
from tnas.workers.train import Budget, train


def space_of(args) -> DesignSpace:
    return DesignSpace.from_dict(
        {
            "name": "matformer-bench",
            "description": "4 nested FFN granularities per layer, fixed width and depth",
            "global": {
                "d_model": args.d_model,
                "n_layers": args.layers,
                "vocab_size": 256,
                "max_seq_len": args.seq_len,
                "norm": "layernorm",
                "head": "lm",
            },
            "shared": {"mixer": "attention", "n_heads": args.heads, "activation": "gelu"},
            "per_layer": {"ffn_dim": {"choices": widths_of(args)}},
        }
    )


def widths_of(args) -> list[int]:
    return [args.ffn // 8, args.ffn // 4, args.ffn // 2, args.ffn]


def mixes_of(args) -> list[list[int]]:
    """Per-layer FFN widths between each pair of neighbouring granularities, both orders."""
    half, widths = args.layers // 2, widths_of(args)
    mixes = []
    for low, high in zip(widths, widths[1:], strict=False):
        mixes.append([high] * half + [low] * (args.layers - half))
        mixes.append([low] * half + [high] * (args.layers - half))
    return mixes


def bpb(task, model) -> float:
    return float(task.evaluate(model, "cpu")["bpb"])


def setup(args, seed: int):
    torch.set_num_threads(args.threads)
    task = parse_task(args.task)
    budget = Budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed)
    return task, space_of(args), budget


def supernet_job(args, seed: int) -> dict:
    """Train one supernet; the bpb of its nested granularities and Mix'n'Match submodels."""
    task, space, budget = setup(args, seed)
    start = time.perf_counter()
    supernet = build_supernet(space, task, seed=seed)
    supernet = train_supernet(supernet, task, budget, strategy="all", space=space).supernet
    nested = Granularities.of(supernet, space).nested(supernet)
    mixes = [supernet.submodel(ffn_dim=widths) for widths in mixes_of(args)]
    return {
        "nested": [bpb(task, extract(supernet, sub)) for sub in nested],
        "mixes": [bpb(task, extract(supernet, sub)) for sub in mixes],
        "params": [sub.config.derived()["params"] for sub in nested + mixes],
        "seconds": time.perf_counter() - start,
    }


def twin_job(args, seed: int, index: int) -> dict:
    """Train granularity `index` as a dense model of its own; its bpb."""
    task, space, budget = setup(args, seed)
    start = time.perf_counter()
    supernet = build_supernet(space, task, seed=seed)  # only to name the nested configs
    sub = Granularities.of(supernet, space).nested(supernet)[index]
    model = train(sub.config, task, budget).model
    return {"bpb": bpb(task, model), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="textlm")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--workers", type=int, default=2, help="processes running the jobs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", default=None, help="also plot bpb against params to this PNG")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    widths = widths_of(args)
    print(
        f"{args.task}: d_model {args.d_model}, {args.layers} layers, FFN {args.ffn} "
        f"(granularities {'/'.join(map(str, widths))}), {args.steps} steps x batch "
        f"{args.batch_size}, seq {args.seq_len}, lr {args.lr}, seeds {seeds}; "
        f"{args.workers} processes x {args.threads} threads"
    )

    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        supers = {seed: pool.submit(supernet_job, args, seed) for seed in seeds}
        twins = {
            (seed, i): pool.submit(twin_job, args, seed, i)
            for seed in seeds
            for i in range(len(widths))
        }
        supers = {seed: job.result() for seed, job in supers.items()}
        twins = {key: job.result() for key, job in twins.items()}
    print(
        f"done in {time.perf_counter() - start:.0f} s: supernets "
        f"{np.mean([s['seconds'] for s in supers.values()]):.0f} s each, twins "
        f"{np.mean([t['seconds'] for t in twins.values()]):.0f} s each"
    )

    ours = np.array([supers[seed]["nested"] for seed in seeds])  # (seeds, 4)
    theirs = np.array([[twins[seed, i]["bpb"] for i in range(len(widths))] for seed in seeds])
    params = supers[seeds[0]]["params"]
    print(
        f"{'FFN':>6s} {'params':>9s} {'extracted bpb':>15s} {'twin bpb':>15s} {'gap':>7s}  "
        "per seed: extracted / twin"
    )
    gaps = ours.mean(0) / theirs.mean(0) - 1
    for i, width in enumerate(widths):
        per_seed = "  ".join(
            f"{a:.4f}/{b:.4f}" for a, b in zip(ours[:, i], theirs[:, i], strict=True)
        )
        print(
            f"{width:6d} {params[i]:9,d} {ours[:, i].mean():8.4f} ±{ours[:, i].std():.3f} "
            f"{theirs[:, i].mean():8.4f} ±{theirs[:, i].std():.3f} {100 * gaps[i]:+6.2f}%  "
            f"{per_seed}"
        )
    print(f"largest gap to the twins: {100 * np.abs(gaps).max():.2f} % (goal: within 2 %)")

    print("Mix'n'Match between neighbours (mean over seeds):")
    mixes = np.array([supers[seed]["mixes"] for seed in seeds]).mean(0)
    nested = ours.mean(0)
    between = 0
    for j, mix in enumerate(mixes_of(args)):
        low, high = nested[j // 2], nested[j // 2 + 1]
        inside = min(low, high) <= mixes[j] <= max(low, high)
        between += inside
        print(
            f"  FFN {'/'.join(map(str, mix)):>20s} params {params[len(widths) + j]:9,d} "
            f"bpb {mixes[j]:.4f} (neighbours {low:.4f} .. {high:.4f}) "
            f"{'between' if inside else 'OUTSIDE'}"
        )
    print(f"Mix'n'Match submodels between their neighbours: {between} of {len(mixes)}")
    held = np.abs(gaps).max() <= 0.02 and between == len(mixes)
    print(
        f"verdict: claim {'held' if held else 'did not hold'} at this scale: extracted "
        f"submodels are {100 * gaps.min():+.1f} to {100 * gaps.max():+.1f} % bpb from their "
        f"twins (goal: within 2 %); {between} of {len(mixes)} Mix'n'Match submodels lie "
        "between their neighbours"
    )
    if args.out:
        plot(args, params, ours, theirs, mixes)


def plot(args, params: list[int], ours: np.ndarray, theirs: np.ndarray, mixes: np.ndarray):
    """bpb against params: the extracted granularities, their twins, the Mix'n'Match mixes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(widths_of(args))
    figure, axis = plt.subplots(figsize=(6, 4))
    nested = np.array(params[:count]) / 1e3
    axis.errorbar(nested, ours.mean(0), yerr=ours.std(0), fmt="o-", label="extracted (nested)")
    axis.errorbar(nested, theirs.mean(0), yerr=theirs.std(0), fmt="s--", label="dense twin")
    axis.scatter(np.array(params[count:]) / 1e3, mixes, marker="x", c="k", label="Mix'n'Match")
    for x, y, width in zip(nested, ours.mean(0), widths_of(args), strict=True):
        axis.annotate(f"FFN {width}", (x, y), fontsize=7)
    axis.set_xlabel("parameters (thousands)")
    axis.set_ylabel(f"validation bpb (mean of {len(ours)} seed(s))")
    axis.set_title(f"MatFormer on {args.task}, {args.steps} steps")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
