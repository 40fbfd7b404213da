"""What is and is not a submodel, checked without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tnas.elastic.submodel import (
    Submodel,
    SubmodelError,
    default_kept,
    largest,
    resolve,
)
from tnas.space import ArchConfig, ConfigError, DesignSpace, LayerConfig, load_space

BIG = ArchConfig(
    d_model=64,
    n_layers=4,
    layers=(LayerConfig(mixer="mdha", n_heads=8, head_dim=16, ffn_dim=256, dconv_kernel=3),) * 4,
)


def sub(n_layers: int = 2, **layer) -> ArchConfig:
    options = {"mixer": "mdha", "n_heads": 4, "head_dim": 16, "ffn_dim": 64, "dconv_kernel": 3}
    return ArchConfig(
        d_model=64, n_layers=n_layers, layers=(LayerConfig(**(options | layer)),) * n_layers
    )


def test_default_kept_keeps_the_first_layers_and_the_last():
    assert default_kept(4, 4) == (0, 1, 2, 3)
    assert default_kept(3, 5) == (0, 1, 4)
    assert default_kept(1, 3) == (2,)
    with pytest.raises(SubmodelError, match="n_layers 5 must be in 1..4"):
        default_kept(5, 4)


def test_a_nested_config_resolves():
    resolved = resolve(BIG, sub(3))
    assert resolved.kept == (0, 1, 3)
    assert resolve(BIG, sub(2), kept=(1, 2)).kept == (1, 2)
    assert resolve(BIG, BIG).kept == (0, 1, 2, 3)
    assert resolve(BIG, sub(2, bits=8)).config.layers[0].bits == 8  # bits are free
    assert resolve(BIG, sub(2, head_dim=0)).kept == (0, 3)  # 64 // 4 heads: the same 16


@pytest.mark.parametrize(
    "config, kept, message",
    [
        (sub(ffn_dim=512), None, "layer0: ffn_dim 512 exceeds the supernet's 256"),
        (sub(n_heads=9), None, "layer0: n_heads 9 exceeds the supernet's 8"),
        (sub(5), None, "n_layers 5 exceeds the supernet's 4"),
        (sub(n_heads=2, head_dim=0), None, "layer0: head size 32 differs .* set head_dim 16"),
        (sub(mixer="attention"), None, "layer0: mixer 'attention' differs"),
        (sub(activation="swiglu"), None, "layer0: activation 'swiglu' differs"),
        (sub(dconv_kernel=5), None, "layer0: dconv_kernel 5 differs"),
        (sub().replace(d_model=32), None, "d_model 32 differs from the supernet's 64"),
        (sub().replace(vocab_size=100), None, "vocab_size 100 differs"),
        (sub().replace(norm="rmsnorm"), None, "norm 'rmsnorm' differs"),
        (sub(2), (0, 1, 2), "kept lists 3 layers but n_layers is 2"),
        (sub(2), (2, 1), r"kept \[2, 1\] must be increasing indices in 0..3"),
        (sub(2), (0, 4), r"kept \[0, 4\] must be increasing"),
    ],
    ids=[
        "bigger-ffn",
        "more-heads",
        "more-layers",
        "wider-heads",
        "other-mixer",
        "other-activation",
        "other-dconv",
        "other-d-model",
        "other-vocab",
        "other-norm",
        "kept-length",
        "kept-order",
        "kept-range",
    ],
)
def test_configs_outside_the_supernet_are_refused(config, kept, message):
    with pytest.raises(SubmodelError, match=message) as info:
        resolve(BIG, config, kept)
    assert "\n" not in str(info.value)


def test_an_error_names_the_layer_and_the_supernet_layer():
    layers = (LayerConfig(n_heads=2, ffn_dim=32), LayerConfig(n_heads=2, ffn_dim=64))
    small = ArchConfig(d_model=32, n_layers=2, layers=layers)
    big = ArchConfig(d_model=32, n_layers=3, layers=(LayerConfig(n_heads=2, ffn_dim=48),) * 3)
    with pytest.raises(SubmodelError, match=r"^layer1: ffn_dim 64 .* \(supernet layer 2\)$"):
        resolve(big, small)


def test_heads_of_mixers_that_do_not_nest_must_match():
    big = ArchConfig(d_model=32, n_layers=1, layers=(LayerConfig(mixer="gla", n_heads=4),))
    small = ArchConfig(d_model=32, n_layers=1, layers=(LayerConfig(mixer="gla", n_heads=2),))
    with pytest.raises(SubmodelError, match="gla heads do not nest"):
        resolve(big, small)


def test_submodel_json_round_trip_and_bare_configs():
    resolved = resolve(BIG, sub(2), kept=(1, 3))
    config, kept = Submodel.parse(resolved.to_json())
    assert (config, kept) == (resolved.config, (1, 3))
    assert Submodel.parse(sub(2).to_json()) == (sub(2), None)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ("[]", "must be an object"),
        ('{"config": {}, "kept": [0], "extra": 1}', "unknown submodel field"),
        ('{"config": {}, "kept": "0,1"}', "must be a list of layer indices"),
        ('{"config": 3}', "'config' must be an object"),
        ('{"d_model": 64, "colour": 1}', "unknown config field"),
    ],
    ids=["not-json", "not-object", "extra-field", "kept-string", "config-scalar", "bad-config"],
)
def test_submodel_json_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        Submodel.parse(text)


def test_every_matformer_config_is_a_submodel_of_its_largest():
    space = load_space("matformer")
    big = largest(space)
    assert big.n_layers == 4
    assert {(layer.n_heads, layer.ffn_dim) for layer in big.layers} == {(8, 1024)}
    rng = np.random.default_rng(0)
    depths = set()
    for _ in range(100):
        config = space.sample(rng)
        depths.add(config.n_layers)
        assert resolve(big, config).kept == default_kept(config.n_layers, 4)
    assert depths == {2, 3, 4}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"global": {"d_model": {"choices": [32, 64]}}}, "d_model varies"),
        ({"per_layer": {"mixer": {"choices": ["attention", "pool"]}}}, "mixer varies"),
        ({"shared": {"activation": {"choices": ["gelu", "relu"]}}}, "activation varies"),
        ({"shared": {"n_heads": {"choices": [2, 4]}}}, "n_heads varies but head_dim is 0"),
    ],
    ids=["d-model", "mixer", "activation", "heads-without-head-dim"],
)
def test_spaces_that_do_not_nest_have_no_supernet(spec, message):
    space = DesignSpace.from_dict({"name": "x", "global": {"d_model": 64}} | spec)
    with pytest.raises(SubmodelError, match=message):
        largest(space)


def test_submodel_checks_do_not_import_torch():
    code = (
        "import sys\n"
        "from tnas.elastic import resolve, largest\n"
        "from tnas.space import load_space\n"
        "largest(load_space('matformer'))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
