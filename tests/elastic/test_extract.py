"""Extraction: the dense model equals the sliced forward; checkpoints round trip or fail in one
line; `tnas extract` end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import tnas
from tnas.cli import app
from tnas.elastic import Submodel, extract, load_supernet, save_supernet
from tnas.nn import TnasModel
from tnas.nn.checkpoint import CONFIG_FILE, MODEL_FILE, CheckpointError, save_model
from tnas.space import ArchConfig, count_params

from .conftest import random_submodel, tiny_supernet, tokens

VARIANTS = [
    ("attention", "gelu", "lm", True),
    ("mdha", "swiglu", "lm", False),
    ("attention", "polyrelu", "classifier", False),
]


@pytest.mark.parametrize(
    "mixer, activation, head, tie", VARIANTS, ids=["attention-gelu", "mdha-swiglu", "classifier"]
)
def test_extracted_models_equal_the_sliced_forward(mixer, activation, head, tie):
    supernet = tiny_supernet(mixer, activation, head, tie)
    rng = np.random.default_rng(0)
    x = tokens(supernet)
    for _ in range(12):
        sub = random_submodel(supernet, rng)
        model = extract(supernet, sub)
        assert type(model) is TnasModel and model.config == sub.config
        assert sum(p.numel() for p in model.parameters()) == count_params(sub.config)
        with torch.no_grad():
            torch.testing.assert_close(model(x), supernet(x, sub), rtol=0, atol=1e-5)


def test_extraction_copies(supernet):
    model = extract(supernet, supernet.submodel(ffn_dim=8, n_layers=2))
    with torch.no_grad():
        model.blocks[0].ffn.up.weight.zero_()
    assert supernet.blocks[0].ffn.up.weight.abs().sum() > 0


def test_saved_model_loads_without_the_supernet(supernet, tmp_path):
    sub = supernet.submodel(ffn_dim=[16, 64, 8], n_heads=[2, 4, 1], kept=[0, 2, 3])
    model = extract(supernet, sub)
    save_model(model, tmp_path / "model", supernet=supernet.config.hash)
    assert ArchConfig.from_json((tmp_path / "model" / CONFIG_FILE).read_text()) == sub.config
    loaded = tnas.load_model(tmp_path / "model")
    assert type(loaded) is TnasModel and not loaded.training
    x = tokens(supernet)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), supernet(x, sub), rtol=0, atol=1e-5)


def test_supernet_checkpoint_round_trip(tmp_path):
    supernet = tiny_supernet("mdha", "swiglu", tie_embeddings=False)
    supernet.space, supernet.step = "tiny", 120
    path = tmp_path / "supernet.safetensors"
    save_supernet(supernet, path)
    loaded = load_supernet(path, config=supernet.config)
    assert (loaded.config, loaded.space, loaded.step) == (supernet.config, "tiny", 120)
    x = tokens(supernet)
    sub = supernet.submodel(ffn_dim=16, n_heads=2, n_layers=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x, sub), supernet(x, sub), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.partial"))


@pytest.fixture
def checkpoint(supernet, tmp_path):
    path = tmp_path / "supernet.safetensors"
    save_supernet(supernet, path)
    return path


def rewrite(path, tensors=None, header=None):
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path) if tensors is None else tensors
    if header is not None:
        metadata["tnas.supernet"] = header
    save_file(tensors, path, metadata=metadata)


def header_with(path, **changes) -> str:
    with safe_open(path, framework="pt") as handle:
        header = json.loads(handle.metadata()["tnas.supernet"])
    return json.dumps(header | changes)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "missing tensor.*blocks.0.ffn.up.weight"),
        ("extra", "unexpected tensor.*optimizer.state"),
        ("shape", r"tensor blocks.0.ffn.up.weight has shape \(32, 32\), expected \(64, 32\)"),
        ("bad-json", "supernet header is not valid JSON"),
        ("bad-config", "supernet header config: n_layers is 5 but 4 layers"),
        ("bad-version", "format_version 7, expected 1"),
        ("no-header", "not a tnas supernet checkpoint"),
        ("truncated", "not a readable safetensors file"),
        ("absent", "no such checkpoint file"),
        ("other-supernet", "holds supernet .*, not the expected"),
    ],
)
def test_bad_supernet_checkpoints_fail_in_one_line(checkpoint, damage, message):
    tensors = load_file(checkpoint)
    expected_config = None
    if damage == "missing":
        del tensors["blocks.0.ffn.up.weight"]
        rewrite(checkpoint, tensors)
    elif damage == "extra":
        tensors["optimizer.state"] = torch.zeros(2)
        rewrite(checkpoint, tensors)
    elif damage == "shape":
        tensors["blocks.0.ffn.up.weight"] = tensors["blocks.0.ffn.up.weight"][:32].clone()
        rewrite(checkpoint, tensors)
    elif damage == "bad-json":
        rewrite(checkpoint, header="{not json")
    elif damage == "bad-config":
        config = json.loads(header_with(checkpoint))["config"] | {"n_layers": 5}
        rewrite(checkpoint, header=header_with(checkpoint, config=config))
    elif damage == "bad-version":
        rewrite(checkpoint, header=header_with(checkpoint, format_version=7))
    elif damage == "no-header":
        save_file(tensors, checkpoint)
    elif damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    elif damage == "absent":
        checkpoint.unlink()
    elif damage == "other-supernet":
        expected_config = tiny_supernet("mdha").config
    with pytest.raises(CheckpointError, match=message) as info:
        load_supernet(checkpoint, config=expected_config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no-config", "config.json: no such file"),
        ("bad-config", "config.json: config is not valid JSON"),
        ("other-config", "weights were saved for config .*, but config.json is"),
        ("no-weights", "no such checkpoint file"),
        ("missing-tensor", "missing tensor.*blocks.1.ffn.down.weight"),
    ],
)
def test_bad_model_directories_fail_in_one_line(supernet, tmp_path, damage, message):
    directory = tmp_path / "model"
    sub = supernet.submodel(ffn_dim=16, n_layers=2)
    save_model(extract(supernet, sub), directory)
    config_path, weights = directory / CONFIG_FILE, directory / MODEL_FILE
    if damage == "no-config":
        config_path.unlink()
    elif damage == "bad-config":
        config_path.write_text("{")
    elif damage == "other-config":
        config_path.write_text(supernet.submodel(ffn_dim=8, n_layers=2).config.to_json())
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "missing-tensor":
        tensors = load_file(weights)
        del tensors["blocks.1.ffn.down.weight"]
        rewrite(weights, tensors)
    with pytest.raises(CheckpointError, match=message) as info:
        tnas.load_model(directory)
    assert "\n" not in str(info.value)


runner = CliRunner()


def test_extract_cli_writes_a_loadable_model(checkpoint, supernet, tmp_path):
    sub = supernet.submodel(ffn_dim=[32, 8], n_heads=[3, 2], kept=[1, 3])
    spec = tmp_path / "sub.json"
    spec.write_text(sub.to_json())
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["extract", "--supernet", str(checkpoint), "--config", str(spec), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "supernet layers [1, 3] of 4" in result.output
    x = tokens(supernet)
    with torch.no_grad():
        torch.testing.assert_close(tnas.load_model(out)(x), supernet(x, sub), rtol=0, atol=1e-5)
    bare = tmp_path / "bare.json"  # a bare config: layers placed by default_kept
    bare.write_text(sub.config.to_json())
    result = runner.invoke(
        app, ["extract", "--supernet", str(checkpoint), "--config", str(bare), "--out", str(out)]
    )
    assert result.exit_code == 0 and "supernet layers [0, 3] of 4" in result.output


@pytest.mark.parametrize(
    "case, message",
    [
        ("bigger-ffn", "layer0: ffn_dim 128 exceeds the supernet's 64"),
        ("more-layers", "n_layers 5 exceeds the supernet's 4"),
        ("bad-json", "sub.json: submodel is not valid JSON"),
        ("corrupt-checkpoint", "not a readable safetensors file"),
    ],
)
def test_extract_cli_errors_are_one_line_with_exit_code_2(checkpoint, tmp_path, case, message):
    config = load_supernet(checkpoint).config
    layer = config.layers[0]
    spec = tmp_path / "sub.json"
    if case == "bigger-ffn":
        spec.write_text(config.replace(layers=(replace(layer, ffn_dim=128),) * 4).to_json())
    elif case == "more-layers":
        spec.write_text(config.replace(n_layers=5, layers=(layer,) * 5).to_json())
    elif case == "bad-json":
        spec.write_text("{")
    else:
        spec.write_text(Submodel(config, (0, 1, 2, 3)).to_json())
        checkpoint.write_bytes(b"\x00" * 16)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["extract", "--supernet", str(checkpoint), "--config", str(spec), "--out", str(out)]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_supernet_class_is_not_needed_to_load(tmp_path, supernet):
    save_model(extract(supernet, supernet.submodel(n_layers=1)), tmp_path)
    code = (
        "import sys, tnas\n"
        f"tnas.load_model({str(tmp_path)!r})\n"
        "assert 'tnas.elastic.supernet' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
