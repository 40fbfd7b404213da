"""Primer's claim in miniature: squared ReLU and multi-dconv-head attention (MDHA) each lower
the validation loss at an equal step budget, against GELU + softmax attention.

    python bench/claims/primer.py [--steps 800] [--seeds 0,1,2] [--workers 2] [--out PNG]

Four variants of one small byte-level LM on `textlm` (d_model 128, 4 layers, 4 heads, FFN 512):
the baseline (softmax attention, GELU), squared ReLU, MDHA (3-tap dconv), and both (Primer).
Each is trained with `tnas.workers.train.train` for the same steps, batch, learning rate and
seed, over `--seeds`. Printed: the validation loss (nats per byte) and bpb, mean ± std over the
seeds, the change against the baseline, and the compute saved: the share of the baseline's
steps a variant needs for its (smoothed) training loss to reach the baseline's final one. The
plot shows the training-loss curves, averaged over the seeds. The verdict line says whether
each change lowered the loss in every seed.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import pyplot, run_jobs, verdict

VARIANTS = {
    "baseline": ("attention", "gelu"),
    "squared_relu": ("attention", "squared_relu"),
    "mdha": ("mdha", "gelu"),
    "primer": ("mdha", "squared_relu"),
}
SMOOTH = 50  # steps in the moving average of the training loss


def config_of(args, variant: str):
    from tnas.space import ArchConfig, LayerConfig

    mixer, activation = VARIANTS[variant]
    layer = LayerConfig(
        mixer=mixer, n_heads=args.heads, ffn_dim=args.ffn, activation=activation, dconv_kernel=3
    )
    return ArchConfig(
        d_model=args.d_model, n_layers=args.layers, vocab_size=256, max_seq_len=args.seq_len,
        layers=(layer,) * args.layers,
    )  # fmt: skip


def job(args, variant: str, seed: int) -> dict:
    """Train one variant with one seed: its validation metrics and training-loss curve."""
    import torch

    from tnas.workers.tasks import parse_task
    from tnas.workers.train import Budget, train

    torch.set_num_threads(args.threads)
    budget = Budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed)
    result = train(config_of(args, variant), parse_task(args.task), budget)
    return {"metrics": result.metrics, "curve": [loss for _, loss in result.curve]}


def window(curve: np.ndarray) -> int:
    """The moving average's length: SMOOTH steps, or the whole curve if shorter."""
    return min(SMOOTH, len(curve))


def smooth(curve: np.ndarray) -> np.ndarray:
    kernel = np.ones(window(curve)) / window(curve)
    return np.convolve(curve, kernel, mode="valid")  # (steps - window + 1,)


def steps_to_reach(curve: np.ndarray, target: float) -> int | None:
    """The first step (1-based, at the end of its window) whose smoothed loss is <= target."""
    below = np.nonzero(smooth(curve) <= target)[0]
    return int(below[0]) + window(curve) if len(below) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="textlm")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2, help="processes running the jobs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", default="docs/results/primer.png", help="the plot to write")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    print(
        f"{args.task}: d_model {args.d_model}, {args.layers} layers, {args.heads} heads, FFN "
        f"{args.ffn}, {args.steps} steps x batch {args.batch_size}, seq {args.seq_len}, lr "
        f"{args.lr}, seeds {seeds}"
    )
    jobs = [((v, s), (args, v, s)) for v in VARIANTS for s in seeds]
    runs = run_jobs(job, jobs, args.workers)

    loss = {v: np.array([runs[v, s]["metrics"]["loss"] for s in seeds]) for v in VARIANTS}
    bpb = {v: np.array([runs[v, s]["metrics"]["bpb"] for s in seeds]) for v in VARIANTS}
    curves = {v: np.mean([runs[v, s]["curve"] for s in seeds], axis=0) for v in VARIANTS}
    target = smooth(curves["baseline"])[-1]
    print(
        f"{'variant':<14s} {'val loss':>16s} {'val bpb':>8s} {'vs baseline':>12s} "
        f"{'steps to baseline loss':>23s}"
    )
    verdicts = []
    for variant in VARIANTS:
        change = loss[variant].mean() / loss["baseline"].mean() - 1
        reached = steps_to_reach(curves[variant], target)
        saved = "never" if reached is None else f"{reached} ({100 * reached / args.steps:.0f} %)"
        print(
            f"{variant:<14s} {loss[variant].mean():9.4f} ±{loss[variant].std():.4f} "
            f"{bpb[variant].mean():8.4f} {100 * change:+11.2f}% {saved:>23s}"
        )
        if variant != "baseline":
            wins = int((loss[variant] < loss["baseline"]).sum())
            verdicts.append(f"{variant} lower in {wins} of {len(seeds)} seeds")
    held = all(v.split(" lower in ")[1].startswith(f"{len(seeds)} ") for v in verdicts[:2])
    verdict(held, "; ".join(verdicts))

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for variant, curve in curves.items():
        axis.plot(np.arange(window(curve), len(curve) + 1), smooth(curve), label=variant)
    axis.set_xlabel("step")
    axis.set_ylabel(f"training loss (nats/byte, {SMOOTH}-step mean, {len(seeds)} seeds)")
    axis.set_title(f"Primer on {args.task}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
