"""What a submodel of a MatFormer supernet is, checked without torch.

A supernet is one `ArchConfig`, the largest: every layer at its widest FFN and its most heads.
A submodel is another `ArchConfig` plus `kept`, the supernet layer each of its layers is cut
from, such that layer i of the submodel is supernet layer `kept[i]` with

- the first `ffn_dim` hidden units of that layer's FFN (MatFormer, Devvrit et al. 2023);
- the first `n_heads` heads, each of the supernet's head size, so the submodel config carries
  `head_dim` whenever that size is not `d_model // n_heads`;
- everything else equal: mixer, activation, mixer options, and the model-wide fields.

Layers not in `kept` are skipped whole (Gemma 3n, FinerCut): the residual stream passes them by.
`default_kept` keeps the first `n - 1` layers and the last, since the last layer is the one
trained to feed the final norm and the head. `bits` is free: it is applied after extraction.

>>> from tnas.space import ArchConfig, LayerConfig
>>> big = ArchConfig(d_model=64, n_layers=3, layers=(LayerConfig(n_heads=4, ffn_dim=256),) * 3)
>>> small = ArchConfig(d_model=64, n_layers=2,
...                    layers=(LayerConfig(n_heads=2, head_dim=16, ffn_dim=64),) * 2)
>>> resolve(big, small).kept
(0, 2)
>>> resolve(big, small.replace(d_model=32))
Traceback (most recent call last):
...
tnas.elastic.submodel.SubmodelError: d_model 32 differs from the supernet's 64
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tnas.space.config import ArchConfig, ConfigError, LayerConfig
from tnas.space.space import GLOBAL_KNOBS

# Model-wide fields a submodel shares with its supernet: every global knob but depth.
SHARED_FIELDS = tuple(knob for knob in GLOBAL_KNOBS if knob != "n_layers")
# Layer fields a submodel shares with the supernet layer it is cut from.
SHARED_LAYER_FIELDS = ("mixer", "activation", "dconv_kernel", "conv_kernel", "state_size")
# Mixers whose heads nest (a prefix of the heads is a narrower attention); other mixers that
# read `n_heads` split `d_model` among them, so their head count must match.
NESTED_HEAD_MIXERS = frozenset({"attention", "mdha"})


class SubmodelError(ConfigError):
    """A config that is not a submodel of the supernet; the message names layer and field."""


def default_kept(n_layers: int, depth: int) -> tuple[int, ...]:
    """The supernet layers a submodel of `n_layers` keeps: the first `n_layers - 1` and the last.

    >>> default_kept(2, 4), default_kept(4, 4), default_kept(1, 4)
    ((0, 3), (0, 1, 2, 3), (3,))
    """
    if not 1 <= n_layers <= depth:
        raise SubmodelError(f"n_layers {n_layers} must be in 1..{depth}, the supernet's depth")
    return (*range(n_layers - 1), depth - 1)


def check_kept(kept: tuple[int, ...], depth: int) -> None:
    if any(not 0 <= i < depth for i in kept) or list(kept) != sorted(set(kept)):
        raise SubmodelError(f"kept {list(kept)} must be increasing indices in 0..{depth - 1}")


def head_size(config: ArchConfig, layer: LayerConfig) -> int:
    return layer.head_dim or config.d_model // layer.n_heads


@dataclass(frozen=True)
class Submodel:
    """A submodel config and the supernet layer each of its layers is cut from.

    Its JSON is `{"config": {...}, "kept": [0, 1, 3]}`; `parse` also takes a bare config, whose
    layers are then placed by `default_kept`.
    """

    config: ArchConfig
    kept: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "kept": list(self.kept)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def parse(text: str) -> tuple[ArchConfig, tuple[int, ...] | None]:
        """A config and its `kept` (None when not given) from either JSON form."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"submodel is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError("submodel JSON must be an object")
        if "config" not in data:
            return ArchConfig.from_dict(data), None
        extra = sorted(set(data) - {"config", "kept"})
        if extra:
            raise ConfigError(f"unknown submodel field(s): {', '.join(extra)}")
        if not isinstance(data["config"], dict):
            raise ConfigError("submodel 'config' must be an object")
        kept = data.get("kept")
        if kept is not None and (
            not isinstance(kept, list)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in kept)
        ):
            raise ConfigError(f"submodel 'kept' must be a list of layer indices, got {kept!r}")
        return ArchConfig.from_dict(data["config"]), None if kept is None else tuple(kept)


def resolve(
    supernet: ArchConfig, config: ArchConfig | Submodel, kept: tuple[int, ...] | None = None
) -> Submodel:
    """Check that `config` is a submodel of `supernet` and place its layers.

    `kept` defaults to the submodel's own (a `Submodel`) or `default_kept`. Raises
    `SubmodelError` naming the first field (and layer) that does not fit.
    """
    if isinstance(config, Submodel):
        config, kept = config.config, kept if kept is not None else config.kept
    for name in SHARED_FIELDS:
        mine, theirs = getattr(config, name), getattr(supernet, name)
        if mine != theirs:
            raise SubmodelError(f"{name} {mine!r} differs from the supernet's {theirs!r}")
    depth = supernet.n_layers
    if config.n_layers > depth:
        raise SubmodelError(f"n_layers {config.n_layers} exceeds the supernet's {depth}")
    kept = default_kept(config.n_layers, depth) if kept is None else tuple(kept)
    if len(kept) != config.n_layers:
        raise SubmodelError(f"kept lists {len(kept)} layers but n_layers is {config.n_layers}")
    check_kept(kept, depth)
    for i, (layer, index) in enumerate(zip(config.layers, kept, strict=True)):
        _check_layer(f"layer{i}", config, layer, supernet, supernet.layers[index], index)
    return Submodel(config, kept)


def _check_layer(
    where: str,
    config: ArchConfig,
    layer: LayerConfig,
    supernet: ArchConfig,
    big: LayerConfig,
    index: int,
) -> None:
    at = f" (supernet layer {index})"
    for name in SHARED_LAYER_FIELDS:
        mine, theirs = getattr(layer, name), getattr(big, name)
        if mine != theirs:
            raise SubmodelError(
                f"{where}: {name} {mine!r} differs from the supernet's {theirs!r}{at}"
            )
    if layer.ffn_dim > big.ffn_dim:
        raise SubmodelError(
            f"{where}: ffn_dim {layer.ffn_dim} exceeds the supernet's {big.ffn_dim}{at}"
        )
    if not layer.uses_heads:
        return
    if layer.mixer not in NESTED_HEAD_MIXERS:
        if layer.n_heads != big.n_heads:
            raise SubmodelError(
                f"{where}: n_heads {layer.n_heads} differs from the supernet's {big.n_heads}; "
                f"{layer.mixer} heads do not nest{at}"
            )
        return
    if layer.n_heads > big.n_heads:
        raise SubmodelError(
            f"{where}: n_heads {layer.n_heads} exceeds the supernet's {big.n_heads}{at}"
        )
    mine, theirs = head_size(config, layer), head_size(supernet, big)
    if mine != theirs:
        raise SubmodelError(
            f"{where}: head size {mine} differs from the supernet's {theirs}; "
            f"set head_dim {theirs}{at}"
        )


def largest(space) -> ArchConfig:
    """The supernet config of a design space whose configs nest: every model-wide knob, the
    mixer, the activation and the mixer options fixed; FFN width, heads and depth at their
    largest. Raises `SubmodelError` naming the knob that does not nest.

    >>> from tnas.space import load_space
    >>> big = largest(load_space("matformer"))
    >>> big.n_layers, {(l.n_heads, l.head_dim, l.ffn_dim) for l in big.layers}
    (4, {(8, 0, 1024)})
    """
    single = [name for name in SHARED_FIELDS if len(space.values(name)) > 1]
    single += [name for name in (*SHARED_LAYER_FIELDS, "head_dim") if len(space.values(name)) > 1]
    if single:
        raise SubmodelError(
            f"space {space.name!r}: {single[0]} varies, so its configs are not nested submodels "
            "of one supernet (only ffn_dim, n_heads, n_layers and bits may vary)"
        )
    (mixer,) = space.values("mixer")
    heads = space.values("n_heads")
    (head_dim,) = space.values("head_dim")
    if mixer in NESTED_HEAD_MIXERS and len(heads) > 1 and not head_dim:
        raise SubmodelError(
            f"space {space.name!r}: n_heads varies but head_dim is 0, so fewer heads are wider "
            "heads, not a prefix of more; fix head_dim"
        )
    (d_model,) = space.values("d_model")
    layer = LayerConfig(
        **{name: space.values(name)[0] for name in SHARED_LAYER_FIELDS},
        n_heads=max(heads),
        head_dim=head_dim,
        ffn_dim=max(space.values("ffn_dim")),
    )
    depth = max(space.values("n_layers"))
    globals_ = {name: space.values(name)[0] for name in SHARED_FIELDS}
    try:
        return ArchConfig(**globals_, n_layers=depth, layers=(layer,) * depth)
    except ConfigError as err:
        raise SubmodelError(f"space {space.name!r}: largest config: {err}") from None
