from __future__ import annotations

import pytest

from tnas.space import ArchConfig, LayerConfig
from tnas.workers.tasks import create_task
from tnas.workers.train import Budget, TrialFailed, train


def small(mixer: str = "attention") -> ArchConfig:
    layer = LayerConfig(mixer=mixer, n_heads=2, ffn_dim=64, activation="gelu")
    return ArchConfig(d_model=32, n_layers=2, layers=(layer, layer))


def test_schedule_warms_up_then_decays_to_a_tenth():
    budget = Budget(steps=100, lr=1.0, warmup_steps=10)
    assert budget.lr_at(1) == pytest.approx(0.1)
    assert budget.lr_at(10) == pytest.approx(1.0)
    assert budget.lr_at(55) < budget.lr_at(20)
    assert budget.lr_at(100) == pytest.approx(0.1)


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="lr must be > 0"):
        Budget(lr=0)


def test_digits_training_learns_and_reports_metrics():
    task = create_task("digits")
    result = train(small(), task, Budget(steps=120, batch_size=32, lr=3e-3))
    assert result.metrics["accuracy"] > 0.5  # chance is 0.1
    assert result.metrics["steps"] == 120
    first = sum(loss for _, loss in result.curve[:10]) / 10
    assert result.metrics["train_loss"] < first
    assert result.config.head == "classifier" and result.config.n_classes == 10


def test_training_is_deterministic_given_the_seed():
    task = create_task("digits")
    a = train(small("gla"), task, Budget(steps=5, batch_size=8, seed=3))
    b = train(small("gla"), task, Budget(steps=5, batch_size=8, seed=3))
    assert a.curve == b.curve and a.metrics["loss"] == b.metrics["loss"]


def test_absurd_learning_rate_fails_with_nan_loss():
    with pytest.raises(TrialFailed) as info:
        train(small(), create_task("digits"), Budget(steps=50, batch_size=8, lr=1e30))
    assert info.value.reason == "nan_loss"


def test_wall_clock_cap_stops_before_the_step_budget():
    result = train(
        small(), create_task("digits"), Budget(steps=10**6, batch_size=8, max_seconds=0.5)
    )
    assert 1 <= result.metrics["steps"] < 10**6
