"""`textlm`: byte-level language modelling (vocabulary 256) on local text.

The corpus is a file, a folder (every file under it, recursively, in sorted order) or, by
default, the `.py` files of the running Python's standard library; at most `max_bytes` of it.
Every tenth block of 64 KiB is held out for validation (for a corpus under 640 KiB, every
tenth of ten equal blocks), and `evaluate` reads up to `eval_windows` non-overlapping
validation windows chosen by the seed.

>>> import torch
>>> task = TextLM(seq_len=32, max_bytes=100_000)
>>> inputs, targets = task.train_batch(2, torch.Generator().manual_seed(0))
>>> inputs.shape, bool((inputs[:, 1:] == targets[:, :-1]).all())
(torch.Size([2, 32]), True)
"""

from __future__ import annotations

import math
import sysconfig
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.workers.tasks.base import Metric, Task, eval_mode

BLOCK_BYTES = 65536


def read_files(paths, limit: int) -> np.ndarray:
    """The files' bytes, concatenated in the given order and cut at `limit`, as uint8."""
    chunks, total = [], 0
    for path in paths:
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= limit:
            break
    return np.frombuffer(b"".join(chunks)[:limit], dtype=np.uint8)


def stdlib_bytes(limit: int = 4_000_000) -> np.ndarray:
    """The standard library's `.py` files, in sorted order, as one byte array (uint8).

    >>> b"def " in stdlib_bytes(limit=20_000).tobytes()
    True
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = (p for p in sorted(root.rglob("*.py")) if "site-packages" not in p.parts)
    return read_files(paths, limit)


def validation_mask(length: int) -> np.ndarray:
    """Which of `length` bytes are validation: every tenth block of 64 KiB, or of length/10."""
    block = max(1, min(BLOCK_BYTES, length // 10))
    return (np.arange(length) // block) % 10 == 9


def windows(source: Tensor, starts: Tensor, length: int) -> Tensor:
    """`source[s : s + length]` for each start, as int64 rows (len(starts), length)."""
    return source[starts[:, None] + torch.arange(length)].long()


class TextLM(Task):
    """Predict the next byte of local text; reports loss in nats per byte and bits per byte."""

    name = "textlm"
    head = "lm"
    metrics = (Metric("bpb", "min"), Metric("loss", "min"))
    vocab_size = 256
    eval_windows = 64

    def __init__(
        self,
        path: str | None = None,
        seq_len: int = 128,
        max_bytes: int = 4_000_000,
        seed: int = 0,
    ):
        for name, value, minimum in (
            ("seq_len", seq_len, 1),
            ("max_bytes", max_bytes, 1),
            ("seed", seed, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"textlm: {name} must be an integer >= {minimum}, got {value!r}")
        if path is not None and not Path(path).exists():
            raise ValueError(f"textlm: corpus path {str(path)!r} does not exist")
        self.path = None if path is None else str(path)
        self.seq_len = seq_len
        self.max_bytes = max_bytes
        self.seed = seed

    def corpus(self) -> np.ndarray:
        """The whole corpus, at most `max_bytes`, as uint8 (read from disk on every call)."""
        if self.path is None:
            return stdlib_bytes(self.max_bytes)
        root = Path(self.path)
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        return read_files(paths, self.max_bytes)

    @cached_property
    def split(self) -> dict[str, Tensor]:
        """`{"train": bytes (N,), "val": bytes (M,)}` as uint8 tensors, read once, on CPU."""
        corpus = self.corpus()
        in_val = validation_mask(len(corpus))
        train, val = corpus[~in_val], corpus[in_val]
        where = self.path or "the standard library"
        if len(corpus) == 0:
            raise ValueError(f"textlm: the corpus in {where} is empty")
        if min(len(train), len(val)) <= self.seq_len:
            raise ValueError(
                f"textlm: the corpus in {where} has {len(corpus)} bytes, too few for windows of "
                f"seq_len {self.seq_len} in both splits (needs about {10 * (self.seq_len + 1)})"
            )
        return {"train": torch.from_numpy(train.copy()), "val": torch.from_numpy(val.copy())}

    @cached_property
    def val_windows(self) -> Tensor:
        """Up to `eval_windows` non-overlapping validation windows, chosen by the seed (W, T+1)."""
        val = self.split["val"]
        slots = len(val) // (self.seq_len + 1)
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(slots, min(slots, self.eval_windows), replace=False))
        return windows(val, torch.from_numpy(chosen) * (self.seq_len + 1), self.seq_len + 1)

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        train = self.split["train"]
        starts = torch.randint(0, len(train) - self.seq_len, (batch_size,), generator=generator)
        batch = windows(train, starts, self.seq_len + 1)  # (B, T+1)
        return batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy in nats per byte; logits (B, T, V), targets (B, T)."""
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def evaluate(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        total, count = 0.0, 0
        with eval_mode(model):
            for batch in self.val_windows.split(32):
                batch = batch.to(device)  # (B, T+1)
                logits = model(batch[:, :-1]).float()  # (B, T, V)
                targets = batch[:, 1:]
                total += F.cross_entropy(
                    logits.flatten(0, 1), targets.flatten(), reduction="sum"
                ).item()
                count += targets.numel()
        loss = total / count
        return {"bpb": loss / math.log(2), "loss": loss}
