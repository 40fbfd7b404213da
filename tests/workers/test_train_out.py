"""`tnas train --out DIR` saves a model `tnas.load_model` reads; `--study NAME --trial N`
retrains a trial of a study; a bad device is one line and exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tnas import load_model
from tnas.cli import app
from tnas.nn.checkpoint import read_safetensors
from tnas.space import ArchConfig, LayerConfig
from tnas.workers.tasks import create_task
from tnas.workers.train import Budget, default_threads, save_trained, train

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def tiny() -> ArchConfig:
    return ArchConfig(d_model=16, n_layers=1, layers=(LayerConfig(n_heads=2, ffn_dim=32),))


def tiny_config_file(tmp_path) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(tiny().to_json())
    return str(path)


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {text}"]


def test_save_trained_round_trips_with_the_same_logits(tmp_path):
    task = create_task("digits")
    result = train(tiny(), task, Budget(steps=3, batch_size=8))
    loaded = load_model(save_trained(result, tmp_path / "model", task="digits"))
    inputs, _ = task.train_batch(4, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(loaded(inputs), result.model.eval()(inputs))
    assert loaded.config == result.config


def test_train_out_saves_what_it_reports(tmp_path):
    out = tmp_path / "trained"
    args = ("--steps", "3", "--batch-size", "8", "--json")
    result = run("train", tiny_config_file(tmp_path), "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["out"] == str(out)
    model = load_model(out)
    assert model.config.hash == report["config_hash"]
    measured = create_task("digits").evaluate(model)
    assert measured["loss"] == pytest.approx(report["metrics"]["loss_fp32"], rel=1e-5)
    _, header = read_safetensors(out / "model.safetensors")
    assert header["tnas.task"] == "digits" and header["tnas.steps"] == "3"


def test_train_out_refuses_an_unsafe_path_before_training(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").symlink_to(target)
    result = run("train", tiny_config_file(tmp_path), "--out", str(out), "--steps", "1")
    assert result.exit_code == 2, result.output
    assert target.read_text() == "keep"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from tnas.launch import launch

    tmp = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{tmp}/x.db"
    launch(space="simq", task="digits", trials=2, workers=0, steps=3, storage=storage, study="s")
    return storage


def test_a_trial_of_a_study_is_retrained_with_its_settings_and_saved(tiny_study, tmp_path):
    from tnas.launch import study_trial_config

    out = tmp_path / "retrained"
    result = run(
        "train", "--study", "s", "--trial", "0", "--steps", "5", "--storage", tiny_study,
        "--out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["curve"]) == 5  # --steps overrides the study's 3
    stored, config = study_trial_config("s", 0, tiny_study)
    task = create_task(stored["task"])
    assert load_model(out).config == task.adapt(config)
    budget = Budget(
        steps=5,
        batch_size=stored["batch_size"],
        lr=stored["lr"],
        seed=stored["seed"],
        threads=default_threads(1),
    )
    again = train(config, task, budget)  # the study's batch size, learning rate and seed
    assert [loss for _, loss in again.curve] == pytest.approx([loss for _, loss in report["curve"]])
    _, header = read_safetensors(out / "model.safetensors")
    assert header["tnas.study"] == "s" and header["tnas.trial"] == "0"


def test_study_and_trial_errors_are_one_line(tiny_study, tmp_path):
    config = tiny_config_file(tmp_path)
    one_line_error(
        run("train", config, "--study", "s", "--trial", "0"),
        "give either a CONFIG file or --study NAME --trial N, not both",
    )
    one_line_error(run("train"), "give a CONFIG file, or --study NAME --trial N")
    one_line_error(run("train", "--study", "s"), "--study and --trial go together")
    missing = run("train", "--study", "s", "--trial", "9", "--storage", tiny_study)
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
    assert "no trial 9" in missing.output
    unknown = run("train", "--study", "nope", "--trial", "0", "--storage", tiny_study)
    assert unknown.exit_code == 2 and "unknown study 'nope'" in unknown.output


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("train", "CONFIG"), id="train"),
        pytest.param(("profile", "CONFIG"), id="profile"),
        pytest.param(("predictors", "calibrate", "--out", "OUT"), id="calibrate"),
    ],
)
def test_an_unknown_device_is_one_line(command, tmp_path):
    args = [
        {"CONFIG": tiny_config_file(tmp_path), "OUT": str(tmp_path / "t.json")}.get(a, a)
        for a in command
    ]
    also = " (or node:RESOURCE, a Ray node's custom resource)" if "calibrate" in command else ""
    one_line_error(run(*args, "--device", "tpu"), f"unknown device 'tpu'; valid: cpu, cuda{also}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("command", ["train", "profile"])
def test_cuda_without_cuda_is_one_line(command, tmp_path):
    one_line_error(
        run(command, tiny_config_file(tmp_path), "--device", "cuda"),
        "device 'cuda' requested but CUDA is not available",
    )
