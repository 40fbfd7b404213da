"""Every broken space file gives one line that says where (`file:line: `) and what is wrong."""

import pytest

from tnas.space import DesignSpace, SpaceError, load_space
from tnas.space.catalog import MIXERS
from tnas.space.config import DERIVED_NAMES

# id: (YAML text, line the error must point at (None: no line), phrases the message must contain)
CASES = {
    "not-yaml": (
        "name: x\nglobal:\n  d_model: {choices: [1, 2\n",
        4,
        ["not valid YAML"],
    ),
    "bad-indentation": (
        "name: x\nglobal:\n  d_model: 64\n n_layers: 2\n",
        4,
        ["not valid YAML"],
    ),
    "not-a-mapping": ("- a\n- b\n", 1, ["must be a mapping", "got list"]),
    "empty-file": ("", None, ["must be a mapping"]),
    "unknown-global-knob": (
        "name: x\nglobal:\n  d_modle: 64\n",
        3,
        ["unknown knob 'd_modle'", "valid: d_model, n_layers"],
    ),
    "unknown-layer-knob": (
        "name: x\nper_layer:\n  heads: {choices: [2]}\n",
        3,
        ["unknown knob 'heads'", "n_heads", "state_size"],
    ),
    "unknown-section": (
        "name: x\nglobals:\n  d_model: 64\n",
        2,
        ["unknown section 'globals'", "per_layer"],
    ),
    "unknown-mixer": (
        "name: x\nper_layer:\n  mixer:\n    choices:\n      - attention\n      - mamba\n",
        6,
        ["unknown mixer 'mamba'", ", ".join(MIXERS)],
    ),
    "unknown-activation": (
        "name: x\nshared:\n  activation: {choices: [gelu, swish]}\n",
        3,
        ["unknown activation 'swish'", "squared_relu"],
    ),
    "unknown-norm": (
        "name: x\nglobal:\n  norm: batchnorm\n",
        3,
        ["unknown norm 'batchnorm'", "layernorm, rmsnorm"],
    ),
    "unknown-bits": (
        "name: x\nper_layer:\n  bits: {choices: [32, 5]}\n",
        3,
        ["unknown bits 5", "32, 16, 8, 4"],
    ),
    "empty-choices": ("name: x\nglobal:\n  d_model: {choices: []}\n", 3, ["empty domain"]),
    "low-above-high": (
        "name: x\nglobal:\n  n_layers: {low: 5, high: 2}\n",
        3,
        ["empty domain", "low 5 > high 2"],
    ),
    "log-with-step": (
        "name: x\nper_layer:\n  state_size: {low: 8, high: 64, step: 8, log: true}\n",
        3,
        ["log range needs step 1"],
    ),
    "unknown-range-field": (
        "name: x\nglobal:\n  d_model: {low: 1, high: 2, stp: 1}\n",
        3,
        ["unknown field 'stp'", "low, high, step, log"],
    ),
    "bare-list": (
        "name: x\nglobal:\n  d_model: [64, 128]\n",
        3,
        ["{choices: [64, 128]}"],
    ),
    "not-an-integer": (
        "name: x\nglobal:\n  d_model: {choices: [64.5]}\n",
        3,
        ["must be an integer", "64.5"],
    ),
    "duplicate-choice": (
        "name: x\nglobal:\n  d_model: {choices: [64, 64]}\n",
        3,
        ["duplicate choice 64"],
    ),
    "range-for-a-name": (
        "name: x\nglobal:\n  norm: {low: 1, high: 2}\n",
        3,
        ["norm takes {choices: [...]}"],
    ),
    "layer-knob-in-global": (
        "name: x\nglobal:\n  d_model: 64\n  n_heads: 4\n",
        4,
        ["n_heads is a layer knob", "shared or per_layer"],
    ),
    "global-knob-in-shared": (
        "name: x\nshared:\n  d_model: 64\n",
        3,
        ["d_model is a global knob"],
    ),
    "knob-shared-and-per-layer": (
        "name: x\nshared:\n  ffn_dim: 64\nper_layer:\n  ffn_dim: {choices: [64]}\n",
        5,
        ["ffn_dim is in both shared and per_layer"],
    ),
    "duplicate-key": (
        "name: x\nglobal:\n  d_model: 64\n  d_model: 128\n",
        4,
        ["duplicate key 'd_model'"],
    ),
    "constraint-unknown-quantity": (
        "name: x\nconstraints:\n  - params <= 20e6\n  - flops <= 3\n",
        4,
        ["unknown quantity 'flops'", ", ".join(DERIVED_NAMES)],
    ),
    "constraint-syntax-error": (
        "name: x\nconstraints:\n  - params <=\n",
        3,
        ["'params <='", "not a valid expression"],
    ),
    "constraint-not-a-comparison": (
        "name: x\nconstraints:\n  - params + 1\n",
        3,
        ["is not a comparison"],
    ),
    "constraint-forbidden-call": (
        "name: x\nconstraints:\n  - __import__('os') == 1\n",
        3,
        ["only min, max, abs may be called"],
    ),
    "constraint-attribute": (
        "name: x\nconstraints:\n  - params.real <= 1\n",
        3,
        ["Attribute is not allowed"],
    ),
    "constraint-comparison-inside-arithmetic": (
        "name: x\nconstraints:\n  - (params <= 1) + 1 <= 2\n",
        3,
        ["is not a number"],
    ),
    "constraint-not-a-string": (
        "name: x\nconstraints:\n  - 3\n",
        3,
        ["valid string"],
    ),
    "unsatisfiable-constraint": (
        "name: x\nglobal:\n  n_layers: {low: 1, high: 4}\nconstraints:\n  - params <= 10\n",
        5,
        ["constraints are unsatisfiable: 0 of 2000 sampled configs satisfy 'params <= 10'"],
    ),
    "constraints-unsatisfiable-together": (
        "name: x\nglobal:\n  n_layers: {low: 1, high: 4}\n"
        "constraints:\n  - n_layers <= 1\n  - n_layers >= 3\n",
        4,
        ["constraints are unsatisfiable", "together"],
    ),
    "no-heads-divide-d-model": (
        "name: x\nglobal:\n  d_model: {choices: [100, 128]}\n"
        "shared:\n  n_heads: {choices: [8, 16]}\n",
        5,
        ["no n_heads in {8, 16} divides d_model 100"],
    ),
    "default-heads-do-not-divide": (
        "name: x\nglobal:\n  d_model: 30\n",
        3,
        ["no n_heads in 4 divides d_model 30"],
    ),
    "head-dim-searched": (
        "name: x\nper_layer:\n  head_dim: {choices: [16, 32]}\n",
        3,
        ["head_dim takes one value"],
    ),
    "classifier-without-classes": (
        "name: x\nglobal:\n  head: classifier\n",
        3,
        ["classifier head needs n_classes >= 2"],
    ),
}


@pytest.mark.parametrize("text, line, phrases", CASES.values(), ids=CASES.keys())
def test_error_is_one_located_line(tmp_path, text, line, phrases):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        DesignSpace.from_yaml(path)
    message = str(info.value)
    assert "\n" not in message
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(prefix), message
    for phrase in phrases:
        assert phrase in message, message


def test_space_error_is_a_value_error():
    assert issubclass(SpaceError, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpaceError, match="no such file") as info:
        load_space(path)
    assert str(info.value).startswith(str(path))


def test_unknown_preset_lists_presets():
    with pytest.raises(SpaceError, match="unknown preset; valid: primer, wide, mixers"):
        load_space("primr")


def test_from_dict_errors_carry_the_source():
    with pytest.raises(SpaceError) as info:
        DesignSpace.from_dict({"name": "x", "global": {"d_model": {"choices": []}}}, source="api")
    assert str(info.value) == "api: global.d_model: empty domain: no choices"


def test_a_valid_file_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "name: ok\npaper: none\ndescription: fine\n"
        "global:\n  d_model: {choices: [64, 128]}\n  n_layers: {low: 1, high: 3}\n"
        "per_layer:\n  mixer: {choices: [attention, ssm]}\n"
        "  state_size: {low: 4, high: 32, log: true}\n"
        "constraints:\n  - params <= 20e6\n  - 1 <= n_layers <= 3\n"
    )
    space = DesignSpace.from_yaml(path)
    assert (space.name, space.paper, space.description) == ("ok", "none", "fine")
    assert space.constraints == ("params <= 20e6", "1 <= n_layers <= 3")
    assert space.max_depth == 3
    assert load_space(str(path)).size() == space.size()


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "tiny_space.yaml"
    path.write_text("global:\n  d_model: {choices: [64, 128]}\n")
    assert DesignSpace.from_yaml(path).name == "tiny_space"
