"""`run_trial`: a trial's task metrics are those of the model at its bits; float ones beside."""

from __future__ import annotations

import pytest

from tnas.nn.quant import quantize
from tnas.space import ArchConfig, LayerConfig
from tnas.workers.backend import ProfileSettings, TrialJob, run_trial
from tnas.workers.tasks import create_task
from tnas.workers.train import Budget, train

BUDGET = Budget(steps=30, batch_size=16, lr=3e-3, seed=1)
NO_PROFILE = TrialJob(task="digits", budget=BUDGET, profile=None)
PROFILED = TrialJob(
    task="digits", budget=BUDGET, profile=ProfileSettings(seq_len=16, repeats=2, threads=1)
)


def tiny(*bits: int) -> ArchConfig:
    layers = tuple(LayerConfig(n_heads=2, ffn_dim=64, bits=b) for b in bits)
    return ArchConfig(d_model=32, n_layers=len(layers), layers=layers)


@pytest.fixture(scope="module")
def task():
    return create_task("digits")


def test_all_fp32_config_reports_equal_fp32_copies(task):
    report = run_trial("t0", tiny(32, 32), NO_PROFILE, task)
    assert report["status"] == "ok", report
    metrics = report["metrics"]
    assert metrics["accuracy_fp32"] == metrics["accuracy"]
    assert metrics["loss_fp32"] == metrics["loss"]
    assert metrics["accuracy"] == train(tiny(32, 32), task, BUDGET).metrics["accuracy"]


@pytest.mark.parametrize("bits", [(8, 8), (16, 16), (8, 32), (16, 8)], ids=str)
def test_quantized_config_reports_the_quantized_models_metrics(task, bits):
    config = tiny(*bits)
    report = run_trial("t0", config, NO_PROFILE, task)
    assert report["status"] == "ok", report
    metrics = report["metrics"]
    trained = train(config, task, BUDGET)  # same seed: the same float model
    direct = task.evaluate(quantize(trained.model, trained.config, "cpu"))
    assert metrics["accuracy"] == direct["accuracy"]
    assert metrics["loss"] == direct["loss"]
    assert metrics["accuracy_fp32"] == trained.metrics["accuracy"]
    assert metrics["loss_fp32"] == trained.metrics["loss"]
    assert metrics["loss"] != metrics["loss_fp32"]  # the quantization did touch the network
    assert metrics["loss"] == pytest.approx(metrics["loss_fp32"], rel=0.1)
    assert report["timings"]["quantized_eval_s"] > 0


def test_bits_change_accuracy_not_the_float_model(task):
    reports = [run_trial("t", tiny(*bits), NO_PROFILE, task) for bits in ((32, 32), (8, 16))]
    fp32, mixed = (report["metrics"] for report in reports)
    assert mixed["loss_fp32"] == fp32["loss"] and mixed["train_loss"] == fp32["train_loss"]
    assert mixed["loss"] != fp32["loss"]


@pytest.mark.parametrize("bits", [(32, 32), (8, 16)], ids=str)
def test_reported_metrics_are_what_a_trial_reports(task, bits):
    report = run_trial("t0", tiny(*bits), PROFILED, task)
    assert report["status"] == "ok", report
    assert PROFILED.metric_names() <= set(report["metrics"])  # also batch, threads, ...
    assert {"accuracy_fp32", "loss_fp32", "latency_ms"} <= PROFILED.metric_names()


def test_unsupported_bits_fail_before_training(task):
    report = run_trial("t0", tiny(8, 4), NO_PROFILE, task)
    assert report["status"] == "failed"
    assert report["reason"] == "unsupported_quantization"
    assert "4-bit" in report["error"] and "layer1" in report["error"]
    assert "train_s" not in report["timings"]
