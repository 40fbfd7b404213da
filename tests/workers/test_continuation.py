"""Continuation of a training across rungs: split training equals one run, checkpoints, and the
`FidelityJob` that trains one rung of a multi-fidelity trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tnas.nn.checkpoint import CheckpointError, read_safetensors, save_model
from tnas.nn.mixers import MIXER_CLASSES
from tnas.space import ArchConfig, LayerConfig
from tnas.workers.backend import (
    FidelityJob,
    InlineEvaluator,
    ProfileSettings,
    TrialJob,
    WorkerCache,
    rung_key,
    split_rung_key,
)
from tnas.workers.tasks import create_task
from tnas.workers.train import (
    Budget,
    checkpoint_path,
    delete_checkpoint,
    save_checkpoint,
    train,
    training_threads,
)

TASK_METRICS = ("accuracy", "loss", "train_loss", "steps")
QUICK_PROFILE = ProfileSettings(batch=1, seq_len=16, repeats=2, warmup=1)


def small(mixer: str = "attention") -> ArchConfig:
    layer = LayerConfig(mixer=mixer, n_heads=2, ffn_dim=32, activation="gelu")
    return ArchConfig(d_model=16, n_layers=2, layers=(layer, layer))


@pytest.fixture(scope="module")
def digits():
    return create_task("digits")


def weights(result) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in result.model.state_dict().items()}


def assert_same_training(split, full, tolerance: float = 1e-6) -> None:
    a, b = weights(split), weights(full)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=tolerance), name
    for name in TASK_METRICS:
        assert split.metrics[name] == pytest.approx(full.metrics[name], rel=0, abs=tolerance)
    assert [s for s, _ in split.curve] == [s for s, _ in full.curve]
    losses = zip(split.curve, full.curve, strict=True)
    assert all(abs(x - y) <= tolerance for (_, x), (_, y) in losses)


def test_training_to_100_then_300_equals_training_to_300(digits, tmp_path):
    budget = Budget(steps=300, batch_size=16, lr=3e-3, seed=5, threads=1)
    with training_threads(1):
        full = train(small(), digits, budget)
        first = train(small(), digits, budget, until=100, keep_state=True)
        path = save_checkpoint(first, tmp_path / "trial.safetensors")
        torch.manual_seed(123)  # whatever ran in between: the checkpoint restores the RNG
        split = train(small(), digits, budget, resume=path)
    assert first.metrics["steps"] == 100 and split.metrics["steps"] == 300
    assert split.resumed_from == 100 and full.resumed_from == 0
    assert_same_training(split, full)


@pytest.mark.parametrize("mixer", sorted(MIXER_CLASSES))
def test_every_mixer_continues_exactly(mixer, digits, tmp_path):
    budget = Budget(steps=9, batch_size=8, seed=1, threads=1)
    with training_threads(1):
        full = train(small(mixer), digits, budget)
        first = train(small(mixer), digits, budget, until=3, keep_state=True)
        path = save_checkpoint(first, tmp_path / "c")
        split = train(small(mixer), digits, budget, resume=path)
    assert_same_training(split, full)


def test_three_segments_equal_one_run(digits, tmp_path):
    budget = Budget(steps=27, batch_size=8, seed=2, threads=1)
    path = tmp_path / "trial.safetensors"
    with training_threads(1):
        full = train(small(), digits, budget)
        resume = None
        for until in (3, 9, 27):
            result = train(small(), digits, budget, until=until, resume=resume, keep_state=True)
            resume = save_checkpoint(result, path)
    assert_same_training(result, full)


def test_the_schedule_is_the_final_budgets():
    """A rung's learning rate at step s is the full budget's, not a schedule of its own."""
    full = Budget(steps=300)
    assert full.warmup == 30
    assert full.lr_at(100) != Budget(steps=100).lr_at(100)


def test_a_checkpoint_round_trips_the_whole_training_state(digits, tmp_path):
    budget = Budget(steps=20, batch_size=8, seed=1, threads=1)
    first = train(small(), digits, budget, until=10, keep_state=True)
    path = save_checkpoint(first, tmp_path / "c.safetensors", {"metrics": {"params": 7.0}})
    again = train(small(), digits, budget, until=10, resume=path, keep_state=True)
    assert again.resumed_from == 10 and again.metrics["steps"] == 10
    assert again.measured == {"metrics": {"params": 7.0}}
    assert again.curve == first.curve
    assert_same_training(again, first, tolerance=0)
    saved, loaded = first.state.optimizer.state_dict(), again.state.optimizer.state_dict()
    # the groups are the fresh optimizer's: only the learning rate, set at every step, differs
    assert [g | {"lr": 0} for g in saved["param_groups"]] == [
        g | {"lr": 0} for g in loaded["param_groups"]
    ]
    for index, entries in saved["state"].items():
        for name, value in entries.items():
            assert torch.equal(value, loaded["state"][index][name]), (index, name)
    assert torch.equal(first.state.generator.get_state(), again.state.generator.get_state())
    assert torch.equal(first.state.rng, again.state.rng)
    with safe_open(path, framework="pt") as handle:
        names = set(handle.keys())
        header = json.loads(handle.metadata()["tnas.training_state"])
    assert {"rng.batches", "rng.torch"} <= names
    assert any(n.startswith("model.") for n in names)
    assert any(n.startswith("optimizer.") and n.endswith(".exp_avg") for n in names)
    assert header["step"] == 10 and len(header["curve"]) == 10


def test_a_checkpoint_that_does_not_fit_the_run_is_refused_in_one_line(digits, tmp_path):
    budget = Budget(steps=20, batch_size=8, seed=1)
    first = train(small(), digits, budget, until=10, keep_state=True)
    path = save_checkpoint(first, tmp_path / "c.safetensors")
    other_seed = Budget(steps=20, batch_size=8, seed=2)
    cases = {
        "budget": lambda: train(small(), digits, other_seed, resume=path),
        "config": lambda: train(small("gla"), digits, budget, resume=path),
        "past the target": lambda: train(small(), digits, budget, until=5, resume=path),
    }
    for what, attempt in cases.items():
        with pytest.raises(CheckpointError) as info:
            attempt()
        assert "\n" not in str(info.value), what
    model_dir = tmp_path / "model"
    save_model(train(small(), digits, Budget(steps=2, batch_size=8)).model, model_dir)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        train(small(), digits, budget, resume=model_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(small(), digits, budget, resume=tmp_path / "missing.safetensors")


def test_a_tampered_checkpoint_is_refused_in_one_line(digits, tmp_path):
    budget = Budget(steps=20, batch_size=8, seed=1)
    first = train(small(), digits, budget, until=10, keep_state=True)
    path = save_checkpoint(first, tmp_path / "c.safetensors")
    tensors, metadata = read_safetensors(path)
    header = json.loads(metadata["tnas.training_state"])
    moment = next(name for name in tensors if name.endswith(".exp_avg"))

    def with_header(**changes) -> dict:
        return metadata | {"tnas.training_state": json.dumps(header | changes)}

    tampered = {
        "moment shape": ({**tensors, moment: torch.zeros(3)}, metadata),
        "moment missing": ({k: v for k, v in tensors.items() if k != moment}, metadata),
        "short curve": (tensors, with_header(curve=header["curve"][:-1])),
        "bad step": (tensors, with_header(step="10")),
        "no rng": ({k: v for k, v in tensors.items() if k != "rng.torch"}, metadata),
    }
    for what, (bad_tensors, bad_metadata) in tampered.items():
        bad = tmp_path / f"{what}.safetensors"
        save_file(bad_tensors, bad, metadata=bad_metadata)
        with pytest.raises(CheckpointError) as info:
            train(small(), digits, budget, resume=bad)
        assert "\n" not in str(info.value), what


def test_the_state_is_kept_only_when_asked(digits):
    budget = Budget(steps=4, batch_size=8)
    result = train(small(), digits, budget, until=2)
    assert result.state is None
    with pytest.raises(ValueError, match="keep_state=True"):
        save_checkpoint(result, "unused.safetensors")


def test_until_must_be_a_step_of_the_budget(digits):
    for until in (0, 21, 2.5):
        with pytest.raises(ValueError, match="until must be a step in 1..20"):
            train(small(), digits, Budget(steps=20, batch_size=8), until=until)


def test_checkpoint_names_and_deletion(tmp_path):
    config = small()
    path = checkpoint_path(tmp_path, config.hash, "study/../12")
    assert path.parent == tmp_path and path.name == f"study_.._12-{config.hash}.safetensors"
    assert checkpoint_path(tmp_path, config.hash).name == f"{config.hash}.safetensors"
    with pytest.raises(ValueError, match="hex digest"):
        checkpoint_path(tmp_path, "../x")
    path.write_bytes(b"x")
    assert delete_checkpoint(tmp_path, config.hash, "study/../12") is True
    assert not path.exists()
    assert delete_checkpoint(tmp_path, config.hash, "study/../12") is False


def test_rung_keys():
    assert split_rung_key(rung_key("12", 3)) == ("12", 3)
    for bad in ("12", "@1", "12@", "12@x"):
        with pytest.raises(ValueError, match="not a rung key"):
            split_rung_key(bad)
    with pytest.raises(ValueError, match="must not contain"):
        rung_key("1@2", 0)


def fidelity_job(tmp_path: Path, **changes) -> FidelityJob:
    settings = {
        "task": "digits",
        "budget": Budget(steps=12, batch_size=8, seed=3, threads=1),
        "rungs": (4, 12),
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "profile": QUICK_PROFILE,
        "study": "s",
    }
    return FidelityJob(**(settings | changes))


def test_the_job_reports_each_rung_and_profiles_only_the_first(tmp_path):
    job = fidelity_job(tmp_path)
    cache, config = WorkerCache(), small()
    with training_threads(1):
        first = job.run(rung_key("3", 0), config, cache)
        assert job.checkpoint("3", config.hash).is_file()
        last = job.run(rung_key("3", 1), config, cache)
        whole = TrialJob(task="digits", budget=job.budget, profile=QUICK_PROFILE).run(
            "3", config, cache
        )
    assert first["status"] == "ok" and last["status"] == "ok", (first, last)
    assert (first["key"], first["rung"], first["steps"], first["resumed_from"]) == ("3@0", 0, 4, 0)
    assert (last["key"], last["rung"], last["steps"], last["resumed_from"]) == ("3@1", 1, 12, 4)
    assert first["metrics"]["steps"] == 4 and last["metrics"]["steps"] == 12
    assert "profile_s" in first["timings"] and "profile_s" not in last["timings"]
    for name in ("latency_ms", "params", "flops"):
        assert last["metrics"][name] == first["metrics"][name]
    assert last["fingerprint"] == first["fingerprint"]
    assert set(last["metrics"]) == set(whole["metrics"]) >= job.metric_names()
    for name in ("accuracy", "loss", "train_loss"):
        assert last["metrics"][name] == pytest.approx(whole["metrics"][name], abs=1e-6)
    assert len(last["curve"]) == 12
    assert not job.checkpoint("3", config.hash).exists()  # finished: deleted


def test_a_kept_checkpoint_survives_the_last_rung_and_discard(tmp_path):
    job = fidelity_job(tmp_path, keep_checkpoints=True, profile=None)
    cache, config = WorkerCache(), small()
    for rung in (0, 1):
        assert job.run(rung_key("5", rung), config, cache)["status"] == "ok"
    assert job.checkpoint("5", config.hash).is_file()
    assert job.discard("5", config.hash) is False
    assert job.checkpoint("5", config.hash).is_file()


def test_discard_deletes_a_stopped_trials_checkpoint(tmp_path):
    job = fidelity_job(tmp_path, profile=None)
    config = small()
    assert job.run(rung_key("8", 0), config, WorkerCache())["status"] == "ok"
    assert job.discard("8", config.hash) is True
    assert not job.checkpoint("8", config.hash).exists()
    assert job.discard("8", config.hash) is False


def test_a_lost_checkpoint_means_training_from_scratch(tmp_path):
    job = fidelity_job(tmp_path)
    report = job.run(rung_key("9", 1), small(), WorkerCache())
    assert report["status"] == "ok" and report["resumed_from"] == 0
    assert "profile_s" in report["timings"]


def test_bad_keys_and_rungs_fail_as_reports(tmp_path):
    job = fidelity_job(tmp_path, profile=None)
    for key in ("3", rung_key("3", 2)):
        report = job.run(key, small(), WorkerCache())
        assert report["status"] == "failed" and report["reason"] == "error", key
        assert report["key"] == key


def test_a_failed_rung_reports_its_rung(tmp_path):
    job = fidelity_job(tmp_path, budget=Budget(steps=12, batch_size=8, lr=1e30), profile=None)
    report = job.run(rung_key("4", 0), small(), WorkerCache())
    assert (report["status"], report["reason"]) == ("failed", "nan_loss")
    assert (report["rung"], report["steps"]) == (0, 4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rungs": ()}, "non-empty"),
        ({"rungs": (4, 4, 12)}, "positive and rising"),
        ({"rungs": (4, 10)}, "must equal budget.steps"),
        ({"checkpoint_dir": ""}, "checkpoint_dir"),
    ],
    ids=["no-rungs", "not-rising", "last-is-not-the-budget", "no-directory"],
)
def test_a_bad_job_is_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        fidelity_job(tmp_path, **changes)


def test_the_inline_evaluator_runs_the_job_unchanged(tmp_path):
    evaluator = InlineEvaluator(fidelity_job(tmp_path, profile=None), threads=1)
    evaluator.submit(rung_key("1", 0), small())
    evaluator.submit(rung_key("1", 1), small())
    reports = evaluator.collect()
    assert [(r["key"], r["status"], r["rung"]) for r in reports] == [
        ("1@0", "ok", 0),
        ("1@1", "ok", 1),
    ]


@pytest.mark.usefixtures("local_ray")
def test_the_ray_pool_runs_the_job_unchanged_and_continues_on_any_worker(tmp_path):
    from tnas.workers.pool import RayPool

    job = fidelity_job(tmp_path, profile=None)
    configs = {"1": small(), "2": small("gla")}
    pool = RayPool(job, workers=2)
    try:
        reports = {}
        for rung in (0, 1):
            for trial, config in configs.items():
                pool.submit(rung_key(trial, rung), config)
            while len(reports) < 2 * (rung + 1):
                reports |= {r["key"]: r for r in pool.collect(timeout=120)}
    finally:
        pool.close()
    assert all(r["status"] == "ok" for r in reports.values()), reports
    assert [reports[f"{t}@1"]["resumed_from"] for t in configs] == [4, 4]
    cache = WorkerCache()
    assert job.run(rung_key("3", 0), small(), cache)["status"] == "ok"
    inline = job.run(rung_key("3", 1), small(), cache)
    assert reports["1@1"]["metrics"]["accuracy"] == pytest.approx(inline["metrics"]["accuracy"])
