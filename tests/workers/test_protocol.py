"""One measurement protocol per study: profiling threads and defaults, training threads, and a
stop event that cuts an inline trial at its next step (issue 16)."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from typer.testing import CliRunner

from tnas.cli import app
from tnas.space import ArchConfig, LayerConfig, load_space
from tnas.workers import train as train_module
from tnas.workers.backend import InlineEvaluator, ProfileSettings, TrialJob, WorkerCache, run_trial
from tnas.workers.reports import FAILURE_REASONS
from tnas.workers.tasks import create_task
from tnas.workers.train import (
    Budget,
    TrialFailed,
    available_cores,
    default_threads,
    train,
    training_threads,
)

runner = CliRunner()


def tiny() -> ArchConfig:
    return ArchConfig(d_model=16, n_layers=1, layers=(LayerConfig(n_heads=2, ffn_dim=32),))


class Watched:
    """The digits task, calling `on_batch(calls)` before each training batch it hands out."""

    def __init__(self, on_batch=lambda calls: None):
        self.task = create_task("digits")
        self.on_batch = on_batch
        self.calls = 0

    def train_batch(self, batch_size, generator):
        self.calls += 1
        self.on_batch(self.calls)
        return self.task.train_batch(batch_size, generator)

    def __getattr__(self, name):
        return getattr(self.task, name)


def test_profiling_uses_one_thread_by_default_and_never_all_cores():
    settings = ProfileSettings()
    assert settings.threads == 1 and settings.warmup == 3 and settings.repeats == 20
    with pytest.raises(ValueError, match="profile threads must be >= 1"):
        ProfileSettings(threads=None)


def test_profile_into_passes_the_whole_protocol(monkeypatch):
    from tnas.workers import backend, profile

    seen = {}

    def fake_profile(config, **kwargs):
        seen.update(kwargs)
        return {"latency_ms": 1.0, "fingerprint": {}}

    monkeypatch.setattr(profile, "profile", fake_profile)
    settings = ProfileSettings(batch=2, seq_len=4096, repeats=7, warmup=5, threads=2)
    backend.profile_into({}, {}, tiny(), None, settings)
    assert seen["batch"] == 2 and seen["repeats"] == 7
    assert seen["warmup"] == 5 and seen["threads"] == 2
    assert seen["seq_len"] == tiny().max_seq_len  # cut to the config's


def test_a_search_profiles_with_its_run_settings_inline():
    from tnas.launch import build_evaluator
    from tnas.search.run import RunSpec

    spec = RunSpec(space="simq", workers=0, profile_warmup=5, profile_threads=2, threads=1)
    start, _ = build_evaluator(spec, load_space("simq"))
    evaluator = start()
    try:
        assert evaluator.job.profile == ProfileSettings(warmup=5, threads=2)
        assert evaluator.threads == 1
    finally:
        evaluator.close()
    start, _ = build_evaluator(RunSpec(space="simq", workers=0), load_space("simq"))
    assert start().threads == default_threads(1)


def test_tnas_profile_defaults_are_a_searchs(tmp_path):
    from tnas.search.run import RunSpec

    search = RunSpec()
    settings = ProfileSettings()
    assert (settings.batch, settings.seq_len, settings.repeats, settings.warmup) == (
        search.profile_batch,
        search.profile_seq_len,
        search.profile_repeats,
        search.profile_warmup,
    )
    assert settings.threads == search.profile_threads == 1
    config = tmp_path / "tiny.json"
    config.write_text(tiny().to_json())
    result = runner.invoke(app, ["profile", str(config), "--json"])
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    assert measured["threads"] == settings.threads
    assert measured["repeats"] == settings.repeats and measured["warmup"] == settings.warmup
    assert measured["batch"] == settings.batch
    assert measured["seq_len"] == min(settings.seq_len, tiny().max_seq_len)


def test_training_sets_its_threads_and_restores_them():
    before = torch.get_num_threads()
    task = Watched()
    seen = []
    task.on_batch = lambda calls: seen.append(torch.get_num_threads())
    train(tiny(), task, Budget(steps=3, batch_size=8, threads=1))
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == before
    seen.clear()
    train(tiny(), task, Budget(steps=2, batch_size=8, threads=10**4))
    assert seen == [available_cores()] * 2  # never more threads than cores


def test_training_threads_none_leaves_them_alone():
    before = torch.get_num_threads()
    with training_threads(None):
        assert torch.get_num_threads() == before


def test_a_set_stop_event_cuts_training_at_the_next_step():
    stop = threading.Event()
    task = Watched(lambda calls: stop.set() if calls == 3 else None)
    with pytest.raises(TrialFailed) as info:
        train(tiny(), task, Budget(steps=10**6, batch_size=8), stop=stop)
    assert info.value.reason == "interrupted"
    assert task.calls == 3  # step 3 finished, step 4 never started
    assert "interrupted" in FAILURE_REASONS and "bad_metric" in FAILURE_REASONS


def test_run_trial_reports_an_interrupted_trial_as_failed():
    stop = threading.Event()
    stop.set()
    job = TrialJob(task="digits", budget=Budget(steps=5, batch_size=8), profile=None)
    report = run_trial("t0", tiny(), job, create_task("digits"), stop=stop)
    assert report["status"] == "failed" and report["reason"] == "interrupted"


def test_interrupting_the_inline_evaluator_fails_the_running_trial():
    job = TrialJob(task="digits", budget=Budget(steps=10**6, batch_size=8), profile=None)
    cache = WorkerCache()
    evaluator = InlineEvaluator(job, cache)
    task = Watched(lambda calls: evaluator.interrupt() if calls == 2 else None)
    cache.tasks["digits"] = task
    evaluator.submit("t0", tiny())
    (report,) = evaluator.collect()
    assert report["status"] == "failed" and report["reason"] == "interrupted"
    assert task.calls == 2


def test_default_threads_divides_the_cores_among_workers(monkeypatch):
    monkeypatch.setattr(train_module, "available_cores", lambda: 8)
    assert [default_threads(w) for w in (0, 1, 2, 3, 8, 16)] == [8, 8, 4, 2, 1, 1]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity mask here")
def test_available_cores_follows_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert available_cores() == 3 and default_threads(2) == 1


def test_bad_thread_counts_are_refused():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Budget(threads=0)
