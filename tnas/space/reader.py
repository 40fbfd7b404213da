"""Reading many configs at once: replay tables and pools of tens of thousands of rows.

`ConfigReader(space).read(data)` is `ArchConfig.from_dict(data)` for a full config (one with
`layers`) and `space.from_flat(data)` for a flat one, with the same result, only faster on many
rows: the domain checks are set lookups, and equal layers are built once and shared (a table
of 100,000 configs holds a few hundred distinct layers). A row off the common path (a value
missing or outside its domain, of another type than its domain's, an n_heads to repair) is
handed to `from_flat` / `from_dict` themselves, so it gets exactly their result or error.

>>> import numpy as np
>>> from tnas.space import load_space
>>> space = load_space("primer")
>>> config = space.sample(np.random.default_rng(0))
>>> reader = ConfigReader(space)
>>> reader.read(space.to_flat(config)) == config, reader.read(config.to_dict()) == config
(True, True)
>>> reader.read({"d_model": 7})
Traceback (most recent call last):
...
tnas.space.yamlio.SpaceError: d_model=7 is not in its domain {128, 192, 256}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tnas.space.config import ArchConfig, ConfigError, LayerConfig
from tnas.space.domains import IntRange
from tnas.space.knobs import GLOBAL_KNOBS, LAYER_KNOBS, global_visible, uses
from tnas.space.space import DesignSpace
from tnas.space.yamlio import SpaceError

_ABSENT = object()


class _Slow(Exception):
    """The row leaves the common path: `from_flat` / `from_dict` read it."""


class ConfigReader:
    """Configs from JSON values, each what `from_dict` / `space.from_flat` gives, read fast.

    `space` may be None when every row is a full config (a flat one is then an error, as
    `read` says).
    """

    def __init__(self, space: DesignSpace | None = None):
        self.space = space
        self.layers: dict[tuple, LayerConfig] = {}  # (mixer, options with types) -> layer
        if space is None:
            return
        self.knob_domains = {knob: space.domain(knob) for knob in GLOBAL_KNOBS + LAYER_KNOBS}
        per_layer = set(space.searched("per_layer"))
        self.per_layer = {knob for knob in LAYER_KNOBS if knob in per_layer}
        self.allowed = {
            knob: None if isinstance(domain, IntRange) else _typed(domain.values)
            for knob, domain in self.knob_domains.items()
        }
        self.options = LAYER_KNOBS[1:]

    def read(self, data: Any) -> ArchConfig:
        """The config for one row's `config` value: a full config dict or a flat one."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be an object of fields, got {type(data).__name__}")
        if "layers" in data:
            return self.read_full(data)
        if self.space is None:
            raise SpaceError("a flat config needs the design space")
        return self.read_flat(data)

    def read_flat(self, flat: Any) -> ArchConfig:
        """`space.from_flat(flat)`, its layers built once per distinct layer."""
        if not isinstance(flat, dict):
            return self.space.from_flat(flat)
        try:
            return self._flat(flat)
        except (_Slow, ConfigError, KeyError, TypeError, ValueError):
            return self.space.from_flat(flat)

    def read_full(self, data: Any) -> ArchConfig:
        """`ArchConfig.from_dict(data)`, its layers built once per distinct layer."""
        try:
            layers = data["layers"]
            if not isinstance(data, dict) or not isinstance(layers, list):
                raise _Slow
            shared = tuple(self._layer_of(layer) for layer in layers)
            fields = {key: value for key, value in data.items() if key != "layers"}
            if not set(fields) <= _ARCH_FIELDS:
                raise _Slow
            return ArchConfig(**fields, layers=shared)
        except (_Slow, ConfigError, KeyError, TypeError, ValueError):
            return ArchConfig.from_dict(data)

    def _layer_of(self, layer: Any) -> LayerConfig:
        if not isinstance(layer, dict):
            raise _Slow
        key = tuple(sorted((name, type(value), value) for name, value in layer.items()))
        found = self.layers.get(key)
        if found is None:
            if not set(layer) <= _LAYER_FIELDS:
                raise _Slow
            found = self.layers[key] = LayerConfig(**layer)
        return found

    def _value(self, flat: Mapping, key: str, knob: str) -> Any:
        """What `from_flat` picks for `knob` under `key`, if it is on the common path."""
        domain = self.knob_domains[knob]
        if domain.fixed:
            return domain.value
        value = flat.get(key, _ABSENT)
        allowed = self.allowed[knob]
        if allowed is None:
            if value is _ABSENT or value not in domain:
                raise _Slow
        elif (type(value), value) not in allowed:
            raise _Slow
        return value

    def _flat(self, flat: Mapping) -> ArchConfig:
        """`space.from_flat(flat)` for a flat config on the common path, else `_Slow`."""
        space = self.space
        head = self._value(flat, "head", "head")
        values = {}
        for knob in GLOBAL_KNOBS:
            if knob == "head":
                values[knob] = head
            elif global_visible(knob, head):
                values[knob] = self._value(flat, knob, knob)
            else:
                values[knob] = self.knob_domains[knob].values[0]  # normalised by ArchConfig
        d_model, n_layers = values["d_model"], values["n_layers"]
        heads = space.valid_heads(d_model)
        shared: dict[str, Any] = {}
        layers = []
        for i in range(n_layers):
            key = [None] * (len(self.options) + 1)
            for position, knob in enumerate(LAYER_KNOBS):
                if position and not uses(key[0], knob):
                    key[position] = (int, 0)
                    continue
                if knob in self.per_layer:
                    value = self._value(flat, f"layer{i}.{knob}", knob)
                elif knob in shared:
                    value = shared[knob]
                else:
                    value = shared[knob] = self._value(flat, knob, knob)
                if knob == "n_heads" and value not in heads:
                    raise _Slow  # repaired by from_flat
                key[position] = value if position == 0 else (type(value), value)
            layer_key = tuple(key)
            layer = self.layers.get(layer_key)
            if layer is None:
                options = {k: v for k, (_, v) in zip(self.options, key[1:], strict=True)}
                layer = self.layers[layer_key] = LayerConfig(mixer=key[0], **options)
            layers.append(layer)
        return ArchConfig(**values, layers=tuple(layers))


def _typed(values) -> frozenset:
    """Values as (type, value) pairs: `1`, `1.0` and `True` kept apart, as the domains and the
    dataclasses' checks keep them."""
    return frozenset((type(value), value) for value in values)


_ARCH_FIELDS = frozenset(field for field in ArchConfig.__dataclass_fields__ if field != "layers")
_LAYER_FIELDS = frozenset(LayerConfig.__dataclass_fields__)
