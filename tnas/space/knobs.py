"""The knobs of a design space: their names, their defaults, and which ones a config reads.

Global knobs are model-wide (`ArchConfig`'s fields), layer knobs are `LayerConfig`'s. A knob a
config does not read (a mixer option its layer's mixer ignores, `tie_embeddings` under a
classifier head) is not searched, not counted and not encoded for that config.

>>> uses("pool", "conv_kernel"), uses("pool", "n_heads"), uses("pool", "ffn_dim")
(True, False, True)
>>> global_visible("n_classes", "lm")
False
"""

from __future__ import annotations

from dataclasses import fields

from tnas.space.catalog import MIXER_OPTIONS, MIXERS
from tnas.space.config import ArchConfig, LayerConfig

# In suggestion order: `head` comes before the knobs whose visibility it decides.
GLOBAL_KNOBS = (
    "d_model",
    "n_layers",
    "vocab_size",
    "max_seq_len",
    "norm",
    "head",
    "tie_embeddings",
    "n_classes",
)
LAYER_KNOBS = tuple(f.name for f in fields(LayerConfig))
# Field defaults as declared (an instance would have zeroed the options its mixer does not read).
GLOBAL_DEFAULTS = {f.name: f.default for f in fields(ArchConfig)}
LAYER_DEFAULTS = {f.name: f.default for f in fields(LayerConfig)}


def uses(mixer: str, knob: str) -> bool:
    """Whether a layer with this mixer reads `knob` (mixer options are zeroed otherwise)."""
    return knob not in MIXER_OPTIONS or knob in MIXERS[mixer].uses


def global_visible(knob: str, head: str) -> bool:
    """`tie_embeddings` only matters for an LM head, `n_classes` only for a classifier."""
    if knob == "tie_embeddings":
        return head == "lm"
    if knob == "n_classes":
        return head == "classifier"
    return True
