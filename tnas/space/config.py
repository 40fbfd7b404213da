"""`ArchConfig`: one point of a design space, the key of everything tnas stores.

A config is a frozen dataclass of ints, strings and bools only, so that its canonical JSON (sorted
keys, no whitespace) and therefore its hash are the same in every process and on every machine.
Options a layer's mixer does not read are set to 0, so two configs that build the same network
have the same hash.

>>> cfg = ArchConfig(d_model=64, n_layers=2, layers=(LayerConfig(n_heads=4, ffn_dim=128),) * 2)
>>> ArchConfig.from_json(cfg.to_json()) == cfg
True
>>> len(cfg.hash)
64
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from functools import cached_property

from tnas.space.catalog import (
    ACTIVATIONS,
    BITS,
    HEADS,
    MIXER_OPTIONS,
    MIXERS,
    NORMS,
    ZERO_MEANS_DEFAULT,
    ffn_params,
    mixer_params,
    norm_params,
)
from tnas.space.errors import OneLineError, shown, unknown_name

MAX_LAYERS = 256  # deeper than any model tnas builds; bounds the work a config can ask for


class ConfigError(OneLineError):
    """A config that no network can be built from; the message is one line."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LayerConfig:
    """One block: a token mixer, then an FFN. Fields the mixer does not use are stored as 0.

    `head_dim` (attention, MDHA) fixes the size of each head, so the heads' total width is
    `n_heads * head_dim` rather than `d_model`: MatFormer submodels keep a prefix of a wider
    model's heads at the same head size. 0 means `d_model // n_heads`, and `ArchConfig` stores
    an explicit `head_dim` equal to that as 0, so both spellings have one hash.
    """

    mixer: str = "attention"
    n_heads: int = 4
    ffn_dim: int = 1024
    activation: str = "gelu"
    bits: int = 32
    dconv_kernel: int = 3  # Primer MDHA: depthwise conv taps after Q, K, V
    conv_kernel: int = 4  # pool: window; ssm: short causal conv taps
    state_size: int = 16  # ssm: N, the state per channel
    head_dim: int = 0  # attention, MDHA: size of each head; 0: d_model // n_heads

    def __post_init__(self):
        if not isinstance(self.mixer, str) or self.mixer not in MIXERS:
            raise ConfigError(unknown_name("mixer", self.mixer, MIXERS))
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise ConfigError(unknown_name("activation", self.activation, ACTIVATIONS))
        if not _is_int(self.bits) or self.bits not in BITS:
            raise ConfigError(unknown_name("bits", self.bits, BITS))
        uses = MIXERS[self.mixer].uses
        for name in MIXER_OPTIONS:
            value = getattr(self, name)
            if not _is_int(value):
                raise ConfigError(f"{name} must be an integer, got {shown(value)}")
            least = 0 if name in ZERO_MEANS_DEFAULT else 1
            if name not in uses:
                object.__setattr__(self, name, 0)
            elif value < least:
                raise ConfigError(
                    f"{name} must be >= {least} for mixer {self.mixer!r}, got {shown(value)}"
                )
        if not _is_int(self.ffn_dim) or self.ffn_dim < 1:
            raise ConfigError(f"ffn_dim must be a positive integer, got {shown(self.ffn_dim)}")

    @property
    def uses_heads(self) -> bool:
        return "n_heads" in MIXERS[self.mixer].uses


def _layer_fields(layer) -> dict:
    if not isinstance(layer, dict) or not all(isinstance(key, str) for key in layer):
        raise ConfigError(f"a layer must be an object of fields, got {type(layer).__name__}")
    return layer


@dataclass(frozen=True)
class ArchConfig:
    """A whole network: embeddings, `n_layers` blocks, a final norm and a head.

    `head="lm"` is a causal language model (tied or untied output projection);
    `head="classifier"` mean-pools the tokens and predicts one of `n_classes`.
    """

    d_model: int = 256
    n_layers: int = 4
    vocab_size: int = 256
    max_seq_len: int = 256
    norm: str = "layernorm"
    tie_embeddings: bool = True
    head: str = "lm"
    n_classes: int = 0
    layers: tuple[LayerConfig, ...] = field(default=())

    def __post_init__(self):
        for name in ("d_model", "n_layers", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {shown(value)}")
        if not _is_int(self.n_classes) or self.n_classes < 0:
            raise ConfigError(f"n_classes must be an integer >= 0, got {shown(self.n_classes)}")
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError(
                f"tie_embeddings must be true or false, got {shown(self.tie_embeddings)}"
            )
        if self.n_layers > MAX_LAYERS:
            raise ConfigError(f"n_layers must be at most {MAX_LAYERS}, got {self.n_layers}")
        if not isinstance(self.layers, list | tuple):
            raise ConfigError(f"layers must be a list, got {type(self.layers).__name__}")
        layers = tuple(
            layer if isinstance(layer, LayerConfig) else LayerConfig(**_layer_fields(layer))
            for layer in self.layers
        ) or tuple(LayerConfig() for _ in range(self.n_layers))
        object.__setattr__(self, "layers", layers)
        if len(layers) != self.n_layers:
            raise ConfigError(f"n_layers is {self.n_layers} but {len(layers)} layers are given")
        if self.norm not in NORMS:
            raise ConfigError(unknown_name("norm", self.norm, NORMS))
        if self.head not in HEADS:
            raise ConfigError(unknown_name("head", self.head, HEADS))
        if self.head == "classifier":
            if self.n_classes < 2:
                raise ConfigError(f"a classifier needs n_classes >= 2, got {self.n_classes}")
            object.__setattr__(self, "tie_embeddings", False)
        elif self.n_classes != 0:
            object.__setattr__(self, "n_classes", 0)
        layers = tuple(
            replace(layer, head_dim=0)
            if layer.head_dim and layer.head_dim * layer.n_heads == self.d_model
            else layer
            for layer in layers
        )  # an explicit head_dim of d_model // n_heads is the default: one spelling, one hash
        object.__setattr__(self, "layers", layers)
        for i, layer in enumerate(layers):
            if layer.uses_heads and not layer.head_dim and self.d_model % layer.n_heads:
                raise ConfigError(
                    f"layer{i}: d_model {self.d_model} is not divisible by n_heads {layer.n_heads}"
                )

    def to_dict(self) -> dict:
        """Plain fields, layers as a list of dicts (every field is a scalar: no deep copy).

        `head_dim` is left out where it is 0 (the default), so configs written before it
        existed keep their JSON and their hash.
        """
        data = {name: getattr(self, name) for name in ARCH_FIELDS}
        data["layers"] = [
            {
                name: getattr(layer, name)
                for name in LAYER_FIELDS
                if getattr(layer, name) or name not in OMITTED_WHEN_ZERO
            }
            for layer in self.layers
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ArchConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be an object of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        layers = data.get("layers", ())
        if not isinstance(layers, list | tuple):
            raise ConfigError(f"layers must be a list, got {type(layers).__name__}")
        layer_fields = {f.name for f in fields(LayerConfig)}
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                raise ConfigError(f"layer{i}: must be an object of fields")
            extra = sorted(map(str, set(layer) - layer_fields))
            if extra:
                raise ConfigError(f"layer{i}: unknown field(s): {', '.join(extra)}")
        return cls(**data)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace. Equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(data)

    @cached_property  # a frozen dataclass: computed once per object
    def hash(self) -> str:
        """SHA-256 of the canonical JSON: the key in databases, caches and checkpoints."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def replace(self, **changes) -> ArchConfig:
        return replace(self, **changes)

    def derived(self) -> dict[str, float]:
        """Quantities that constraints may name (`params <= 20e6`), computed without torch."""
        return derived_quantities(self)


def block_params(config: ArchConfig, layer: LayerConfig) -> int:
    """Parameters of one block's mixer and FFN (its two norms not included)."""
    mixer = mixer_params(
        layer.mixer,
        d_model=config.d_model,
        n_heads=layer.n_heads,
        head_dim=layer.head_dim,
        dconv_kernel=layer.dconv_kernel,
        conv_kernel=layer.conv_kernel,
        state_size=layer.state_size,
        max_seq_len=config.max_seq_len,
    )
    return mixer + ffn_params(config.d_model, layer.ffn_dim, layer.activation)


def count_params(config: ArchConfig) -> int:
    """Exact trainable parameter count of `build_model(config)` (tied weights counted once)."""
    D = config.d_model
    total = config.vocab_size * D + config.max_seq_len * D + norm_params(config.norm, D)
    for layer in config.layers:
        total += 2 * norm_params(config.norm, D) + block_params(config, layer)
    if config.head == "classifier":
        total += D * config.n_classes + config.n_classes
    elif not config.tie_embeddings:
        total += D * config.vocab_size
    return total


def derived_quantities(config: ArchConfig) -> dict[str, float]:
    """Every name a constraint expression may use, for one config."""
    layers = config.layers
    head_layers = [layer for layer in layers if layer.uses_heads]
    layer_params = [block_params(config, layer) for layer in layers]
    params = count_params(config)
    quantized_bits = sum(p * layer.bits for p, layer in zip(layer_params, layers, strict=True))
    return {
        "params": params,
        "d_model": config.d_model,
        "n_layers": config.n_layers,
        "vocab_size": config.vocab_size,
        "max_seq_len": config.max_seq_len,
        "total_heads": sum(layer.n_heads for layer in head_layers),
        "max_heads": max((layer.n_heads for layer in head_layers), default=0),
        "attention_layers": sum(layer.mixer in ("attention", "mdha") for layer in layers),
        "mean_ffn_dim": sum(layer.ffn_dim for layer in layers) / len(layers),
        "max_ffn_dim": max(layer.ffn_dim for layer in layers),
        "mean_bits": quantized_bits / max(1, sum(layer_params)),
        # block weights at their chosen bits, embeddings and head at 32
        "weight_mb": (quantized_bits + 32 * (params - sum(layer_params))) / 8 / 1e6,
    }


ARCH_FIELDS = tuple(f.name for f in fields(ArchConfig) if f.name != "layers")
LAYER_FIELDS = tuple(f.name for f in fields(LayerConfig))
# Layer fields added after hashes were first stored: absent from the JSON while 0.
OMITTED_WHEN_ZERO = frozenset({"head_dim"})
DERIVED_NAMES = tuple(derived_quantities(ArchConfig(n_layers=1)).keys())
