"""The packaged presets: each loads, names its paper, and every sample is in it and small."""

import numpy as np
import pytest

from tnas.space import PRESETS, load_space, preset_names
from tnas.space.catalog import MIXERS

PAPERS = {
    "primer": "So et al. 2021",
    "wide": "Brown et al. 2022",
    "mixers": "Arora et al. 2023",
    "simq": "Sridhar et al. 2023",
    "matformer": "Devvrit et al. 2023",
}


def test_presets_are_packaged():
    assert sorted(PRESETS) == preset_names() == sorted(PAPERS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_metadata(name):
    space = load_space(name)
    assert space.name == name
    assert space.paper.startswith(PAPERS[name])
    assert space.description
    assert space.size() > 1
    assert space.constraints


@pytest.mark.parametrize("name", PRESETS)
def test_samples_are_in_the_space_and_small(name):
    space = load_space(name)
    rng = np.random.default_rng(0)
    for _ in range(50):
        config = space.sample(rng)
        assert space.contains(config)
        assert space.feasible(config)
        assert all(value <= 0 for value in space.constraint_values(config))
        assert config.vocab_size == 256
        assert config.max_seq_len in (128, 256)
        assert config.head == "lm"
        assert config.derived()["params"] <= 20e6
        assert 1 <= config.n_layers <= space.max_depth


def test_wide_keeps_total_heads_fixed():
    space = load_space("wide")
    rng = np.random.default_rng(0)
    depths = set()
    for _ in range(50):
        config = space.sample(rng)
        assert config.derived()["total_heads"] == 16
        depths.add(config.n_layers)
    assert depths == {1, 2, 4, 8, 16}
    assert space.size() == 25


def test_mixers_covers_the_catalogue():
    space = load_space("mixers")
    rng = np.random.default_rng(0)
    seen = {layer.mixer for _ in range(100) for layer in space.sample(rng).layers}
    assert seen == set(MIXERS)


def test_primer_searches_activation_and_dconv_per_layer():
    space = load_space("primer")
    rows = {knob: (scope, domain) for knob, scope, domain in space.describe()}
    assert rows["activation"] == ("per-layer", "{relu, gelu, squared_relu, swiglu, geglu}")
    assert rows["mixer"] == ("per-layer", "{attention, mdha}")
    assert rows["dconv_kernel"] == ("fixed", "3")


def test_simq_searches_bits_per_layer():
    space = load_space("simq")
    rng = np.random.default_rng(0)
    bits = {layer.bits for _ in range(30) for layer in space.sample(rng).layers}
    assert bits == {32, 16, 8}
    assert all(layer.mixer == "attention" for layer in space.sample(rng).layers)


def test_matformer_has_nested_ffn_granularities():
    space = load_space("matformer")
    rows = {knob: (scope, domain) for knob, scope, domain in space.describe()}
    assert rows["ffn_dim"] == ("per-layer", "{128, 256, 512, 1024}")
    assert rows["d_model"][0] == "fixed"
    assert rows["n_layers"] == ("global", "2..4")
    assert rows["head_dim"] == ("fixed", "32")
    assert space.size() == 2 * (4**2 + 4**3 + 4**4)  # heads shared, FFN per layer, 2..4 layers
