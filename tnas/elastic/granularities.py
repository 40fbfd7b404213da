"""The nested granularities of a MatFormer supernet, and the Mix'n'Match submodels drawn from it.

Joint supernet training (`train_supernet`) runs every nested granularity
(`Granularities.nested`, as MatFormer trains its g nested models), or the largest and the
smallest of them plus `Granularities.sample` draws (random per-layer choices from the space).

>>> from tnas.space import load_space
>>> supernet = Supernet.from_space("matformer")
>>> chain = Granularities.of(supernet, load_space("matformer")).nested(supernet)
>>> [sub.config.n_layers for sub in chain]
[2, 3, 3, 4]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tnas.elastic.submodel import NESTED_HEAD_MIXERS, Submodel, default_kept
from tnas.elastic.supernet import Supernet
from tnas.space.space import DesignSpace

DEFAULT_FRACTIONS = (8, 4, 2, 1)  # without a space: FFN at F/8, F/4, F/2, F, as in MatFormer


def _fit(supernet: Supernet, ffn_dims: Sequence[int], heads: int, depth: int) -> Submodel:
    """A submodel of `depth` layers (placed by `default_kept`), each layer's FFN width and head
    count capped at its supernet layer's (heads that do not nest stay the supernet's)."""
    kept = default_kept(depth, supernet.config.n_layers)
    bigs = [supernet.config.layers[i] for i in kept]
    widths = [min(width, big.ffn_dim) for width, big in zip(ffn_dims, bigs, strict=True)]
    counts = [min(heads, b.n_heads) if b.mixer in NESTED_HEAD_MIXERS else b.n_heads for b in bigs]
    return supernet.submodel(ffn_dim=widths, n_heads=counts, kept=kept)


@dataclass(frozen=True)
class Granularities:
    """The nested choices training picks submodels from, each ascending: FFN widths, head
    counts, depths; and the space Mix'n'Match samples come from (None: uniform per layer).

    From a space, its `ffn_dim`, `n_heads` and `n_layers` values. Without one, MatFormer's
    FFN widths F/8, F/4, F/2 and F, with every head and every layer (capped per layer).

    >>> from tnas.space import load_space
    >>> Granularities.of(Supernet.from_space("matformer"), load_space("matformer")).count
    4
    """

    ffn_dims: tuple[int, ...]
    n_heads: tuple[int, ...]
    depths: tuple[int, ...]
    space: DesignSpace | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, supernet: Supernet, space: DesignSpace | None = None) -> Granularities:
        if space is not None:
            return cls(
                tuple(sorted(space.values("ffn_dim"))),
                tuple(sorted(space.values("n_heads"))),
                tuple(sorted(space.values("n_layers"))),
                space,
            )
        config = supernet.config
        widest = max(layer.ffn_dim for layer in config.layers)
        ffn = sorted({widest // d for d in DEFAULT_FRACTIONS if widest % d == 0})
        heads = max(layer.n_heads for layer in config.layers)
        return cls(tuple(ffn), (heads,), (config.n_layers,))

    @property
    def count(self) -> int:
        """g, the number of nested granularities: the most values of any one knob."""
        return max(len(self.ffn_dims), len(self.n_heads), len(self.depths))

    def nested(self, supernet: Supernet) -> list[Submodel]:
        """The g nested submodels, smallest first: the k-th takes each knob's value at relative
        position k / (g - 1) of its choices, every layer alike (MatFormer's granularities)."""
        g = self.count

        def at(values: tuple[int, ...], k: int) -> int:
            return values[math.floor(k * (len(values) - 1) / max(1, g - 1) + 0.5)]

        chain = []
        for k in range(g):
            depth = at(self.depths, k)
            chain.append(_fit(supernet, [at(self.ffn_dims, k)] * depth, at(self.n_heads, k), depth))
        return chain

    def sample(self, supernet: Supernet, rng: np.random.Generator) -> Submodel:
        """A random Mix'n'Match submodel: `space.sample` (its scopes and constraints), or a
        uniform depth and head count and a uniform FFN width per layer."""
        if self.space is not None:
            config = self.space.sample(rng)
            return supernet.submodel(
                ffn_dim=[layer.ffn_dim for layer in config.layers],
                n_heads=[layer.n_heads for layer in config.layers],
                n_layers=config.n_layers,
            )
        depth = self.depths[int(rng.integers(len(self.depths)))]
        heads = self.n_heads[int(rng.integers(len(self.n_heads)))]
        widths = [self.ffn_dims[int(rng.integers(len(self.ffn_dims)))] for _ in range(depth)]
        return _fit(supernet, widths, heads, depth)


__all__ = ["DEFAULT_FRACTIONS", "Granularities"]
