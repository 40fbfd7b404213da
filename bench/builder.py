"""Training tokens/s of a tnas-built model against a hand-written GPT stack of the same shapes.

Both models: learned positions, pre-LayerNorm blocks of softmax attention (fused QKV, no biases,
`scaled_dot_product_attention`) and a GELU MLP, tied LM head. Each step is a forward, a
backward and an AdamW update. The two are timed in alternating rounds in the same process, so
drift on a noisy machine hits both; the figure is the ratio of their median tokens/s.

    python bench/builder.py [--d-model 256 --layers 4 --heads 4 --ffn 1024 --seq 256 --batch 8]

Before timing, it checks that the two models have the same parameter count and produce the
same logits from the same weights; it refuses to report otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from tnas.nn import build_model
from tnas.space import ArchConfig, LayerConfig


class PlainBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_dim: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, ffn_dim, bias=False)
        self.fc_out = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, Dh)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, seq: int, d_model: int, layers: int, heads: int, ffn: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList(PlainBlock(d_model, heads, ffn) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, tokens):
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def copy_weights(tnas_model: nn.Module, plain: PlainGPT) -> None:
    """Load the tnas model's weights into the plain one, by position (same order and shapes)."""
    with torch.no_grad():
        for source, target in zip(tnas_model.parameters(), plain.parameters(), strict=True):
            target.copy_(source)


def time_steps(model: nn.Module, tokens: torch.Tensor, steps: int) -> float:
    """Tokens/s over `steps` training steps (forward, backward, AdamW)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * tokens[:, :-1].numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    torch.manual_seed(0)
    layer = LayerConfig(mixer="attention", n_heads=args.heads, ffn_dim=args.ffn, activation="gelu")
    config = ArchConfig(
        d_model=args.d_model,
        n_layers=args.layers,
        vocab_size=256,
        max_seq_len=args.seq + 1,
        norm="layernorm",
        layers=(layer,) * args.layers,
    )
    ours = build_model(config)
    plain = PlainGPT(256, args.seq + 1, args.d_model, args.layers, args.heads, args.ffn)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    if n_ours != n_plain:
        raise SystemExit(f"refusing to report: params differ ({n_ours} vs {n_plain})")
    copy_weights(ours, plain)
    tokens = torch.randint(0, 256, (args.batch, args.seq + 1))
    with torch.no_grad():
        if not torch.allclose(ours(tokens[:, :-1]), plain(tokens[:, :-1]), atol=1e-5):
            raise SystemExit("refusing to report: the two models disagree on the same weights")

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; config {config.short_hash}"
    )
    print(
        f"shape: d_model {args.d_model}, {args.layers} layers, {args.heads} heads, "
        f"ffn {args.ffn}, batch {args.batch} x {args.seq} tokens, params {n_ours:,}"
    )
    time_steps(ours, tokens, 2)
    time_steps(plain, tokens, 2)
    rates: dict[str, list[float]] = {"tnas": [], "plain": []}
    for round_index in range(args.rounds):
        order = ("tnas", "plain") if round_index % 2 == 0 else ("plain", "tnas")
        for name in order:
            model = ours if name == "tnas" else plain
            rates[name].append(time_steps(model, tokens, args.steps))
    ours_rate = statistics.median(rates["tnas"])
    plain_rate = statistics.median(rates["plain"])
    print(f"{'model':8s} {'median tok/s':>14s} {'min':>10s} {'max':>10s}")
    for name, values in rates.items():
        print(
            f"{name:8s} {statistics.median(values):14,.0f} {min(values):10,.0f} "
            f"{max(values):10,.0f}"
        )
    print(f"tnas / plain = {ours_rate / plain_rate:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
