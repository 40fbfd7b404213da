"""`digits`: classify scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

Each image becomes a token sequence: 64 pixel tokens (values 0..16, vocabulary 17), or 16
tokens of 2x2 patches whose pixels are quantised to 4 levels (vocabulary 4**4 = 256). The
validation set is a fixed, seeded, stratified `val_fraction` of every class.

>>> import torch
>>> task = Digits(tokens="patch")
>>> inputs, labels = task.train_batch(4, torch.Generator().manual_seed(0))
>>> inputs.shape, labels.shape, task.vocab_size, task.n_classes
(torch.Size([4, 16]), torch.Size([4]), 256, 10)
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.space.errors import unknown_name
from tnas.workers.tasks.base import Metric, Task, eval_mode

TOKENIZATIONS = {"pixel": (64, 17), "patch": (16, 256)}  # name -> (seq_len, vocab_size)


def pixel_tokens(images: np.ndarray) -> np.ndarray:
    """(N, 64) pixel values 0..16 -> (N, 64) tokens, one per pixel in row-major order."""
    return images.astype(np.int64)


def patch_tokens(images: np.ndarray) -> np.ndarray:
    """(N, 64) pixel values 0..16 -> (N, 16) tokens, one per 2x2 patch in row-major order.

    Each pixel is quantised to 4 levels (0-4, 5-8, 9-12, 13-16) and a patch's four levels,
    read row-major, are the base-4 digits of its token.
    """
    levels = images.astype(np.int64) * 4 // 17  # (N, 64) in 0..3
    patches = levels.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)
    return patches @ np.array([64, 16, 4, 1])  # (N, 16)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of validation rows: a seeded `val_fraction` of each class."""
    rng = np.random.default_rng(seed)
    in_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        in_val[rows[: round(val_fraction * len(rows))]] = True
    return in_val


class Digits(Task):
    """Classify 8x8 digit images, read as a sequence of pixel or patch tokens."""

    name = "digits"
    head = "classifier"
    metrics = (Metric("accuracy", "max"), Metric("loss", "min"))
    n_classes = 10

    def __init__(self, tokens: str = "pixel", val_fraction: float = 0.2, seed: int = 0):
        if tokens not in TOKENIZATIONS:
            raise ValueError(unknown_name("digits tokens", tokens, TOKENIZATIONS))
        if not isinstance(val_fraction, int | float) or not 0 < val_fraction < 1:
            raise ValueError(f"digits: val_fraction must be in (0, 1), got {val_fraction!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"digits: seed must be an integer, got {seed!r}")
        self.tokens = tokens
        self.val_fraction = val_fraction
        self.seed = seed
        self.seq_len, self.vocab_size = TOKENIZATIONS[tokens]

    @cached_property
    def split(self) -> dict[str, tuple[Tensor, Tensor]]:
        """`{"train": (inputs (N, T), labels (N,)), "val": ...}`, loaded once, on CPU."""
        from sklearn.datasets import load_digits  # imported on first use: it takes ~1 s

        digits = load_digits()
        encode = pixel_tokens if self.tokens == "pixel" else patch_tokens
        inputs = torch.from_numpy(encode(digits.data))  # (N, T)
        labels = torch.from_numpy(digits.target.astype(np.int64))  # (N,)
        in_val = torch.from_numpy(stratified_split(digits.target, self.val_fraction, self.seed))
        return {
            "train": (inputs[~in_val], labels[~in_val]),
            "val": (inputs[in_val], labels[in_val]),
        }

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        inputs, labels = self.split["train"]
        rows = torch.randint(0, len(labels), (batch_size,), generator=generator)
        return inputs[rows], labels[rows]  # (B, T), (B,)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets)  # logits (B, C), targets (B,)

    def evaluate(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        inputs, labels = self.split["val"]
        total_loss, correct = 0.0, 0
        with eval_mode(model):
            for start in range(0, len(labels), 512):
                batch = inputs[start : start + 512].to(device)  # (B, T)
                target = labels[start : start + 512].to(device)  # (B,)
                logits = model(batch).float()  # (B, C)
                total_loss += F.cross_entropy(logits, target, reduction="sum").item()
                correct += (logits.argmax(-1) == target).sum().item()
        return {"accuracy": correct / len(labels), "loss": total_loss / len(labels)}
