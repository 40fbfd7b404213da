"""Mix'n'Match: searching submodels of a supernet (inline and on a real local Ray), and
`tnas extract --study NAME --trial N`."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import ray
import torch
from typer.testing import CliRunner

import tnas
from tests.conftest import start_ray_on_loopback
from tnas.cli import app
from tnas.elastic import Supernet, extract, largest, load_supernet, save_supernet
from tnas.space import ArchConfig, load_space
from tnas.workers.backend import InlineEvaluator, ProfileSettings
from tnas.workers.mixnmatch import SupernetJob, run_submodel_trial
from tnas.workers.pool import RayPool
from tnas.workers.tasks import parse_task

runner = CliRunner()

TINY_SPACE = """\
name: tinymat
description: a tiny nested space for the Mix'n'Match tests
global:
  d_model: 16
  n_layers: {low: 1, high: 3}
  vocab_size: 17
  max_seq_len: 64
  norm: layernorm
  head: lm
shared:
  mixer: attention
  n_heads: {choices: [1, 2]}
  head_dim: 8
  activation: gelu
per_layer:
  ffn_dim: {choices: [8, 16, 32]}
"""
QUICK_PROFILE = "profile_repeats: 2\nprofile_seq_len: 16\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny space, its supernet for `digits` (3 layers, 2 heads of 8, FFN 32), with a few
    training steps so that submodels differ, and a run file with quick profiling."""
    root = tmp_path_factory.mktemp("mixnmatch")
    space_path = root / "tiny.yaml"
    space_path.write_text(TINY_SPACE)
    task = parse_task("digits")
    torch.manual_seed(0)
    supernet = Supernet(task.adapt(largest(load_space(str(space_path)))), space=str(space_path))
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        inputs, targets = task.train_batch(16, generator)
        loss = task.loss(supernet(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = root / "supernet.safetensors"
    save_supernet(supernet.eval(), checkpoint)
    run_file = root / "run.yaml"
    run_file.write_text(QUICK_PROFILE)
    return {"space": space_path, "checkpoint": checkpoint, "run": run_file, "root": root}


def launch(files, url: str, study: str, *args: str):
    return runner.invoke(
        app,
        [
            "search",
            "launch",
            str(files["run"]),
            "--supernet",
            str(files["checkpoint"]),
            "--task",
            "digits",
            "--study",
            study,
            "--storage",
            url,
            *args,
        ],
    )


def completed(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]


def check_trials_match_extracted_models(files, trials) -> None:
    """Each trial's metrics are those of its extracted dense model; latency was measured."""
    supernet = load_supernet(files["checkpoint"])
    task = parse_task("digits")
    for trial in trials:
        config = task.adapt(ArchConfig.from_dict(trial.user_attrs["config"]))
        direct = task.evaluate(extract(supernet, config))
        metrics = trial.user_attrs["metrics"]
        for name in ("accuracy", "loss", "accuracy_fp32", "loss_fp32"):
            assert metrics[name] == pytest.approx(direct[name.removesuffix("_fp32")], abs=1e-6)
        assert metrics["latency_ms"] > 0 and metrics["params"] > 0 and metrics["flops"] > 0
        assert "train_loss" not in metrics and trial.user_attrs["curve"] == []


@pytest.fixture(scope="module")
def searched(files) -> str:
    """A finished inline Mix'n'Match search of 4 trials, `mm` in `search.db`."""
    url = f"sqlite:///{files['root'] / 'search.db'}"
    result = launch(files, url, "mm", "--workers", "0", "--trials", "4")
    assert result.exit_code == 0, result.output
    return url


def test_an_inline_search_reports_the_extracted_models_metrics(files, searched):
    trials = completed(searched, "mm")
    assert len(trials) == 4
    check_trials_match_extracted_models(files, trials)
    stored = optuna.load_study(study_name="mm", storage=searched).user_attrs["tnas"]["run"]
    assert stored["supernet"] == str(files["checkpoint"].resolve())
    assert stored["space"] == str(files["space"])  # the space the supernet records
    resumed = runner.invoke(app, ["search", "resume", "mm", "--storage", searched])
    assert resumed.exit_code == 0, resumed.output


def test_a_config_outside_the_supernet_fails_with_its_reason(files):
    job = SupernetJob(task="digits", supernet=str(files["checkpoint"]), profile=None)
    supernet = load_supernet(files["checkpoint"])
    layer = supernet.config.layers[0]
    wide = supernet.config.replace(layers=(replace(layer, ffn_dim=64),) * 3)
    report = run_submodel_trial("wide", wide, job)
    assert report["status"] == "failed" and report["reason"] == "not_a_submodel"
    assert "ffn_dim 64 exceeds the supernet's 32" in report["error"]
    evaluator = InlineEvaluator(job)
    small = supernet.config.replace(n_layers=1, layers=(layer,))
    for key in ("a", "b"):
        evaluator.submit(key, small)
    assert [r["status"] for r in evaluator.collect()] == ["ok", "ok"]
    assert evaluator.cache.supernets.loads == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "matformer"], "space 'matformer' does not fit the supernet: d_model 256"),
        (["--task", "textlm"], "the supernet was not built for task textlm: vocab_size 17"),
        (["--objective", "train_loss:min"], "unknown objective 'train_loss'"),
        (["--evaluator", "replay:x.jsonl"], "--supernet evaluates configs itself"),
    ],
    ids=["space-too-big", "other-task", "no-training-metrics", "with-replay"],
)
def test_bad_launches_are_one_line_exit_2(files, tmp_path, args, message):
    db = tmp_path / "untouched.db"
    result = launch(files, f"sqlite:///{db}", "bad", "--workers", "0", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not db.exists()


def test_a_corrupt_supernet_is_one_line_exit_2(files, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 16)
    result = runner.invoke(
        app,
        ["search", "launch", "--supernet", str(corrupt), "--storage", f"sqlite:///{tmp_path}/x.db"],
    )
    assert result.exit_code == 2
    assert "not a readable safetensors file" in result.output.strip()


def test_extract_a_trial_of_the_study(files, searched, tmp_path):
    supernet = load_supernet(files["checkpoint"])
    task = parse_task("digits")
    tokens = task.split["val"][0][:8]
    for trial in completed(searched, "mm")[:2]:
        out = tmp_path / f"trial{trial.number}"
        args = ["extract", "--study", "mm", "--trial", str(trial.number), "--out", str(out)]
        result = runner.invoke(app, [*args, "--storage", searched])
        assert result.exit_code == 0, result.output
        config = task.adapt(ArchConfig.from_dict(trial.user_attrs["config"]))
        model = tnas.load_model(out)
        assert model.config == config
        with torch.no_grad():
            torch.testing.assert_close(model(tokens), supernet(tokens, config), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def broken_studies(searched) -> str:
    """Beside `mm`: a trial without a config in `mm`, and a study `plain` made by a search
    without `--supernet`."""
    study = optuna.load_study(study_name="mm", storage=searched)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    plain = optuna.create_study(study_name="plain", storage=searched)
    plain.set_user_attr("tnas", {"run": {"space": "primer", "task": "digits", "supernet": None}})
    return searched


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", "nope", "--trial", "0"], "unknown study 'nope'; studies in .*: mm, plain"),
        (["--study", "mm", "--trial", "99"], r"study 'mm' has no trial 99 \(trials 0..4\)"),
        (["--study", "mm", "--trial", "4"], r"trial 4 of study 'mm' has no config \(fail\)"),
        (["--study", "plain", "--trial", "0"], "study 'plain' was not searched with --supernet"),
        (["--study", "mm"], "--study and --trial go together"),
        (["--study", "mm", "--trial", "0", "--supernet", "x"], "give either --supernet"),
        ([], "give either --supernet CKPT --config SUB.json, or --study NAME --trial N"),
    ],
    ids=[
        "unknown-study",
        "unknown-trial",
        "no-config",
        "not-mixnmatch",
        "no-trial",
        "both",
        "none",
    ],
)
def test_extract_from_a_study_errors_are_one_line_exit_2(broken_studies, tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", *args, "--out", str(out), "--storage", broken_studies])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not out.exists()


@pytest.fixture
def local_ray(tmp_path_factory):  # per test: the CLI search after it starts its own Ray
    start_ray_on_loopback(tmp_path_factory.mktemp("ray"))
    yield
    ray.shutdown()


def test_a_pool_search_loads_the_supernet_once_per_actor(files, tmp_path, local_ray):
    job = SupernetJob(
        task="digits",
        supernet=str(files["checkpoint"]),
        profile=ProfileSettings(seq_len=16, repeats=2),
    )
    space = load_space(str(files["space"]))
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(4)]
    pool = RayPool(job, workers=2)
    try:
        for number, config in enumerate(configs):
            pool.submit(str(number), config)
        reports = []
        while len(reports) < len(configs):
            reports.extend(pool.collect(timeout=120))
        assert pool.supernet_loads() == [1, 1]
    finally:
        pool.close()
    assert all(report["status"] == "ok" for report in reports), reports
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    result = launch(files, url, "pool", "--workers", "2", "--trials", "3")
    assert result.exit_code == 0, result.output
    trials = completed(url, "pool")
    assert len(trials) == 3
    check_trials_match_extracted_models(files, trials)


def test_bits_apply_to_the_extracted_model_and_the_float_metrics_stay(files):
    from tnas.nn.quant import quantize

    job = SupernetJob(task="digits", supernet=str(files["checkpoint"]), profile=None)
    supernet = load_supernet(files["checkpoint"])
    task = parse_task("digits")
    layer = replace(supernet.config.layers[0], ffn_dim=16, bits=8)
    config = supernet.config.replace(n_layers=2, layers=(layer, layer))
    report = run_submodel_trial("int8", config, job)
    assert report["status"] == "ok", report
    model = extract(supernet, config)
    floats = task.evaluate(model)
    quantized = task.evaluate(quantize(model, config, "cpu"))
    metrics = report["metrics"]
    assert metrics["loss_fp32"] == pytest.approx(floats["loss"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(quantized["loss"], abs=1e-6)
