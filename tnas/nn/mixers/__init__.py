"""Registry of token mixers: name -> lazily imported class (`module:Class`).

>>> from tnas.space import LayerConfig
>>> mixer = create_mixer(64, LayerConfig(mixer="attention", n_heads=4), max_seq_len=32)
>>> type(mixer).__name__
'SoftmaxAttention'
"""

from __future__ import annotations

import importlib

from tnas.nn.mixers.base import Mixer
from tnas.space.config import ConfigError, LayerConfig
from tnas.space.errors import unknown_name

MIXER_CLASSES: dict[str, str] = {
    "attention": "tnas.nn.mixers.attention:SoftmaxAttention",
    "mdha": "tnas.nn.mixers.attention:MultiDConvHeadAttention",
    "linear_attention": "tnas.nn.mixers.linear_attention:LinearAttention",
    "gla": "tnas.nn.mixers.gla:GatedLinearAttention",
    "retention": "tnas.nn.mixers.gla:Retention",
    "pool": "tnas.nn.mixers.pool:CausalAvgPool",
    "ssm": "tnas.nn.mixers.ssm:SelectiveSSM",
    "long_conv": "tnas.nn.mixers.long_conv:LongConv",
}


def mixer_class(name: str) -> type[Mixer]:
    if name not in MIXER_CLASSES:
        raise ConfigError(unknown_name("mixer", name, MIXER_CLASSES))
    module, cls = MIXER_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_mixer(d_model: int, layer: LayerConfig, max_seq_len: int) -> Mixer:
    """Build the mixer named by `layer.mixer`."""
    return mixer_class(layer.mixer)(d_model, layer, max_seq_len)


__all__ = ["MIXER_CLASSES", "Mixer", "create_mixer", "mixer_class"]
