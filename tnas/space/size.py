"""The exact number of distinct configs in a design space, without enumerating them.

Values a config cannot tell apart are counted once: options a layer's mixer does not read,
shared options no layer reads, n_heads choices that do not divide d_model, `tie_embeddings`
under a classifier head and `n_classes` under an LM head. `tests/space` checks the count
against brute-force enumeration of small spaces.

>>> from tnas.space import load_space
>>> count_configs(load_space("wide")) == load_space("wide").size()
True
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

from tnas.space.catalog import MIXER_OPTIONS
from tnas.space.knobs import global_visible, uses

if TYPE_CHECKING:
    from tnas.space.space import DesignSpace


def count_configs(space: DesignSpace) -> int:
    """Exact number of distinct configs of `space`, before constraints (`DesignSpace.size`)."""
    other = 1
    for knob in ("vocab_size", "max_seq_len", "norm"):
        other *= len(space.domain(knob).values)
    heads = 0
    for head in space.domain("head").values:
        factor = 1
        for knob in ("tie_embeddings", "n_classes"):
            if global_visible(knob, head):
                factor *= len(space.domain(knob).values)
        heads += factor
    # A width matters only through how many head counts divide it: count each such
    # number of valid heads once, weighted by the widths that have it.
    widths: dict[int, int] = {}
    for d_model in space.domain("d_model").values:
        valid = len(space.valid_heads(d_model))
        widths[valid] = widths.get(valid, 0) + 1
    total = 0
    for valid, n_widths in widths.items():
        for n_layers in space.domain("n_layers").values:
            total += n_widths * _count_layers(space, valid, n_layers)
    return total * other * heads


def _count_layers(space: DesignSpace, n_valid_heads: int, n_layers: int) -> int:
    """Distinct stacks of `n_layers` layers at a width with `n_valid_heads` valid head counts."""

    def count(knob: str) -> int:
        if space.domain(knob).fixed:
            return 1
        return n_valid_heads if knob == "n_heads" else len(space.domain(knob).values)

    shared = [k for k in space.searched("shared") if k != "mixer"]
    shared_options = [k for k in shared if k in MIXER_OPTIONS]
    always = math.prod(count(k) for k in shared if k not in MIXER_OPTIONS)
    per_layer = [k for k in space.searched("per_layer") if k != "mixer"]
    mixers = space.domain("mixer").values

    def per_layer_count(mixer: str) -> int:
        return math.prod(count(k) for k in per_layer if uses(mixer, k))

    def visible(mixer: str) -> frozenset[str]:
        return frozenset(k for k in shared_options if uses(mixer, k))

    if "mixer" not in space.searched("per_layer"):  # one mixer for every layer
        layers = sum(
            per_layer_count(m) ** n_layers * math.prod(count(k) for k in visible(m)) for m in mixers
        )
        return layers * always
    # Per-layer mixers: group the mixer sequences by the exact set V of shared options
    # they make visible, by inclusion-exclusion over subsets T of V.
    layers = 0
    for size in range(len(shared_options) + 1):
        for subset in itertools.combinations(shared_options, size):
            exact = 0
            for inner_size in range(size + 1):
                for inner in itertools.combinations(subset, inner_size):
                    within = sum(per_layer_count(m) for m in mixers if visible(m) <= set(inner))
                    exact += (-1) ** (size - inner_size) * within**n_layers
            layers += exact * math.prod(count(k) for k in subset)
    return layers * always
