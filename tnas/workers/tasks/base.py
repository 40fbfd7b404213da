"""The base every task derives from: data, a loss, and validation metrics with directions."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from tnas.space.config import ArchConfig


@dataclass(frozen=True)
class Metric:
    """A metric a task reports, and whether a search should maximise or minimise it."""

    name: str
    direction: Literal["max", "min"]


class Task(abc.ABC):
    """A task: a head type, its data (generated or loaded once, then cached on the instance),
    a training loss, and validation metrics.

    Subclasses set `name`, `head` and `metrics` (the first is the primary one) as class
    attributes, and `vocab_size`, `seq_len` and `n_classes` (0 for `head="lm"`) per instance.
    Everything is deterministic given the constructor's arguments, including the split.
    Each constructor argument is stored as the attribute of the same name (scikit-learn's
    `get_params` convention), so `options` and `spec` can read them back.
    """

    name: ClassVar[str]
    head: ClassVar[Literal["lm", "classifier"]]
    metrics: ClassVar[tuple[Metric, ...]]
    vocab_size: int
    seq_len: int
    n_classes: int = 0

    @property
    def options(self) -> dict[str, object]:
        """The constructor arguments that differ from their defaults, by name."""
        options = {}
        for param in inspect.signature(type(self)).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if not hasattr(self, param.name):
                raise TypeError(
                    f"{type(self).__name__} does not store its argument {param.name!r} "
                    f"as self.{param.name}"
                )
            value = getattr(self, param.name)
            if param.default is param.empty or value != param.default:
                options[param.name] = value
        return options

    @property
    def spec(self) -> str:
        """The canonical `name[,key=value...]` string that `parse_task` rebuilds this task from."""
        from tnas.workers.tasks import format_spec  # lazy: the registry imports this module

        return format_spec(type(self), self.options)

    def adapt(self, config: ArchConfig) -> ArchConfig:
        """The config with the task's vocabulary, sequence length and head."""
        return config.replace(
            vocab_size=self.vocab_size,
            max_seq_len=self.seq_len,
            head=self.head,
            n_classes=self.n_classes,
        )

    @abc.abstractmethod
    def train_batch(self, batch_size: int, generator) -> tuple[Tensor, Tensor]:
        """A random training batch on CPU: (inputs (B, T) int64, targets), from `generator`."""

    @abc.abstractmethod
    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The scalar mean training loss of the model's logits against `targets`."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        """Every metric in `metrics` on the fixed validation set (eval mode, no grad)."""


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode without gradients, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
