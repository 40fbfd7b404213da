"""DesignSpace: sampling, membership, counting, search operators and Optuna."""

import itertools
import math
import re
import subprocess
import sys

import numpy as np
import optuna
import pytest

import tnas.space.constraints
import tnas.space.space
import tnas.space.yamlio
from tnas.space import ArchConfig, DesignSpace, LayerConfig, SpaceError
from tnas.space.config import ConfigError
from tnas.space.constraints import Constraint

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Small spaces whose every config can be enumerated by brute force.
SMALL_SPACES = {
    "per-layer-mixers-shared-options": {
        "name": "a",
        "global": {"d_model": {"choices": [6, 8, 12]}, "n_layers": {"low": 1, "high": 3}},
        "shared": {"n_heads": {"choices": [2, 3, 4]}, "conv_kernel": {"choices": [2, 3]}},
        "per_layer": {
            "mixer": {"choices": ["attention", "pool", "ssm"]},
            "state_size": {"choices": [4, 8]},
        },
    },
    "shared-mixer": {
        "name": "b",
        "global": {"d_model": {"choices": [4, 6]}, "n_layers": {"choices": [1, 3]}},
        "shared": {
            "mixer": {"choices": ["mdha", "long_conv", "ssm"]},
            "ffn_dim": {"low": 8, "high": 17, "step": 8},
        },
        "per_layer": {
            "n_heads": {"choices": [1, 2, 3]},
            "dconv_kernel": {"low": 2, "high": 3},
            "state_size": {"low": 1, "high": 3, "log": True},
        },
    },
    "mixed-scopes-and-heads": {
        "name": "c",
        "global": {
            "d_model": {"low": 4, "high": 8, "step": 2},
            "n_layers": {"low": 1, "high": 2},
            "norm": "rmsnorm",
            "head": {"choices": ["lm", "classifier"]},
            "tie_embeddings": {"choices": [True, False]},
            "n_classes": {"choices": [2, 5]},
        },
        "shared": {
            "activation": {"choices": ["gelu", "swiglu"]},
            "dconv_kernel": {"choices": [3, 5]},
        },
        "per_layer": {
            "mixer": {"choices": ["attention", "mdha", "long_conv"]},
            "n_heads": {"choices": [1, 2, 4]},
            "bits": {"choices": [32, 8]},
        },
    },
    "all-fixed-but-depth": {
        "name": "d",
        "global": {"d_model": 8, "n_layers": {"choices": [1, 2, 5]}},
    },
}


def _values(spec):
    if isinstance(spec, dict) and "choices" in spec:
        return spec["choices"]
    if isinstance(spec, dict):
        return list(range(spec["low"], spec["high"] + 1, spec.get("step", 1)))
    return [spec]


def brute_force(data) -> set[ArchConfig]:
    """Every distinct config, by trying every combination of every value (invisible ones too)."""
    global_names = list(data.get("global", {}))
    shared_names = list(data.get("shared", {}))
    per_layer_names = list(data.get("per_layer", {}))
    configs = set()
    for global_values in itertools.product(*(_values(data["global"][k]) for k in global_names)):
        globals_ = dict(zip(global_names, global_values, strict=True))
        n_layers = globals_.get("n_layers", 4)
        for shared_values in itertools.product(*(_values(data["shared"][k]) for k in shared_names)):
            shared = dict(zip(shared_names, shared_values, strict=True))
            one_layer = list(
                itertools.product(*(_values(data["per_layer"][k]) for k in per_layer_names))
            )
            for layer_values in itertools.product(one_layer, repeat=n_layers):
                layers = [
                    LayerConfig(**shared, **dict(zip(per_layer_names, values, strict=True)))
                    for values in layer_values
                ]
                try:
                    configs.add(ArchConfig(**globals_, layers=tuple(layers)))
                except ConfigError:
                    pass
    return configs


@pytest.mark.parametrize("data", SMALL_SPACES.values(), ids=SMALL_SPACES.keys())
def test_size_matches_brute_force(data):
    space = DesignSpace.from_dict(data)
    everything = brute_force(data)
    assert space.size() == len(everything)
    assert space.log10_size() == pytest.approx(math.log10(len(everything)))
    for config in list(everything)[:300]:
        assert space.contains(config), config
        assert space.from_flat(space.to_flat(config)) == config
    rng = np.random.default_rng(0)
    for _ in range(100):
        assert space.sample(rng) in everything


@pytest.fixture(params=sorted(SMALL_SPACES) + ["primer", "mixers", "wide"])
def space(request):
    if request.param in SMALL_SPACES:
        return DesignSpace.from_dict(SMALL_SPACES[request.param])
    return tnas.space.load_space(request.param)


def test_mutate_and_crossover_stay_in_the_space(space):
    rng = np.random.default_rng(2)
    parents = [space.sample(rng) for _ in range(10)]
    for a, b in zip(parents, parents[1:], strict=False):
        child = space.crossover(a, b, rng)
        assert space.contains(child)
        assert child.n_layers in (a.n_layers, b.n_layers)
        mutant = space.mutate(a, rng, prob=0.3)
        assert space.contains(mutant)


def test_mutate_changes_something():
    space = tnas.space.load_space("mixers")
    rng = np.random.default_rng(3)
    config = space.sample(rng)
    assert any(space.mutate(config, rng) != config for _ in range(5))


def test_crossover_takes_values_from_the_parents():
    space = tnas.space.load_space("primer")
    rng = np.random.default_rng(4)
    a, b = space.sample(rng), space.sample(rng)
    child = space.to_flat(space.crossover(a, b, rng))
    flat_a, flat_b = space.to_flat(a), space.to_flat(b)
    for key, value in child.items():
        if key.endswith("n_heads"):
            continue  # may be repaired when d_model comes from the other parent
        assert value in (flat_a.get(key), flat_b.get(key))


PARAM_NAME = re.compile(
    r"^(d_model|n_layers|norm|mixer|activation|n_heads|ffn_dim|bits|conv_kernel|state_size|"
    r"dconv_kernel|head|tie_embeddings|n_classes|vocab_size|max_seq_len|"
    r"layer\d+\.(mixer|n_heads|ffn_dim|activation|bits|dconv_kernel|conv_kernel|state_size))$"
)


@pytest.mark.parametrize("name", ["primer", "mixers", "wide"])
def test_suggest_with_a_real_study(name):
    space = tnas.space.load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(15):
        trial = study.ask()
        config = space.suggest(trial)
        assert all(PARAM_NAME.match(key) for key in trial.params)
        assert set(trial.params) == set(space.to_flat(config))
        assert space.from_flat(trial.params) == config
        for key, value in space.to_flat(config).items():
            if not key.endswith("n_heads"):
                assert trial.params[key] == value
        study.tell(trial, float(config.derived()["params"]))
    assert len(study.trials) == 15


def test_suggest_only_asks_what_a_layer_uses():
    space = tnas.space.load_space("mixers")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        config = space.suggest(trial)
        for i, layer in enumerate(config.layers):
            assert (f"layer{i}.n_heads" in trial.params) == layer.uses_heads
            assert (f"layer{i}.state_size" in trial.params) == (layer.mixer == "ssm")
        assert not any(key.startswith(f"layer{config.n_layers}.") for key in trial.params)
        study.tell(trial, 0.0)


def test_flat_round_trips(space):
    rng = np.random.default_rng(5)
    for _ in range(30):
        config = space.sample(rng)
        flat = space.to_flat(config)
        assert space.from_flat(flat) == config
        assert space.to_flat(space.from_flat(flat)) == flat


def test_from_flat_repairs_n_heads():
    space = DesignSpace.from_dict(
        {
            "name": "repair",
            "global": {"d_model": {"choices": [6, 8]}, "n_layers": 1},
            "per_layer": {"n_heads": {"choices": [3, 4]}},
        }
    )
    assert space.from_flat({"d_model": 8, "layer0.n_heads": 3}).layers[0].n_heads == 4
    assert space.from_flat({"d_model": 6, "layer0.n_heads": 4}).layers[0].n_heads == 3
    space = DesignSpace.from_dict(
        {
            "name": "repair",
            "global": {"d_model": {"choices": [12, 16]}, "n_layers": 1},
            "shared": {"n_heads": {"choices": [1, 2, 3, 4, 6, 8]}},
        }
    )
    assert space.from_flat({"d_model": 16, "n_heads": 6}).layers[0].n_heads == 4
    assert space.from_flat({"d_model": 12, "n_heads": 8}).layers[0].n_heads == 6


def test_from_flat_rejects_missing_or_out_of_domain_values():
    space = tnas.space.load_space("primer")
    flat = space.to_flat(space.sample(np.random.default_rng(0)))
    with pytest.raises(SpaceError, match="no value for 'd_model'"):
        space.from_flat({k: v for k, v in flat.items() if k != "d_model"})
    with pytest.raises(SpaceError, match="not in its domain"):
        space.from_flat(flat | {"d_model": 100})
    assert space.from_flat(flat | {"learning_rate": 0.1}) == space.from_flat(flat)


def test_sample_picks_only_dividing_heads():
    space = DesignSpace.from_dict(
        {
            "name": "div",
            "global": {"d_model": {"choices": [6, 8]}, "n_layers": 3},
            "per_layer": {"n_heads": {"choices": [2, 3, 4]}},
        }
    )
    rng = np.random.default_rng(0)
    seen = {
        (c.d_model, layer.n_heads)
        for c in (space.sample(rng) for _ in range(200))
        for layer in c.layers
    }
    assert seen == {(6, 2), (6, 3), (8, 2), (8, 4)}


def test_contains_rejects_configs_outside():
    space = tnas.space.load_space("primer")
    config = space.sample(np.random.default_rng(0))
    assert space.contains(config)
    assert not space.contains(config.replace(vocab_size=512))  # fixed knob differs
    assert not space.contains(config.replace(d_model=512, layers=()))  # d_model out of domain
    layers = (LayerConfig(mixer="pool"),) * config.n_layers
    assert not space.contains(config.replace(layers=layers))  # mixer out of domain
    assert not space.contains(ArchConfig(d_model=128, n_layers=7))  # too deep
    assert not space.contains("not a config")


def test_contains_rejects_unequal_shared_values():
    space = DesignSpace.from_dict(
        {
            "name": "s",
            "global": {"d_model": 8, "n_layers": 2},
            "shared": {"ffn_dim": {"choices": [8, 16]}},
        }
    )
    equal = ArchConfig(d_model=8, n_layers=2, layers=(LayerConfig(n_heads=4, ffn_dim=8),) * 2)
    unequal = equal.replace(
        layers=(LayerConfig(n_heads=4, ffn_dim=8), LayerConfig(n_heads=4, ffn_dim=16))
    )
    assert space.contains(equal)
    assert not space.contains(unequal)


def test_contains_and_constraints_agree():
    space = DesignSpace.from_dict(
        {
            "name": "c",
            "global": {"d_model": 64, "n_layers": {"low": 1, "high": 6}},
            "constraints": ["n_layers <= 3", "params >= 0"],
        }
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert space.sample(rng).n_layers <= 3
    deep = ArchConfig(d_model=64, n_layers=5)
    assert not space.feasible(deep) and not space.contains(deep)
    assert space.constraint_values(deep)[0] == 2.0
    assert space.constraint_values(ArchConfig(d_model=64, n_layers=2))[0] == -1.0


@pytest.mark.parametrize(
    "text, quantities, value",
    [
        ("params <= 20e6", {"params": 1e6}, -19e6),
        ("params >= 10", {"params": 4}, 6.0),
        ("total_heads == 16", {"total_heads": 12}, 4.0),
        ("total_heads == 16", {"total_heads": 16}, 0.0),
        ("n_layers != 3", {"n_layers": 3}, 1.0),
        ("1 <= n_layers <= 4", {"n_layers": 6}, 2.0),
        ("n_layers < 4", {"n_layers": 4}, 1e-9),
        ("-d_model * 2 + max(d_model, 3) // 1 % 7 ** 2 < abs(-5)", {"d_model": 10}, -15.0),
        ("params <= 10 and n_layers >= 2", {"params": 5, "n_layers": 3}, 0.0),
        ("params <= 10 or n_layers >= 2", {"params": 50, "n_layers": 1}, 1.0),
        ("not params <= 10", {"params": 50}, 0.0),
        ("params / attention_layers <= 1", {"params": 5, "attention_layers": 0}, math.inf),
    ],
)
def test_constraint_values(text, quantities, value):
    rule = Constraint.parse(text)
    assert rule.value(quantities) == pytest.approx(value)
    assert rule.holds(quantities) == (rule.value(quantities) <= 0)


def test_feasible_matches_constraint_values():
    space = tnas.space.load_space("wide")
    rng = np.random.default_rng(0)
    for _ in range(50):
        config = space._build({}, rng)  # unconstrained
        assert space.feasible(config) == all(v <= 0 for v in space.constraint_values(config))


def test_describe_rows():
    rows = tnas.space.load_space("mixers").describe()
    scopes = {knob: scope for knob, scope, _ in rows}
    assert scopes["mixer"] == "per-layer"
    assert scopes["activation"] == "shared"
    assert scopes["vocab_size"] == "fixed"
    assert scopes["d_model"] == "global"
    assert all(len(row) == 3 and all(isinstance(x, str) for x in row) for row in rows)


def test_import_does_not_load_torch_or_optuna():
    code = (
        "import sys, tnas.space\n"
        "tnas.space.load_space('mixers')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'optuna' not in sys.modules, 'optuna imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_fixed_head_dim_allows_head_counts_that_do_not_divide_d_model():
    space = tnas.space.DesignSpace.from_dict(
        {
            "name": "heads",
            "global": {"d_model": 60, "n_layers": 2},
            "shared": {"n_heads": {"choices": [4, 8]}, "head_dim": 16},
        }
    )
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(20)]
    assert {c.layers[0].n_heads for c in configs} == {4, 8}
    assert all(c.layers[0].head_dim == 16 and space.contains(c) for c in configs)
    assert space.size() == 2
