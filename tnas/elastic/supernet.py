"""`Supernet`: the largest network of a nested space, runnable as any of its submodels.

Its weights are those of `build_model(largest_config)`, under the same names; a submodel's
forward slices them in place (the FFN's first `ffn_dim` hidden units, the attention's first
`n_heads` heads) and skips the layers it does not keep, so every submodel shares every weight
it uses with the supernet and gradients of a submodel's loss land in the supernet's tensors.

>>> import torch
>>> from tnas.space import ArchConfig, LayerConfig
>>> big = ArchConfig(d_model=32, n_layers=3, vocab_size=64, max_seq_len=16,
...                  layers=(LayerConfig(n_heads=4, ffn_dim=128),) * 3)
>>> supernet = Supernet(big)
>>> sub = supernet.submodel(ffn_dim=[32, 64], n_heads=2)
>>> sub.kept, sub.config.layers[0].head_dim
((0, 2), 8)
>>> supernet(torch.zeros(1, 16, dtype=torch.long), sub).shape
torch.Size([1, 16, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch import Tensor

from tnas.elastic.submodel import (
    NESTED_HEAD_MIXERS,
    Submodel,
    SubmodelError,
    check_kept,
    default_kept,
    head_size,
    largest,
    resolve,
)
from tnas.nn.model import TnasModel
from tnas.space.config import ArchConfig, ConfigError
from tnas.space.space import DesignSpace, load_space


class Supernet(TnasModel):
    """The largest config's network; `supernet(tokens, sub)` runs submodel `sub` on its weights.

    `sub` is an `ArchConfig` (its layers placed by `default_kept`) or a `Submodel` (explicit
    `kept`). `space` names the design space it was built from (may be empty) and `step` counts
    training steps; both are saved with it (`tnas.elastic.save_supernet`).
    """

    def __init__(self, config: ArchConfig, *, space: str = "", step: int = 0):
        super().__init__(config)
        self.space = space
        self.step = step

    @classmethod
    def from_space(cls, space: DesignSpace | str) -> Supernet:
        """The supernet of a space whose configs nest (the `matformer` preset, for one)."""
        name = space if isinstance(space, str) else space.name
        loaded = load_space(space) if isinstance(space, str) else space
        return cls(largest(loaded), space=name)

    def resolve(self, sub: ArchConfig | Submodel, kept: Sequence[int] | None = None) -> Submodel:
        """`sub` checked against this supernet, with the supernet layer of each of its layers."""
        return resolve(self.config, sub, None if kept is None else tuple(kept))

    def submodel(
        self,
        ffn_dim: int | Sequence[int] | None = None,
        n_heads: int | Sequence[int] | None = None,
        n_layers: int | None = None,
        kept: Sequence[int] | None = None,
        bits: int | Sequence[int] | None = None,
    ) -> Submodel:
        """A submodel from per-layer choices (a single value applies to every kept layer; None
        keeps the supernet's). Depth is `len(kept)`, else `n_layers`, else the length of the
        per-layer lists, else the supernet's; layers are placed by `default_kept` unless `kept`
        is given.
        """
        depth = self.config.n_layers
        if kept is None:
            if n_layers is None:
                lists = [v for v in (ffn_dim, n_heads, bits) if isinstance(v, Sequence)]
                n_layers = len(lists[0]) if lists else depth
            kept = default_kept(n_layers, depth)
        kept = tuple(kept)
        check_kept(kept, depth)

        def per_layer(value, name: str) -> list:
            if value is None:
                return [getattr(self.config.layers[i], name) for i in kept]
            if isinstance(value, int):
                return [value] * len(kept)
            if len(value) != len(kept):
                raise SubmodelError(f"{name} has {len(value)} values for {len(kept)} layers")
            return list(value)

        columns = zip(
            kept,
            per_layer(ffn_dim, "ffn_dim"),
            per_layer(n_heads, "n_heads"),
            per_layer(bits, "bits"),
            strict=True,
        )
        layers = []
        for index, width, heads, layer_bits in columns:
            big = self.config.layers[index]
            head_dim = head_size(self.config, big) if big.mixer in NESTED_HEAD_MIXERS else 0
            changes = {"ffn_dim": width, "n_heads": heads, "bits": layer_bits}
            try:
                layers.append(replace(big, **changes, head_dim=head_dim))
            except ConfigError as err:
                raise SubmodelError(f"layer{len(layers)}: {err}") from None
        try:
            config = self.config.replace(n_layers=len(kept), layers=tuple(layers))
        except ConfigError as err:
            raise SubmodelError(str(err)) from None
        return self.resolve(config, kept)

    def forward(
        self,
        tokens: Tensor,
        sub: ArchConfig | Submodel | None = None,
        kept: Sequence[int] | None = None,
    ) -> Tensor:
        """Logits of the whole supernet, or of submodel `sub` run on slices of its weights."""
        if sub is None:
            return super().forward(tokens)
        sub = self.resolve(sub, kept)
        x = self.embed(tokens)
        for layer, index in zip(sub.config.layers, sub.kept, strict=True):
            big = self.config.layers[index]
            nested = layer.mixer in NESTED_HEAD_MIXERS and layer.n_heads != big.n_heads
            x = self.blocks[index](
                x, self.causal, ffn_width=layer.ffn_dim, n_heads=layer.n_heads if nested else None
            )
        return self.logits(x)
