"""Hostile input: every loader either loads or refuses in one line with its own error type;
checkpoints are never unpickled; names and output paths cannot climb out; passwords are never
printed or stored; servers listen on loopback by default (issue 8)."""

from __future__ import annotations

import ast
import copy
import json
import os
import pickle
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

import tnas
from tests.conftest import write_replay_table
from tnas.cli import app
from tnas.safety import UnsafeInput, output_path, redact_url, safe_name
from tnas.search.run import RunError, RunSpec
from tnas.space import PRESETS, ArchConfig, ConfigError, DesignSpace, SpaceError

runner = CliRunner()
FUZZ = settings(
    max_examples=200,
    # The same examples on every run, so CI never fails by the luck of a draw;
    # TNAS_FUZZ_RANDOM=1 draws new ones, to look for what these miss.
    derandomize=os.environ.get("TNAS_FUZZ_RANDOM", "") != "1",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SCRATCH = Path(tempfile.mkdtemp(prefix="tnas-hostile-"))  # one file per kind, rewritten

WORDS = [
    *("name", "paper", "description", "global", "shared", "per_layer", "constraints"),
    *("choices", "low", "high", "step", "log"),
    *("d_model", "n_layers", "vocab_size", "max_seq_len", "norm", "head", "n_classes"),
    *("tie_embeddings", "mixer", "n_heads", "ffn_dim", "activation", "bits", "head_dim"),
    *("attention", "mdha", "ssm", "pool", "gelu", "swiglu", "layernorm", "classifier", "lm"),
    *("params <= 20e6", "total_heads >= 4", "n_layers <= 2 or params > 1e300"),
    *(*RunSpec.model_fields, "nsga2", "linas", "digits", "accuracy:max", "latency_ms:min"),
]
HUGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**63, -(2**63), 10**30, 10**4000]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(),  # NaN and +-inf included
    st.text(max_size=30),
    st.sampled_from(WORDS),
)
KEYS = st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.integers(), st.booleans())
NESTED = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=40,
)
PRESET_DATA = {
    name: yaml.safe_load(
        resources.files("tnas.space").joinpath("presets", f"{name}.yaml").read_text()
    )
    for name in PRESETS
}


def scratch_file(text: str, name: str = "input.yaml") -> Path:
    path = SCRATCH / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def as_yaml(data) -> str | None:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, ValueError):  # a key YAML cannot write
        return None


def loads_or_one_line(load, error_type) -> None:
    """`load()` succeeds or raises `error_type` with a short one-line message; any other
    exception fails the test with its traceback."""
    try:
        load()
    except error_type as err:
        message = str(err)
        assert message and "\n" not in message and len(message) <= 2000, message


def load_space_text(text: str) -> None:
    loads_or_one_line(lambda: DesignSpace.from_yaml(scratch_file(text)), SpaceError)


def load_run_text(text: str) -> None:
    loads_or_one_line(lambda: RunSpec.from_yaml(scratch_file(text, "run.yaml")), RunError)


def key_paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from key_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from key_paths(value, (*prefix, i))


@st.composite
def mutated_presets(draw):
    """A preset with 1-4 entries deleted, replaced by anything, or renamed; constraints are
    mostly dropped (checking them samples 2,000 configs, too slow for hundreds of examples)."""
    data = copy.deepcopy(PRESET_DATA[draw(st.sampled_from(PRESETS))])
    if draw(st.integers(0, 3)):
        data.pop("constraints", None)
    for _ in range(draw(st.integers(1, 4))):
        paths = [path for path in key_paths(data) if path]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "rename"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(NESTED)
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = parent.pop(path[-1])
    return data


INTS = st.one_of(st.integers(-3, 40), st.sampled_from(HUGE_INTS[:-1]))
DOMAINS = st.one_of(
    SCALARS,
    INTS,
    st.lists(INTS, max_size=3),
    st.builds(lambda values: {"choices": values}, st.lists(SCALARS | INTS, max_size=5)),
    st.fixed_dictionaries({"low": INTS, "high": INTS}, optional={"step": INTS, "log": SCALARS}),
)
GLOBAL_KNOBS = ["d_model", "n_layers", "vocab_size", "max_seq_len", "norm", "head", "n_classes"]
LAYER_KNOBS = ["mixer", "n_heads", "ffn_dim", "activation", "bits", "head_dim", "state_size"]


# The design-space loader ------------------------------------------------------------------


@FUZZ
@given(st.text())
def test_space_loader_on_any_text(text):
    load_space_text(text)


@FUZZ
@given(NESTED)
def test_space_loader_on_any_structure(data):
    text = as_yaml(data)
    if text is not None:
        load_space_text(text)
    loads_or_one_line(lambda: DesignSpace.from_dict(data), SpaceError)


@settings(FUZZ, max_examples=100)
@given(mutated_presets())
def test_space_loader_on_mutated_presets(data):
    text = as_yaml(data)
    if text is not None:
        load_space_text(text)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(GLOBAL_KNOBS), DOMAINS, max_size=4),
    st.dictionaries(st.sampled_from(LAYER_KNOBS), DOMAINS, max_size=4),
    st.sampled_from(["shared", "per_layer"]),
)
def test_space_loader_on_knob_domains(global_knobs, layer_knobs, scope):
    load_space_text(as_yaml({"name": "x", "global": global_knobs, scope: layer_knobs}))


@settings(FUZZ, max_examples=50)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=40)), max_size=3))
def test_space_loader_on_constraints(constraints):
    text = as_yaml(
        {"global": {"d_model": 64, "n_layers": {"low": 1, "high": 2}}, "constraints": constraints}
    )
    load_space_text(text)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
HOSTILE_YAML = {
    "alias-bomb": (BOMB, "more than 100000 values"),
    "alias-to-itself": ("global: &a {d_model: [*a]}\n", "nested more than"),
    "deep-flow": ("global: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
    "deep-block": ("".join("  " * i + f"k{i}:\n" for i in range(200)), "nested more than"),
    "python-tag": ("name: !!python/object/apply:os.system ['true']\n", "valid string"),
    "python-scalar-tag": ("name: !!python/name:os.system\n", "could not determine a constructor"),
    "control-character": ("name: a\x07b\n", "not valid YAML"),
    "int-of-5000-digits": ("global:\n  d_model: " + "9" * 5000 + "\n", "not valid YAML"),
    "mapping-as-key": ("global:\n  ? {a: 1}\n  : 2\n", "unsupported key"),
    "huge-range": (
        "global:\n  d_model: {low: 8, high: 100000000000000, step: 8}\n",
        "<= 2147483647",
    ),
    "long-enumerated-range": (
        "global:\n  d_model: {low: 8, high: 80000, step: 8}\n",
        "at most 1024",
    ),
    "deep-model": ("global:\n  n_layers: 1000000000\n", "<= 256"),
    "long-constraint": (
        "constraints: ['" + " + ".join(["params"] * 5000) + " <= 1']\n",
        "at most 1000",
    ),
    "nested-constraint": ("constraints: ['" + "-" * 500 + "params <= 1']\n", "nested more than"),
    "null-byte-constraint": ('constraints: ["params\\0 <= 1"]\n', "not a valid expression"),
}


@pytest.mark.parametrize("text, phrase", HOSTILE_YAML.values(), ids=HOSTILE_YAML.keys())
def test_hostile_yaml_is_refused_in_one_line(tmp_path, text, phrase):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(text)
    with pytest.raises(SpaceError) as info:
        DesignSpace.from_yaml(space_file)
    message = str(info.value)
    assert "\n" not in message and phrase in message and len(message) <= 1000
    result = runner.invoke(app, ["space", "validate", str(space_file)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output


@settings(FUZZ, max_examples=60)
@given(
    st.one_of(
        st.text(), NESTED.map(as_yaml).filter(bool), mutated_presets().map(as_yaml).filter(bool)
    )
)
def test_space_validate_cli_is_ok_or_one_line_exit_2(text):
    result = runner.invoke(app, ["space", "validate", str(scratch_file(text))])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.startswith("error: ") and result.output.count("\n") == 1


# The run-file loader -----------------------------------------------------------------------

RUN_VALUES = {
    "space": st.sampled_from([*PRESETS, "nope", "../x.yaml", ""]),
    "task": st.sampled_from(["digits", "mqar", "x:Y", "", "digits,tokens=pixel"]),
    "objectives": st.lists(st.sampled_from(["accuracy:max", "latency_ms:min", "x", ":max"])),
    "constraints": st.lists(st.sampled_from(["params <= 2e6", "params", "flops < 1"])),
    "trials": st.sampled_from([1, 2, 0, -1, 2**31, 1.5]),
    "sampler": st.sampled_from(["nsga2", "tpe", "random", "cmaes"]),
    "seed": st.sampled_from([0, 3, -1, 2**32, 2**70]),
    "study": st.sampled_from(["demo", "a.b_c-1", "../x", "a/b", ".hidden", "x" * 200, ""]),
    "population_size": st.sampled_from([2, 16, 1, 0]),
    "lr": st.sampled_from([1e-3, 0.0, float("nan"), float("inf")]),
    "timeout": st.sampled_from([None, 10.0, -1.0, float("nan")]),
    "workers": st.sampled_from([0, 2, -1, 10**6]),
}


@FUZZ
@given(st.text())
def test_run_file_loader_on_any_text(text):
    load_run_text(text)


@FUZZ
@given(NESTED)
def test_run_file_loader_on_any_structure(data):
    text = as_yaml(data)
    if text is not None:
        load_run_text(text)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([*RunSpec.model_fields, "nope"]),
        st.one_of(SCALARS, st.lists(SCALARS, max_size=3), NESTED),
        max_size=6,
    )
)
def test_run_file_loader_on_any_settings(data):
    text = as_yaml(data)
    if text is not None:
        load_run_text(text)


@settings(FUZZ, max_examples=40)
@given(st.fixed_dictionaries({}, optional=RUN_VALUES))
def test_search_launch_on_fuzzed_run_files_is_ok_or_one_line(replay_table, quiet_optuna, data):
    """Whole launches (2 replayed trials): a run file either searches or is refused in one
    line with exit code 2, whatever its settings."""
    run_file = scratch_file(yaml.safe_dump(data), "run.yaml")
    storage = f"sqlite:///{SCRATCH / 'fuzz.db'}"
    result = runner.invoke(
        app,
        ["search", "launch", str(run_file), "--evaluator", f"replay:{replay_table}",
         "--workers", "0", "--trials", "2", "--storage", storage],
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.startswith("error: ") and result.output.count("\n") == 1


@pytest.mark.parametrize(
    "text, phrase",
    [
        (BOMB, "more than 100000 values"),
        ("study: &a [*a]\n", "nested more than"),
        ("trials: 10\n5: x\n", "a setting's name must be a string"),
        ("trials: 10\nsteps: 5\nsteppes: 3\n", "run.yaml:3: unknown run setting 'steppes'"),
        ("trials: 10\nseed: -4\n", "run.yaml:2: run setting seed: must be from 0 to"),
        ("study: ../../etc/x\n", "run.yaml:1: run setting study: '../../etc/x' is not allowed"),
        ("lr: .nan\n", "must be a finite number > 0"),
        ("workers: 100000\n", "must be from 0 to 1024"),
        ("name: a\x0eb\n", "not valid YAML"),
        ("- trials\n", "must be a mapping"),
    ],
)
def test_hostile_run_files_are_refused_in_one_line(tmp_path, text, phrase):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(text)
    with pytest.raises(RunError) as info:
        RunSpec.from_yaml(run_file)
    message = str(info.value)
    assert "\n" not in message and phrase in message, message


@pytest.mark.parametrize("kind", ["directory", "device", "huge", "not-utf8"])
def test_files_that_are_not_small_text_are_refused_in_one_line(tmp_path, kind):
    path = {"directory": tmp_path, "device": Path("/dev/zero")}.get(kind, tmp_path / "x.yaml")
    if kind == "huge":
        path.write_text("name: " + "a" * 2_000_000 + "\n")
    elif kind == "not-utf8":
        path.write_bytes(b"name: \xff\n")
    phrase = {"directory": "Is a directory", "device": "not a regular file"}.get(
        kind, "larger than" if kind == "huge" else "not UTF-8"
    )
    with pytest.raises(RunError, match=f"cannot read the run file: {phrase}"):
        RunSpec.from_yaml(path)
    result = runner.invoke(app, ["space", "validate", str(path)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and phrase in result.output


@FUZZ
@given(NESTED)
def test_config_json_is_a_config_or_one_line(data):
    try:
        text = json.dumps(data)
    except ValueError:  # an integer too long to write
        return
    loads_or_one_line(lambda: ArchConfig.from_json(text), ConfigError)


def test_a_huge_depth_is_refused_before_any_layer_is_built():
    with pytest.raises(ConfigError, match="n_layers must be at most 256"):
        ArchConfig.from_json('{"n_layers": 1000000000}')


# Checkpoints are never unpickled ---------------------------------------------------------

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
PACKAGE = Path(tnas.__file__).parent


def package_sources():
    return sorted(PACKAGE.rglob("*.py"))


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def unsafe_loads(source: str, label: str) -> list[str]:
    """Lines of `source` that import a pickle module, call torch.load without
    weights_only=True, load YAML with a loader that builds objects, or call eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source, filename=label)):
        where = f"{label}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else names
            if any(module.split(".")[0] in PICKLE_MODULES for module in modules):
                found.append(f"{where}: imports {', '.join(modules)}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and "load" in names:
                found.append(f"{where}: from torch import load")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name == "torch.load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where}: {name}")
        if name.endswith("np.load") or name.endswith("numpy.load"):
            pickled = keywords.get("allow_pickle")
            if not (pickled is None or (isinstance(pickled, ast.Constant) and not pickled.value)):
                found.append(f"{where}: np.load with allow_pickle")
        if name.endswith("read_pickle") or name in ("eval", "exec"):
            found.append(f"{where}: {name}")
    return found


def test_the_scan_finds_what_it_looks_for():
    source = (
        "import pickle\nimport torch\nimport yaml\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\ntorch.load('x', weights_only=True)\n"
        "yaml.load('a')\neval('1')\n"
    )
    found = unsafe_loads(source, "planted.py")
    assert [line.split(": ", 1)[1] for line in found] == [
        "imports pickle",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "yaml.load",
        "eval",
    ]


def test_no_module_unpickles_or_loads_unsafely():
    sources = package_sources()
    assert len(sources) > 50 and PACKAGE / "nn" / "checkpoint.py" in sources
    found = [
        line
        for path in sources
        for line in unsafe_loads(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    ]
    assert not found, "\n".join(found)


class Payload:
    """Creates `marker` when unpickled: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def disguised_checkpoint(kind: str, path: Path, marker: Path) -> Path:
    """A file carrying the payload: a torch.save zip, or a bare pickle."""
    import torch

    if kind == "torch-save":
        torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"payload": Payload(marker)}))
    return path


DISGUISES = ["torch-save", "bare-pickle"]


@pytest.mark.parametrize("kind", DISGUISES)
def test_the_payload_runs_when_unpickled(tmp_path, kind):
    import torch

    marker = tmp_path / "pwned"
    disguised = disguised_checkpoint(kind, tmp_path / "x.pt", marker)  # torch.load reads
    # a file named .safetensors as safetensors
    if kind == "torch-save":
        torch.load(disguised, weights_only=False)  # what an unsafe loader would do
    else:
        pickle.loads(disguised.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("kind", DISGUISES)
def test_pickles_disguised_as_checkpoints_are_refused_and_never_run(tmp_path, kind):
    from tnas.elastic import load_supernet
    from tnas.nn.checkpoint import CheckpointError, load_model, read_safetensors

    marker = tmp_path / "pwned"
    config = ArchConfig(d_model=16, n_layers=1, vocab_size=32, max_seq_len=8)
    supernet = disguised_checkpoint(kind, tmp_path / "supernet.safetensors", marker)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(config.to_json())
    disguised_checkpoint(kind, model_dir / "model.safetensors", marker)
    for load, argument in (
        (read_safetensors, supernet),
        (load_supernet, supernet),
        (load_model, model_dir),
        (tnas.load_model, model_dir),
    ):
        with pytest.raises(CheckpointError) as info:
            load(argument)
        message = str(info.value)
        assert "\n" not in message and "not a readable safetensors file" in message
    sub = tmp_path / "sub.json"
    sub.write_text(config.to_json())
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["extract", "--supernet", str(supernet), "--config", str(sub), "--out", str(out)]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "not a readable safetensors file" in result.output
    assert not out.exists()
    assert not marker.exists()


def test_a_header_cannot_ask_for_a_model_the_file_does_not_hold(tmp_path):
    import torch
    from safetensors.torch import save_file

    from tnas.nn.checkpoint import CheckpointError, load_model

    huge = ArchConfig(d_model=2**20, n_layers=256, vocab_size=2**20, max_seq_len=8)
    (tmp_path / "config.json").write_text(huge.to_json())
    metadata = {"tnas.kind": "model", "tnas.config_hash": huge.hash}
    save_file({"x": torch.zeros(4)}, tmp_path / "model.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match="parameters but the file holds 4 numbers"):
        load_model(tmp_path)


# Names and output paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["demo", "s", "mine", "primer-digits-nsga2-s0", "a.b_c-1", "Z9", "x" * 128]
)
def test_safe_names_pass(name):
    assert safe_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "a/b",
        "a\\b",
        ".hidden",
        "-rf",
        "_x",
        "x" * 129,
        "a b",
        "é",
        "a\n",
        "\x1b[31m",
        "..",
        None,
        5,
    ],
)
def test_unsafe_names_are_refused_in_one_line(name):
    with pytest.raises(UnsafeInput) as info:
        safe_name(name)
    assert "\n" not in str(info.value) and "letters, digits" in str(info.value)


@pytest.mark.parametrize(
    "args",
    [
        ["search", "launch", "--study", "../x"],
        ["search", "resume", "../x"],
        ["trials", "a/b"],
        ["pareto", "ok", "../../x"],
        ["predictors", "report", ".hidden"],
        ["extract", "--study", "../x", "--trial", "0", "--out", "o"],
    ],
    ids=["launch", "resume", "trials", "pareto", "report", "extract"],
)
def test_unsafe_study_names_exit_2_and_write_nothing(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*args, "--storage", "sqlite:///nothing.db"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "is not allowed: use 1 to 128 letters" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_derived_study_name_is_made_safe():
    spec = RunSpec(space="my spaces/../.odd space.yaml", task="mymod:My Task")
    assert safe_name(spec.study_name) == "odd-space-My-Task-nsga2-s0"


@pytest.mark.parametrize(
    "path", ["../x", "a/../../b", "/tmp/../etc/x", "..", "a\\..\\b", "", "  ", "a\nb", "a\x00b"]
)
def test_output_paths_that_climb_or_hide_are_refused(path):
    with pytest.raises(UnsafeInput) as info:
        output_path(path, "--out")
    assert "\n" not in str(info.value)


def test_output_paths_may_be_absolute_or_relative(tmp_path):
    assert output_path(tmp_path / "new" / "front.png") == tmp_path / "new" / "front.png"
    assert output_path("runs/a..b/x.json") == Path("runs/a..b/x.json")
    assert output_path(tmp_path / "model", inside=("model.safetensors",)) == tmp_path / "model"


def test_outputs_are_never_written_through_links(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "link.png").symlink_to(victim)
    with pytest.raises(UnsafeInput, match="symbolic link"):
        output_path(tmp_path / "link.png", "--plot")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").symlink_to(victim)
    with pytest.raises(UnsafeInput, match="config.json is a symbolic link"):
        output_path(model_dir, "--out", inside=("model.safetensors", "config.json"))
    with pytest.raises(UnsafeInput, match="exists and is not a directory"):
        output_path(victim, "--out", inside=("config.json",))
    assert victim.read_text() == "precious"


def test_save_model_replaces_a_planted_link_instead_of_following_it(tmp_path):
    from tnas.nn import build_model
    from tnas.nn.checkpoint import save_model

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.safetensors", "config.json", "model.safetensors.partial"):
        (model_dir / name).symlink_to(victim)
    config = ArchConfig(d_model=16, n_layers=1, vocab_size=32, max_seq_len=8)
    save_model(build_model(config), model_dir)
    assert victim.read_text() == "precious"
    assert not (model_dir / "config.json").is_symlink()
    assert tnas.load_model(model_dir).config == config


@pytest.mark.parametrize(
    "args",
    [
        ["pareto", "s", "--plot", "../front.png"],
        ["predictors", "calibrate", "--out", "../latency.json"],
        ["supernet", "train", "--out", "../supernet.safetensors", "--steps", "1"],
        ["extract", "--supernet", "s.safetensors", "--config", "c.json", "--out", "../model"],
        ["extract", "--supernet", "s.safetensors", "--config", "c.json", "--out", "a/../../m"],
    ],
    ids=["pareto-plot", "calibrate-out", "supernet-out", "extract-out", "extract-out-nested"],
)
def test_outputs_that_climb_exit_2_and_write_nothing(tmp_path, monkeypatch, args):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "a path with a '..' component is not allowed" in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["work"]


def test_a_linked_output_directory_file_exits_2(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").symlink_to(victim)
    args = ["extract", "--supernet", "s.safetensors", "--config", "c.json", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "symbolic link" in result.output, result.output
    assert victim.read_text() == "precious"


# Passwords -------------------------------------------------------------------------------

URLS_WITH_PASSWORDS = [
    "postgresql://tnas:S3cret-pw@db.example:5432/tnas",
    "postgresql+psycopg://tnas:S3cret-pw@127.0.0.1/tnas?sslmode=require",
    "postgresql://tnas:S3cret%40pw@db.example/tnas",
    "postgresql://tnas:S3cret:pw@db.example/tnas",
]


@pytest.mark.parametrize("url", URLS_WITH_PASSWORDS)
def test_redact_url_agrees_with_sqlalchemy(url):
    redacted = redact_url(url)
    assert "S3cret" not in redacted
    assert redacted == make_url(url).render_as_string(hide_password=True)
    assert redact_url(f"error: cannot connect to {url}: refused") == (
        f"error: cannot connect to {redacted}: refused"
    )


def test_redact_url_masks_query_passwords_and_leaves_the_rest():
    assert redact_url("postgresql://h/db?user=a&password=S3cret&x=1") == (
        "postgresql://h/db?user=a&password=***&x=1"
    )
    for text in ("sqlite:///tnas.db", "postgresql://tnas@host:5432/db", "ray://10.0.0.1:10001"):
        assert redact_url(text) == text


def test_stored_run_settings_hold_no_password():
    spec = RunSpec(storage=URLS_WITH_PASSWORDS[0], ray_address="ray://u:S3cret@head:10001")
    stored = spec.stored()
    assert stored["storage"] == "postgresql://tnas:***@db.example:5432/tnas"
    assert stored["ray_address"] == "ray://u:***@head:10001"
    assert "S3cret" not in json.dumps(stored)


def test_an_unreachable_database_error_hides_the_password(replay_table, unused_loopback_port):
    url = f"postgresql://tnas:S3cret-pw@127.0.0.1:{unused_loopback_port}/tnas"
    for args in (
        ["search", "launch", "--evaluator", f"replay:{replay_table}", "--workers", "0",
         "--trials", "2", "--storage", url],
        ["studies", "--storage", url],
        ["search", "resume", "demo", "--storage", url],
        ["dashboard", "--storage", url],
    ):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "S3cret" not in result.output and "tnas:***@127.0.0.1" in result.output


def test_sqlite_runs_store_no_credentials(replay_table, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["search", "launch", "--evaluator", f"replay:{replay_table}", "--workers", "0"]
    result = runner.invoke(app, [*args, "--trials", "3", "--study", "demo", "--storage", url])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="demo", storage=url)
    trials = study.get_trials()
    stored = [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
    stored += [t.user_attrs for t in trials] + [t.system_attrs for t in trials]
    assert study.user_attrs["tnas"]["run"]["storage"] == url
    text = json.dumps(stored, default=str)
    assert not re.search(r"passw|pwd", text, re.IGNORECASE)
    assert not re.search(r"://[^/@\s]*:[^/@\s]*@", text)


class FakeDatabase:
    url = "postgresql+psycopg://tnas:S3cret-pw@db.example:5432/tnas"


# Servers listen on loopback --------------------------------------------------------------


def test_dashboard_listens_on_loopback_unless_told_otherwise(monkeypatch):
    import tnas.cli

    started = []
    monkeypatch.setattr(tnas.cli, "open_db", lambda storage: FakeDatabase())
    monkeypatch.setattr(os, "execvp", lambda program, argv: started.append(argv))
    result = runner.invoke(app, ["dashboard"])
    assert result.exit_code == 0, result.output
    argv = started[-1]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[-1] == "8080"
    assert "http://127.0.0.1:8080" in result.output
    assert "S3cret" not in result.output and "tnas:***@db.example" in result.output
    result = runner.invoke(app, ["dashboard", "--host", "0.0.0.0", "--port", "9000"])
    assert result.exit_code == 0 and started[-1][-4:] == ["--host", "0.0.0.0", "--port", "9000"]
    result = runner.invoke(app, ["dashboard", "--host", "--port"])
    assert result.exit_code == 2 and len(started) == 2


def test_a_private_ray_listens_on_loopback_without_a_dashboard(monkeypatch):
    import ray

    from tnas.workers import pool

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # connect sets it; restored after
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert pool.connect(None)
    assert calls[0]["include_dashboard"] is False
    assert calls[0]["_node_ip_address"].startswith("127.")


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay_table(tmp_path_factory) -> Path:
    """A replay table of 20 primer configs (accuracy, latency_ms)."""
    return write_replay_table(tmp_path_factory.mktemp("replay") / "table.jsonl", 20, seed=0)


@pytest.fixture(scope="module", autouse=True)
def remove_scratch():
    yield
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="module")
def quiet_optuna():
    """No Optuna log lines: its handler would write to the stderr of an earlier CliRunner."""
    import optuna

    optuna.logging.disable_default_handler()
    yield
    optuna.logging.enable_default_handler()


@pytest.fixture
def unused_loopback_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
