"""Tiny supernets and random Mix'n'Match submodels for the elastic tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tnas.elastic import Submodel, Supernet
from tnas.space import ArchConfig, LayerConfig

FFN_DIMS = (8, 16, 32, 64)


def tiny_supernet(
    mixer: str = "attention",
    activation: str = "gelu",
    head: str = "lm",
    tie_embeddings: bool = True,
    seed: int = 0,
) -> Supernet:
    """4 layers, d_model 32, 4 heads of 8 (MDHA: head_dim 12, wider than d_model // 4), FFN 64."""
    layer = LayerConfig(
        mixer=mixer,
        n_heads=4,
        head_dim=12 if mixer == "mdha" else 0,
        ffn_dim=64,
        activation=activation,
        dconv_kernel=3,
    )
    config = ArchConfig(
        d_model=32,
        n_layers=4,
        vocab_size=40,
        max_seq_len=16,
        head=head,
        n_classes=5 if head == "classifier" else 0,
        tie_embeddings=tie_embeddings,
        layers=(layer,) * 4,
    )
    torch.manual_seed(seed)
    supernet = Supernet(config)
    with torch.no_grad():  # fresh norms are the identity; perturb them so slicing errors show
        for name, param in supernet.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return supernet.eval()


def random_submodel(supernet: Supernet, rng: np.random.Generator) -> Submodel:
    """Per-layer FFN widths and head counts, a random depth, and random kept layers."""
    depth = supernet.config.n_layers
    n_layers = int(rng.integers(1, depth + 1))
    kept = None
    if rng.random() < 0.5:
        kept = sorted(rng.choice(depth, size=n_layers, replace=False).tolist())
    return supernet.submodel(
        ffn_dim=[int(rng.choice(FFN_DIMS)) for _ in range(n_layers)],
        n_heads=[int(rng.integers(1, 5)) for _ in range(n_layers)],
        n_layers=n_layers,
        kept=kept,
    )


def tokens(supernet: Supernet, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    config = supernet.config
    return torch.randint(0, config.vocab_size, (2, config.max_seq_len), generator=generator)


@pytest.fixture
def supernet() -> Supernet:
    return tiny_supernet()
