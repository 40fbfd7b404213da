"""The demo job: sample a model from a preset, summarise it, and train it for a few steps.

It trains byte-level language modelling on the `.py` files of the running Python's standard
library (local text, nothing downloaded) and reports validation bits per byte, on every tenth
64 KiB block held out, before and after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tnas.nn import build_model
from tnas.space import ArchConfig, DesignSpace
from tnas.workers.tasks.textlm import stdlib_bytes


def sample_small(space: DesignSpace, seed: int, max_params: float) -> ArchConfig:
    """A feasible config of the space with at most `max_params` parameters."""
    rng = np.random.default_rng(seed)
    for _ in range(10_000):
        config = space.sample(rng)
        if config.derived()["params"] <= max_params:
            return config
    raise ValueError(f"space {space.name!r} has no config with params <= {max_params:g}")


@dataclass
class DemoResult:
    steps: int
    val_bpb_before: float
    val_bpb_after: float
    tokens_per_s: float


def train_demo(
    config: ArchConfig,
    steps: int = 40,
    batch: int = 8,
    seq_len: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    log: Callable[[int, float], None] | None = None,
) -> DemoResult:
    """Train `config` as a byte-level LM for `steps` AdamW steps; return validation bpb."""
    if config.head != "lm" or config.vocab_size < 256:
        raise ValueError("the demo trains a byte-level LM: it needs head lm and vocab_size >= 256")
    torch.manual_seed(seed)
    seq_len = min(seq_len, config.max_seq_len)
    data = torch.from_numpy(stdlib_bytes().astype(np.int64))
    in_val = (torch.arange(len(data)) // 65536) % 10 == 9  # every tenth 64 KiB block
    train, val = data[~in_val], data[in_val]
    generator = torch.Generator().manual_seed(seed)

    def batch_of(source: torch.Tensor) -> torch.Tensor:
        starts = torch.randint(0, len(source) - seq_len - 1, (batch,), generator=generator)
        return torch.stack([source[s : s + seq_len + 1] for s in starts.tolist()])

    val_batches = [batch_of(val) for _ in range(4)]
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)

    def loss_of(window: torch.Tensor) -> torch.Tensor:
        logits = model(window[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())

    def val_bpb() -> float:
        model.eval()
        with torch.no_grad():
            loss = sum(loss_of(w).item() for w in val_batches) / len(val_batches)
        model.train()
        return loss / math.log(2)

    before = val_bpb()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / 10) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = loss_of(batch_of(train))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if log:
            log(step, loss.item())
    elapsed = time.perf_counter() - start
    return DemoResult(steps, before, val_bpb(), steps * batch * seq_len / elapsed)
