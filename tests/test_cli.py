"""The CLI end to end, through Typer's runner (and a subprocess for import hygiene)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tnas.cli import app
from tnas.space import ArchConfig, count_params, load_space, preset_names

runner = CliRunner()


def run(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


@pytest.mark.parametrize("preset", preset_names())
def test_show_prints_the_size_of_every_preset(preset):
    result = run("space", "show", preset)
    assert result.exit_code == 0, result.output
    size = load_space(preset).size()
    assert "size:" in result.output
    if size < 10**15:
        assert f"{size:,}" in result.output
    assert "example" in result.output


@pytest.mark.parametrize("preset", preset_names())
def test_every_sampled_config_builds_with_model_summary(preset, tmp_path):
    result = run("space", "sample", preset, "-n", "3", "--seed", "7")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        config = ArchConfig.from_json(line)
        path = tmp_path / f"{i}.json"
        path.write_text(line)
        summary = run("model", "summary", str(path), "--json", "--seq-len", "16")
        assert summary.exit_code == 0, summary.output
        assert json.loads(summary.output)["params"] == count_params(config)


def test_sample_is_reproducible_from_its_seed():
    assert (
        run("space", "sample", "mixers", "--seed", "3").output
        == run("space", "sample", "mixers", "--seed", "3").output
    )


def test_summary_reads_a_config_from_stdin():
    line = run("space", "sample", "primer", "-n", "1").output
    result = run("model", "summary", "-", stdin=line)
    assert result.exit_code == 0, result.output
    assert "params" in result.output and "GFLOPs" in result.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("global: [1, 2\n", "space.yaml:"),
        ("per_layer:\n  mixer: {choices: [attention, mamba]}\n", "unknown mixer 'mamba'"),
        ("per_layer:\n  widths: {choices: [1]}\n", "widths"),
        ("constraints: ['params <= 10']\n", "unsatisfiable"),
    ],
    ids=["not-yaml", "unknown-mixer", "unknown-knob", "impossible-constraint"],
)
def test_bad_space_is_one_line_and_exit_code_2(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    result = run("space", "validate", str(path))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_missing_space_file_and_broken_config(tmp_path):
    missing = run("space", "show", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "nope.yaml" in missing.output
    broken = tmp_path / "c.json"
    broken.write_text('{"d_model": 30, "n_layers": 1, "layers": [{"n_heads": 4}]}')
    result = run("model", "summary", str(broken))
    assert result.exit_code == 2
    assert "not divisible by n_heads 4" in result.output


def test_space_commands_do_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from tnas.cli import app; "
        "r = CliRunner().invoke(app, ['space', 'show', 'mixers']); "
        "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def tiny_config_file(tmp_path, bits: int = 32):
    layer = {"mixer": "attention", "n_heads": 2, "ffn_dim": 32, "bits": bits}
    path = tmp_path / f"tiny{bits}.json"
    path.write_text(json.dumps({"d_model": 16, "n_layers": 1, "layers": [layer]}))
    return str(path)


def test_train_reports_metrics_and_the_curve(tmp_path):
    result = run(
        "train",
        tiny_config_file(tmp_path),
        "--task",
        "digits",
        "--steps",
        "5",
        "--batch-size",
        "8",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert 0 <= report["metrics"]["accuracy"] <= 1 and len(report["curve"]) == 5
    table = run(
        "train",
        tiny_config_file(tmp_path),
        "--task",
        "mqar,num_pairs=4,seq_len=16",
        "--steps",
        "3",
        "--batch-size",
        "8",
    )
    assert table.exit_code == 0, table.output
    assert "accuracy" in table.output and "training loss" in table.output


def test_train_failures_are_one_line_with_nonzero_exit(tmp_path):
    config = tiny_config_file(tmp_path)
    nan = run("train", config, "--steps", "30", "--batch-size", "8", "--lr", "1e30")
    assert nan.exit_code == 1 and "nan_loss" in nan.output
    assert len(nan.output.strip().splitlines()) == 1
    bad_task = run("train", config, "--task", "cifar")
    assert bad_task.exit_code == 2 and "unknown task 'cifar'; valid: digits" in bad_task.output
    four_bit = run("train", tiny_config_file(tmp_path, bits=4), "--steps", "2")
    assert four_bit.exit_code == 2 and "4-bit" in four_bit.output


def test_train_reports_the_quantized_model_and_keeps_the_float_one(tmp_path):
    args = ("--steps", "5", "--batch-size", "8", "--json")
    int8 = json.loads(run("train", tiny_config_file(tmp_path, bits=8), *args).output)["metrics"]
    fp32 = json.loads(run("train", tiny_config_file(tmp_path), *args).output)["metrics"]
    # same seed, same float training: only the post-training quantization differs
    assert int8["loss_fp32"] == fp32["loss_fp32"] == fp32["loss"]
    assert int8["loss"] != int8["loss_fp32"]


def test_profile_measures_and_refuses_4_bit_on_cpu(tmp_path):
    result = run(
        "profile", tiny_config_file(tmp_path, bits=8), "--seq", "16", "--repeats", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["latency_ms"] > 0 and report["bits"] == [8]
    refused = run("profile", tiny_config_file(tmp_path, bits=4), "--seq", "16")
    assert refused.exit_code == 2 and "4-bit" in refused.output


def test_predictors_calibrate_writes_a_latency_table(tmp_path):
    from tnas.predictors.latency import LatencyTable

    space = tmp_path / "tiny.yaml"
    space.write_text(
        "global:\n  d_model: {choices: [32, 64]}\n  n_layers: {low: 1, high: 2}\n"
        "  max_seq_len: 32\nper_layer:\n  ffn_dim: {choices: [32, 64]}\n"
        "  bits: {choices: [32, 8]}\n"
    )
    out = tmp_path / "latency.json"
    result = run(
        "predictors",
        "calibrate",
        "--space",
        str(space),
        "--budget",
        "10",
        "--seq",
        "16",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(out)
    assert 0 < table.measurements <= 10
    assert all(ms > 0 for ms in table.entries.values())
