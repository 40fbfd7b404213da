"""ArchConfig as a storage key: exact JSON round trip and a hash that never changes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tnas.space import ArchConfig, ConfigError, LayerConfig, load_space
from tnas.space.catalog import ACTIVATIONS, BITS, HEADS, MIXERS, NORMS

GOLDEN = ArchConfig(
    d_model=64,
    n_layers=2,
    layers=(
        LayerConfig(mixer="attention", n_heads=4, ffn_dim=128),
        LayerConfig(mixer="ssm", state_size=8, conv_kernel=4, ffn_dim=256, activation="swiglu"),
    ),
)
# Changing this value means every stored result loses its key: only on purpose, with a migration.
GOLDEN_HASH = "706e58d84f780f794545a82ba0f7761ad92b41eba3fb07de18943844413261db"


@st.composite
def layer_configs(draw, d_model: int) -> LayerConfig:
    divisors = [n for n in range(1, 17) if d_model % n == 0]
    return LayerConfig(
        mixer=draw(st.sampled_from(sorted(MIXERS))),
        n_heads=draw(st.sampled_from(divisors)),
        ffn_dim=draw(st.integers(1, 4096)),
        activation=draw(st.sampled_from(sorted(ACTIVATIONS))),
        bits=draw(st.sampled_from(BITS)),
        dconv_kernel=draw(st.integers(1, 7)),
        conv_kernel=draw(st.integers(1, 7)),
        state_size=draw(st.integers(1, 128)),
        head_dim=draw(st.sampled_from([0, 0, 8, 16, 24])),
    )


@st.composite
def arch_configs(draw) -> ArchConfig:
    d_model = draw(st.sampled_from([16, 24, 32, 48, 64, 96, 128, 256]))
    n_layers = draw(st.integers(1, 5))
    head = draw(st.sampled_from(HEADS))
    return ArchConfig(
        d_model=d_model,
        n_layers=n_layers,
        vocab_size=draw(st.integers(2, 50_000)),
        max_seq_len=draw(st.integers(1, 4096)),
        norm=draw(st.sampled_from(NORMS)),
        tie_embeddings=draw(st.booleans()),
        head=head,
        n_classes=draw(st.integers(2, 10)) if head == "classifier" else 0,
        layers=tuple(draw(layer_configs(d_model)) for _ in range(n_layers)),
    )


@given(arch_configs())
def test_json_round_trip_is_exact(config):
    text = config.to_json()
    again = ArchConfig.from_json(text)
    assert again == config
    assert again.to_json() == text
    assert again.hash == config.hash
    assert json.loads(text) == config.to_dict()


@given(arch_configs())
def test_to_json_is_canonical(config):
    text = config.to_json()
    assert " " not in text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    rebuilt = ArchConfig.from_dict(json.loads(text))
    assert rebuilt.to_json() == text


def test_golden_hash():
    assert GOLDEN.hash == GOLDEN_HASH
    assert GOLDEN.short_hash == GOLDEN_HASH[:12]


def test_hash_is_the_same_in_a_fresh_process():
    rng = np.random.default_rng(7)
    configs = [GOLDEN] + [load_space(name).sample(rng) for name in ("primer", "mixers", "simq")]
    script = (
        "import json, sys\n"
        "from tnas.space import ArchConfig\n"
        "texts = json.loads(sys.stdin.read())\n"
        "print(json.dumps([ArchConfig.from_json(t).hash for t in texts]))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([c.to_json() for c in configs]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(result.stdout) == [c.hash for c in configs]


def test_unused_options_are_zeroed_so_equal_networks_hash_equal():
    a = LayerConfig(mixer="pool", n_heads=4, conv_kernel=3, state_size=99)
    b = LayerConfig(mixer="pool", n_heads=8, conv_kernel=3, state_size=1)
    assert a == b
    config_a = ArchConfig(d_model=64, n_layers=1, layers=(a,))
    config_b = ArchConfig(d_model=64, n_layers=1, layers=(b,))
    assert config_a.hash == config_b.hash


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[1, 2]", "must be an object"),
        ("{", "not valid JSON"),
        ('{"d_model": 64, "colour": 1}', "unknown config field"),
        ('{"d_model": 60, "n_layers": 1, "layers": [{"n_heads": 8}]}', "not divisible"),
    ],
    ids=["not-object", "not-json", "unknown-field", "heads-divisibility"],
)
def test_from_json_errors(text, problem):
    with pytest.raises(ConfigError, match=problem):
        ArchConfig.from_json(text)


def test_head_dim_zero_is_left_out_of_the_json():
    assert "head_dim" not in GOLDEN.to_json()
    wide = ArchConfig(
        d_model=64, n_layers=1, layers=(LayerConfig(n_heads=2, head_dim=16, ffn_dim=128),)
    )
    assert json.loads(wide.to_json())["layers"][0]["head_dim"] == 16
    assert ArchConfig.from_json(wide.to_json()) == wide


def test_head_dim_equal_to_the_default_is_stored_as_zero():
    explicit = ArchConfig(
        d_model=64, n_layers=1, layers=(LayerConfig(n_heads=4, head_dim=16, ffn_dim=128),)
    )
    implicit = ArchConfig(d_model=64, n_layers=1, layers=(LayerConfig(n_heads=4, ffn_dim=128),))
    assert explicit == implicit and explicit.hash == implicit.hash
    assert explicit.layers[0].head_dim == 0


def test_head_dim_lifts_the_divisibility_rule():
    config = ArchConfig(
        d_model=60, n_layers=1, layers=(LayerConfig(n_heads=8, head_dim=8, ffn_dim=64),)
    )
    assert config.layers[0].head_dim == 8
    with pytest.raises(ConfigError, match="not divisible"):
        ArchConfig(d_model=60, n_layers=1, layers=(LayerConfig(n_heads=8, ffn_dim=64),))


def test_head_dim_is_zeroed_for_mixers_that_do_not_read_it():
    assert LayerConfig(mixer="gla", n_heads=4, head_dim=16).head_dim == 0
    assert LayerConfig(mixer="mdha", n_heads=4, head_dim=16).head_dim == 16
    with pytest.raises(ConfigError, match="head_dim must be >= 0"):
        LayerConfig(mixer="attention", head_dim=-1)
