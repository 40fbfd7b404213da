"""`tnas supernet train`, then `tnas extract` from what it wrote."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tnas.cli import app

SPACE = """name: tiny
description: two layers, three nested FFN widths
global: {d_model: 32, n_layers: 2, vocab_size: 256, max_seq_len: 32, norm: layernorm, head: lm}
shared: {mixer: attention, n_heads: 2, activation: gelu}
per_layer:
  ffn_dim: {choices: [16, 32, 64]}
"""


def test_train_resume_and_extract(tmp_path):
    runner = CliRunner()
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    out = str(tmp_path / "net.safetensors")
    common = [
        "supernet",
        "train",
        "--space",
        str(space),
        "--task",
        "textlm,seq_len=32",
        "--out",
        out,
    ]
    first = runner.invoke(app, [*common, "--steps", "4"])
    assert first.exit_code == 0, first.output
    assert "step 4 (from 0)" in first.output
    again = runner.invoke(app, [*common, "--steps", "6", "--resume"])
    assert again.exit_code == 0, again.output
    assert "step 6 (from 4)" in again.output
    bad = runner.invoke(app, [*common, "--steps", "2", "--strategy", "bogus"])
    assert bad.exit_code == 2 and "unknown strategy 'bogus'" in bad.output
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps({"d_model": 32, "n_layers": 2, "max_seq_len": 32,
        "layers": [{"n_heads": 2, "ffn_dim": 16}, {"n_heads": 2, "ffn_dim": 64}]}))  # fmt: skip
    model_dir = tmp_path / "model"
    cut = runner.invoke(
        app, ["extract", "--supernet", out, "--config", str(sub), "--out", str(model_dir)]
    )
    assert cut.exit_code == 0, cut.output
    assert (model_dir / "model.safetensors").exists() and (model_dir / "config.json").exists()
