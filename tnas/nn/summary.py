"""`summary(config)`: parameters, and FLOPs counted by `torch.utils.flop_counter`, per layer.

FLOPs are counted from the ops a real forward pass dispatches (matmuls, convolutions,
attention), so elementwise work, FFTs and scans are not in the count; the per-layer table says
so through its `flops` of 0 for a parameter-free pooling mixer, for example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tnas.nn.model import build_model
from tnas.space.config import ArchConfig


@dataclass(frozen=True)
class LayerSummary:
    index: int
    mixer: str
    n_heads: int
    ffn_dim: int
    activation: str
    bits: int
    params: int
    flops: int


@dataclass(frozen=True)
class ModelSummary:
    config_hash: str
    params: int
    flops: int  # one forward pass of `batch` sequences of `seq_len` tokens
    batch: int
    seq_len: int
    layers: tuple[LayerSummary, ...]

    def to_dict(self) -> dict:
        return {
            "config_hash": self.config_hash,
            "params": self.params,
            "flops": self.flops,
            "batch": self.batch,
            "seq_len": self.seq_len,
            "layers": [vars(layer) for layer in self.layers],
        }


def count_flops(model: nn.Module, tokens: Tensor) -> tuple[int, dict[str, dict]]:
    """FLOPs of one eval-mode forward, in total and per module; the model's mode is restored."""
    training = model.training
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model.eval()(tokens)
    finally:
        model.train(training)
    return int(counter.get_total_flops()), counter.get_flop_counts()


def summary(config: ArchConfig, batch: int = 1, seq_len: int | None = None) -> ModelSummary:
    """Build the model and count its parameters and forward FLOPs.

    >>> from tnas.space import ArchConfig
    >>> s = summary(ArchConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=8))
    >>> s.params > 0 and s.flops > 0
    True
    """
    seq_len = seq_len or config.max_seq_len
    model = build_model(config)
    total_flops, per_module = count_flops(model, torch.zeros(batch, seq_len, dtype=torch.long))
    layers = []
    for i, (layer, block) in enumerate(zip(config.layers, model.blocks, strict=True)):
        flops = sum(per_module.get(f"{type(model).__name__}.blocks.{i}", {}).values())
        params = sum(p.numel() for p in block.parameters())
        layers.append(
            LayerSummary(
                i,
                layer.mixer,
                layer.n_heads,
                layer.ffn_dim,
                layer.activation,
                layer.bits,
                params,
                int(flops),
            )
        )
    return ModelSummary(
        config_hash=config.hash,
        params=sum(p.numel() for p in model.parameters()),
        flops=total_flops,
        batch=batch,
        seq_len=seq_len,
        layers=tuple(layers),
    )
