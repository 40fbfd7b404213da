"""Joint supernet training: strategies, loss, resume, bad checkpoints, NaN, and Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tnas.elastic import Granularities, Supernet, load_supernet, save_supernet
from tnas.nn.checkpoint import CheckpointError
from tnas.space import DesignSpace
from tnas.workers.supernet import (
    build_supernet,
    evaluate_submodel,
    train_supernet,
    train_supernet_on_ray,
    training_state_path,
)
from tnas.workers.tasks import create_task
from tnas.workers.tasks.digits import Digits
from tnas.workers.train import Budget, TrialFailed

SPACE = {
    "name": "tiny-matformer",
    "global": {"d_model": 16, "n_layers": {"low": 1, "high": 3}},
    "shared": {"mixer": "attention", "n_heads": {"choices": [1, 2]}, "head_dim": 8},
    "per_layer": {"ffn_dim": {"choices": [8, 16, 32, 64]}},
}
QUICK = Budget(steps=6, batch_size=8, lr=3e-3)


@pytest.fixture(scope="module")
def task():
    return create_task("digits", tokens="patch")


@pytest.fixture(scope="module")
def space():
    return DesignSpace.from_dict(SPACE)


def fresh(space, task, seed: int = 0) -> Supernet:
    return build_supernet(space, task, seed=seed)


def shape(sub) -> tuple:
    """(kept, per-layer (ffn_dim, n_heads)) of a submodel."""
    return sub.kept, tuple((layer.ffn_dim, layer.n_heads) for layer in sub.config.layers)


def test_sandwich_always_runs_the_largest_and_smallest_plus_random_mix_n_match(space, task):
    reports = []
    train_supernet(fresh(space, task), task, QUICK, space=space, samples=3, on_step=reports.append)
    assert [r.step for r in reports] == list(range(1, 7))
    largest = ((0, 1, 2), ((64, 2),) * 3)
    smallest = ((2,), ((8, 1),))
    sampled = set()
    for report in reports:
        assert len(report.submodels) == len(report.losses) == 5
        assert shape(report.submodels[0]) == largest
        assert shape(report.submodels[1]) == smallest
        sampled |= {shape(sub) for sub in report.submodels[2:]}
        assert all(0 < loss < 10 for loss in report.losses)
    assert len(sampled) > 5  # random Mix'n'Match
    assert any(len({ffn for ffn, _ in layers}) > 1 for _, layers in sampled)  # per layer


def test_all_runs_every_nested_granularity(space, task):
    reports = []
    budget = Budget(steps=2, batch_size=8)
    train_supernet(
        fresh(space, task), task, budget, space=space, strategy="all", on_step=reports.append
    )
    for report in reports:
        shapes = [shape(sub) for sub in report.submodels]
        assert shapes == [  # largest, smallest, then the ones between, each layer alike
            ((0, 1, 2), ((64, 2),) * 3),
            ((2,), ((8, 1),)),
            ((0, 2), ((16, 1),) * 2),
            ((0, 2), ((32, 2),) * 2),
        ]


def test_without_a_space_the_granularities_are_matformer_ffn_fractions(task):
    config = task.adapt(DesignSpace.from_dict(SPACE).sample(np.random.default_rng(0)))
    supernet = Supernet(config.replace(n_layers=2, layers=config.layers[:1] * 2))
    grains = Granularities.of(supernet)
    widest = supernet.config.layers[0].ffn_dim
    assert grains.ffn_dims == tuple(sorted({widest // d for d in (8, 4, 2, 1) if widest % d == 0}))
    assert [sub.kept for sub in grains.nested(supernet)] == [(0, 1)] * grains.count


def test_the_smallest_and_largest_submodels_learn(space, task):
    supernet = fresh(space, task)
    chain = Granularities.of(supernet, space).nested(supernet)
    smallest, biggest = chain[0], chain[-1]
    before = [evaluate_submodel(supernet, sub, task)["loss"] for sub in (smallest, biggest)]
    budget = Budget(steps=60, batch_size=32, lr=1e-2)
    result = train_supernet(supernet, task, budget, space=space, samples=1)
    after = [evaluate_submodel(supernet, sub, task)["loss"] for sub in (smallest, biggest)]
    assert after[0] < 0.8 * before[0] and after[1] < 0.8 * before[1], (before, after)
    assert result.step == 60 and result.metrics["steps"] == 60
    assert result.metrics["largest_loss"] < result.curve[0][1] / 3  # summed over 3 at step 1


@pytest.mark.parametrize("strategy", ["sandwich", "all"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(space, task, tmp_path, strategy):
    straight = fresh(space, task)
    train_supernet(straight, task, QUICK, space=space, strategy=strategy)

    class Interrupted(Exception):
        pass

    def stop_at_4(report):
        if report.step == 4:
            raise Interrupted

    checkpoint = tmp_path / "supernet.safetensors"
    first = fresh(space, task)
    with pytest.raises(Interrupted):
        train_supernet(
            first,
            task,
            QUICK,
            space=space,
            strategy=strategy,
            checkpoint=checkpoint,
            checkpoint_every=2,
            on_step=stop_at_4,
        )
    assert load_supernet(checkpoint).step == 4
    resumed = fresh(space, task, seed=99)  # its own weights are replaced by the checkpoint's
    result = train_supernet(
        resumed, task, QUICK, space=space, strategy=strategy, checkpoint=checkpoint, resume=True
    )
    assert (result.start_step, result.step, result.metrics["steps"]) == (4, 6, 2)
    for (name, want), got in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=name)
    assert load_supernet(checkpoint).step == 6


def train_to(checkpoint, space, task, budget=QUICK, **kwargs):
    supernet = fresh(space, task)
    train_supernet(supernet, task, budget, space=space, checkpoint=checkpoint, **kwargs)
    return supernet


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("garbage", "not a readable safetensors file"),
        ("missing", "no such checkpoint file"),
        ("other-strategy", "this run has strategy 'all', the checkpoint's had 'sandwich'"),
        ("other-task", "this run has task"),
        ("stale-state", "training state is at step 6 but supernet"),
        ("other-supernet", "not the expected"),
    ],
)
def test_a_corrupt_or_mismatched_training_checkpoint_is_a_one_line_error(
    space, task, tmp_path, damage, expected
):
    checkpoint = tmp_path / "supernet.safetensors"
    train_to(checkpoint, space, task)
    state = training_state_path(checkpoint)
    run_task, run_space, strategy = task, space, "sandwich"
    if damage == "garbage":
        state.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    elif damage == "missing":
        state.unlink()
    elif damage == "other-strategy":
        strategy = "all"
    elif damage == "other-task":
        run_task = create_task("digits", tokens="patch", seed=1)
    elif damage == "stale-state":
        supernet = load_supernet(checkpoint)
        supernet.step = 5
        save_supernet(supernet, checkpoint)
    elif damage == "other-supernet":
        run_space = DesignSpace.from_dict(SPACE | {"per_layer": {"ffn_dim": {"choices": [8, 48]}}})
    with pytest.raises(CheckpointError) as info:
        train_supernet(
            fresh(run_space, run_task),
            run_task,
            Budget(steps=8, batch_size=8, lr=3e-3),
            space=run_space,
            strategy=strategy,
            checkpoint=checkpoint,
            resume=True,
        )
    message = str(info.value)
    assert expected in message and "\n" not in message, message


class NaNFromStep(Digits):
    """Digits whose training loss turns NaN from the `bad_step`-th batch on."""

    def __init__(self, bad_step: int = 5):
        super().__init__(tokens="patch")
        self.bad_step = bad_step
        self.batches = 0

    def train_batch(self, batch_size, generator):
        self.batches += 1
        return super().train_batch(batch_size, generator)

    def loss(self, logits, targets):
        loss = super().loss(logits, targets)
        return loss * float("nan") if self.batches >= self.bad_step else loss


def test_nan_loss_fails_cleanly_and_keeps_the_last_good_checkpoint(space, tmp_path):
    task = NaNFromStep(bad_step=5)
    checkpoint = tmp_path / "supernet.safetensors"
    saved = {}

    def keep_bytes(report):
        if report.step == 4:
            saved["weights"] = checkpoint.read_bytes()
            saved["state"] = training_state_path(checkpoint).read_bytes()

    with pytest.raises(TrialFailed) as info:
        train_to(checkpoint, space, task, checkpoint_every=2, on_step=keep_bytes)
    assert info.value.reason == "nan_loss" and "at step 5" in info.value.message
    assert checkpoint.read_bytes() == saved["weights"]
    assert training_state_path(checkpoint).read_bytes() == saved["state"]
    assert load_supernet(checkpoint).step == 4
    again = NaNFromStep(bad_step=5)  # counts batches from 0 again: steps 5 and 6 are fine
    supernet = fresh(space, again)
    result = train_supernet(supernet, again, QUICK, space=space, checkpoint=checkpoint, resume=True)
    assert result.start_step == 4 and result.step == 6


def test_bad_arguments_are_rejected(space, task):
    supernet = fresh(space, task)
    with pytest.raises(ValueError, match="unknown strategy 'greedy'"):
        train_supernet(supernet, task, QUICK, space=space, strategy="greedy")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        train_supernet(supernet, task, QUICK, space=space, resume=True)
    other = Supernet(supernet.config.replace(n_classes=3))
    with pytest.raises(ValueError, match="not adapted to task 'digits'"):
        train_supernet(other, task, QUICK, space=space)


def test_training_runs_as_a_ray_task_and_writes_a_loadable_checkpoint(local_ray, tmp_path):
    import yaml

    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    checkpoint = tmp_path / "supernet.safetensors"
    budget = Budget(steps=4, batch_size=8)
    report = train_supernet_on_ray(
        str(space_file), "digits,tokens=patch", budget, checkpoint=checkpoint, checkpoint_every=2
    )
    assert report["status"] == "ok" and report["step"] == 4
    supernet = load_supernet(checkpoint)
    assert supernet.step == 4 and supernet.space == str(space_file)
    assert supernet.config.head == "classifier"
    report = train_supernet_on_ray(
        str(space_file),
        "digits,tokens=patch",
        Budget(steps=6, batch_size=8),
        checkpoint=checkpoint,
        resume=True,
    )
    assert (report["start_step"], report["step"]) == (4, 6)
    assert load_supernet(checkpoint).step == 6
