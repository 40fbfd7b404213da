"""MatFormer on textlm, CPU: extracted submodels against independently trained twins.

    python bench/matformer.py [--steps 300] [--d-model 128] [--layers 4] [--ffn 512]

1. One supernet (every layer's FFN at F/8, F/4, F/2, F) is trained jointly with the "all"
   strategy: each step sums the loss of the 4 nested granularities, so each sees `--steps`
   steps.
2. The baseline, in the same run: 4 dense models of the same shapes, each trained on its own
   with the same steps, batch, learning rate and seed (`tnas.workers.train.train`).
3. Each granularity is cut out of the supernet (`tnas.elastic.extract`) and its validation
   bits per byte is printed next to its twin's (goal: within 2 %).
4. Mix'n'Match: submodels mixing two neighbouring granularities (half the layers at each)
   are cut out too; their bpb should fall between their neighbours' on the bpb-vs-params curve.
"""

from __future__ import annotations

import argparse
import time

import torch

from tnas.elastic import Granularities, build_supernet, extract, train_supernet
from tnas.space import DesignSpace
from tnas.workers.tasks import parse_task
from tnas.workers.train import Budget, train


def space_of(args) -> DesignSpace:
    widths = [args.ffn // 8, args.ffn // 4, args.ffn // 2, args.ffn]
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
            "per_layer": {"ffn_dim": {"choices": widths}},
        }
    )


def bpb(task, model) -> float:
    return float(task.evaluate(model, "cpu")["bpb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="textlm")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = parse_task(args.task)
    space = space_of(args)
    budget = Budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    print(
        f"{task.spec}: d_model {args.d_model}, {args.layers} layers, FFN {args.ffn} "
        f"(granularities F/8..F), {args.steps} steps x batch {args.batch_size}, "
        f"seq {args.seq_len}, {torch.get_num_threads()} threads"
    )

    start = time.perf_counter()
    supernet = build_supernet(space, task, seed=args.seed)
    result = train_supernet(supernet, task, budget, strategy="all", space=space)
    supernet = result.supernet
    print(f"supernet: {args.steps} joint steps in {time.perf_counter() - start:.0f} s")
    nested = Granularities.of(supernet, space).nested(supernet)

    rows = []
    start = time.perf_counter()
    for sub in nested:
        twin = train(sub.config, task, budget)
        rows.append((sub, bpb(task, extract(supernet, sub)), bpb(task, twin.model)))
    print(f"4 twins trained in {time.perf_counter() - start:.0f} s")
    print(f"{'FFN':>6s} {'params':>9s} {'extracted bpb':>14s} {'twin bpb':>9s} {'gap':>7s}")
    worst = 0.0
    for sub, ours, twin in rows:
        gap = ours / twin - 1
        worst = max(worst, abs(gap))
        params = sub.config.derived()["params"]
        ffn = sub.config.layers[0].ffn_dim
        print(f"{ffn:6d} {params:9,d} {ours:14.4f} {twin:9.4f} {100 * gap:+6.2f}%")
    print(f"largest gap to the twins: {100 * worst:.2f} % (goal: within 2 %)")

    print("Mix'n'Match between neighbours (first half of the layers at one width):")
    between = 0
    total = 0
    for (small, small_bpb, _), (big, big_bpb, _) in zip(rows, rows[1:], strict=False):
        low, high = small.config.layers[0].ffn_dim, big.config.layers[0].ffn_dim
        half = args.layers // 2
        for widths in ([high] * half + [low] * (args.layers - half),
                       [low] * half + [high] * (args.layers - half)):  # fmt: skip
            sub = supernet.submodel(ffn_dim=widths)
            value = bpb(task, extract(supernet, sub))
            params = sub.config.derived()["params"]
            inside = min(small_bpb, big_bpb) <= value <= max(small_bpb, big_bpb)
            between += inside
            total += 1
            print(
                f"  FFN {'/'.join(map(str, widths)):>20s} params {params:9,d} bpb {value:.4f} "
                f"(neighbours {small_bpb:.4f} .. {big_bpb:.4f}) "
                f"{'between' if inside else 'OUTSIDE'}"
            )
    print(f"Mix'n'Match submodels between their neighbours: {between} of {total}")


if __name__ == "__main__":
    main()
