"""`mqar`: multi-query associative recall, as in Zoology (Arora et al. 2023).

A sequence lists `num_pairs` key-value pairs `k1 v1 k2 v2 ...`, then asks for the keys again
in a random order, then pads to `seq_len` with token 0. At each query the model must predict
that key's value as the next token; every other position is ignored (target -100). Keys are
drawn without replacement from `1 .. (vocab_size - 1) // 2`, values from the rest of the
vocabulary above them, so a key is never a value and the pad is never a target.

>>> import torch
>>> task = MQAR(vocab_size=16, num_pairs=2, seq_len=8, num_train=4, num_val=4)
>>> inputs, targets = task.train_batch(1, torch.Generator().manual_seed(0))
>>> inputs.shape, targets.shape
(torch.Size([1, 8]), torch.Size([1, 8]))
>>> keys, queries = inputs[0, 0:4:2], inputs[0, 4:6]
>>> sorted(keys.tolist()) == sorted(queries.tolist()), int(inputs[0, 6]), int(targets[0, 0])
(True, 0, -100)
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.workers.tasks.base import Metric, Task, eval_mode

PAD = 0
IGNORE = -100


def checked_int(name: str, value: object, minimum: int, why: str = "") -> int:
    """`value` if it is an integer >= `minimum`, else a one-line ValueError saying `why`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f" ({why})" if why else ""
        raise ValueError(f"mqar: {name} must be an integer >= {minimum}{reason}, got {value!r}")
    return value


def mqar_examples(
    rng: np.random.Generator, count: int, vocab_size: int, num_pairs: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """`count` sequences and their targets, both (count, seq_len) int64, drawn from `rng`."""
    num_keys = (vocab_size - 1) // 2
    num_values = vocab_size - 1 - num_keys
    num_queries = min(num_pairs, seq_len - 2 * num_pairs)
    # argsort of uniform noise: a random permutation per row, vectorised
    keys = 1 + np.argsort(rng.random((count, num_keys)), axis=1)[:, :num_pairs]  # (N, P)
    values = 1 + num_keys + np.argsort(rng.random((count, num_values)), axis=1)[:, :num_pairs]
    asked = np.argsort(rng.random((count, num_pairs)), axis=1)[:, :num_queries]  # (N, Q)
    rows = np.arange(count)[:, None]
    inputs = np.full((count, seq_len), PAD, dtype=np.int64)
    targets = np.full((count, seq_len), IGNORE, dtype=np.int64)
    inputs[:, 0 : 2 * num_pairs : 2] = keys
    inputs[:, 1 : 2 * num_pairs : 2] = values
    query_slice = slice(2 * num_pairs, 2 * num_pairs + num_queries)
    inputs[:, query_slice] = keys[rows, asked]
    targets[:, query_slice] = values[rows, asked]
    return inputs, targets


class MQAR(Task):
    """Multi-query associative recall: recall each queried key's value from the context."""

    name = "mqar"
    head = "lm"
    metrics = (Metric("accuracy", "max"), Metric("loss", "min"))

    def __init__(
        self,
        vocab_size: int = 64,
        num_pairs: int = 8,
        seq_len: int = 64,
        num_train: int = 20_000,
        num_val: int = 1_000,
        seed: int = 0,
    ):
        self.num_pairs = checked_int("num_pairs", num_pairs, 1)
        self.vocab_size = checked_int(
            "vocab_size", vocab_size, 2 * num_pairs + 1, "a pad and num_pairs keys and values"
        )
        self.seq_len = checked_int(
            "seq_len", seq_len, 2 * num_pairs + 1, "num_pairs pairs and at least one query"
        )
        self.num_train = checked_int("num_train", num_train, 1)
        self.num_val = checked_int("num_val", num_val, 1)
        self.seed = checked_int("seed", seed, 0)

    @property
    def num_values(self) -> int:
        """How many tokens can be a value: a guess is right with probability 1 / num_values."""
        return self.vocab_size - 1 - (self.vocab_size - 1) // 2

    @cached_property
    def split(self) -> dict[str, tuple[Tensor, Tensor]]:
        """`{"train": (inputs (N, T), targets (N, T)), "val": ...}`, generated once, on CPU."""
        train_seed, val_seed = np.random.SeedSequence(self.seed).spawn(2)
        shape = (self.vocab_size, self.num_pairs, self.seq_len)
        train = mqar_examples(np.random.default_rng(train_seed), self.num_train, *shape)
        val = mqar_examples(np.random.default_rng(val_seed), self.num_val, *shape)
        return {
            "train": tuple(map(torch.from_numpy, train)),
            "val": tuple(map(torch.from_numpy, val)),
        }

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        inputs, targets = self.split["train"]
        rows = torch.randint(0, len(inputs), (batch_size,), generator=generator)
        return inputs[rows], targets[rows]  # (B, T), (B, T)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy over the query positions only; logits (B, T, V), targets (B, T)."""
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    def evaluate(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        inputs, targets = self.split["val"]
        total_loss, correct, queries = 0.0, 0, 0
        with eval_mode(model):
            for start in range(0, len(inputs), 256):
                batch = inputs[start : start + 256].to(device)  # (B, T)
                target = targets[start : start + 256].to(device)  # (B, T)
                logits = model(batch).float()  # (B, T, V)
                asked = target != IGNORE  # (B, T)
                total_loss += F.cross_entropy(logits[asked], target[asked], reduction="sum").item()
                correct += (logits[asked].argmax(-1) == target[asked]).sum().item()
                queries += asked.sum().item()
        return {"accuracy": correct / queries, "loss": total_loss / queries}
