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

import gc
import hashlib
import json
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

from tnas.space.config import (
    ARCH_FIELDS,
    LAYER_FIELDS,
    OMITTED_WHEN_ZERO,
    ArchConfig,
    ConfigError,
    LayerConfig,
)
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
        self.layer_json: dict[LayerConfig, str] = {}  # each distinct layer's canonical JSON
        self.top_json: dict[tuple, list[str]] = {}  # the JSON before and after the layers
        self.fast_hash = True
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
        assert LAYER_KNOBS[0] == "mixer"
        # what a layer is built from: its own values and the shared ones, as read
        self.shared_knobs = space.searched("shared")
        self.layer_keys = [
            [f"layer{i}.{knob}" for knob in space.searched("per_layer")]
            for i in range(space.max_depth)
        ]
        self.layer_of_values: dict[tuple, LayerConfig] = {}

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
            return self.hashed(ArchConfig(**fields, layers=shared))
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
        shared_values = tuple(flat.get(knob, _ABSENT) for knob in self.shared_knobs)
        shared_key = (d_model, shared_values, tuple(map(type, shared_values)))
        shared: dict[str, Any] = {}
        layers = []
        for i in range(n_layers):
            own = tuple(flat.get(key, _ABSENT) for key in self.layer_keys[i])
            # a layer is a function of these values alone: one seen before is not checked again
            key = (shared_key, own, tuple(map(type, own)))
            layer = self.layer_of_values.get(key)
            if layer is None:
                layer = self.layer_of_values[key] = self._layer(flat, i, d_model, shared)
            layers.append(layer)
        return self.hashed(ArchConfig(**values, layers=tuple(layers)))

    def hashed(self, config: ArchConfig) -> ArchConfig:
        """`config` with its `hash` set from its canonical JSON put together from pieces made
        once: the JSON of each distinct layer and of each distinct set of model-wide fields.
        Checked against `to_json` each time a piece is new (the first config included); a
        difference turns this off for good."""
        if not self.fast_hash:
            return config
        fragments, new = [], False
        for layer in config.layers:
            found = self.layer_json.get(layer)
            if found is None:
                data = {f: getattr(layer, f) for f in LAYER_FIELDS}
                data = {f: v for f, v in data.items() if v or f not in OMITTED_WHEN_ZERO}
                found = self.layer_json[layer] = _canonical(data)
                new = True
            fragments.append(found)
        fields = tuple(getattr(config, name) for name in ARCH_FIELDS)  # each of one type
        around = self.top_json.get(fields)
        if around is None:
            top = _canonical(dict(zip(ARCH_FIELDS, fields, strict=True)) | {"layers": 0})
            around = self.top_json[fields] = top.split('"layers":0', 1)
            new = True
        text = around[0] + '"layers":[' + ",".join(fragments) + "]" + around[1]
        if new and text != config.to_json():
            self.fast_hash = False
            return config
        config.__dict__["hash"] = hashlib.sha256(text.encode()).hexdigest()  # as `hash` caches
        return config

    def _layer(self, flat: Mapping, i: int, d_model: int, shared: dict) -> LayerConfig:
        """Layer `i` as `from_flat` builds it (`shared`: the shared values picked so far)."""
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
            if knob == "n_heads" and value not in self.space.valid_heads(d_model):
                raise _Slow  # repaired by from_flat
            key[position] = value if position == 0 else (type(value), value)
        layer_key = tuple(key)
        layer = self.layers.get(layer_key)
        if layer is None:
            options = {k: v for k, (_, v) in zip(self.options, key[1:], strict=True)}
            layer = self.layers[layer_key] = LayerConfig(mixer=key[0], **options)
        return layer


@contextmanager
def bulk():
    """Python's cyclic garbage collector paused while many rows are read: the rows make no
    cycles, and each collection would walk every object read so far (20-40% of the time of
    a 100,000-row table)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _typed(values) -> frozenset:
    """Values as (type, value) pairs: `1`, `1.0` and `True` kept apart, as the domains and the
    dataclasses' checks keep them."""
    return frozenset((type(value), value) for value in values)


_ARCH_FIELDS = frozenset(field for field in ArchConfig.__dataclass_fields__ if field != "layers")
_LAYER_FIELDS = frozenset(LayerConfig.__dataclass_fields__)
