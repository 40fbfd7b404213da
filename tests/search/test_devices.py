"""A study measures latency on one device: a trial measured on another stops the search, unless
the study allows mixed devices.

The evaluator here is a replay of made-up metrics that says which device measured each trial,
as a Ray pool over two kinds of machine would.
"""

from __future__ import annotations

import logging

import optuna
import pytest
from optuna.trial import TrialState

from tnas.search.db import Database
from tnas.search.driver import DEVICE_ATTR, RunError
from tnas.search.run import RunSpec, make_driver, open_study
from tnas.space import load_space
from tnas.workers.reports import ok_report

FAST = {"id": "aaaa1111", "device": "cpu", "cpu": "Fast CPU"}
SLOW = {"id": "bbbb2222", "device": "cpu", "cpu": "Slow CPU"}


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class TwoMachines:
    """Answers trials in turn from two machines: `devices[i % 2]` measures the i-th."""

    slots = 1

    def __init__(self, devices):
        self.devices, self.count, self.done = devices, 0, []

    def submit(self, key, config):
        params = config.derived()["params"]
        metrics = {"accuracy": 1 - 1 / (1 + params / 2e6), "latency_ms": params / 1e5}
        fingerprint = self.devices[self.count % len(self.devices)]
        self.done.append(ok_report(key, config, metrics, fingerprint=fingerprint))
        self.count += 1

    def collect(self, timeout=None):
        reports, self.done = self.done, []
        return reports

    def close(self):
        pass


def search(tmp_path, devices, **settings):
    spec = RunSpec(
        space="simq",
        sampler="random",
        trials=4,
        workers=1,
        study="devices",
        storage=f"sqlite:///{tmp_path / 'devices.db'}",
        **settings,
    )
    space = load_space("simq")
    db = Database(spec.storage)
    study = open_study(spec, db, space)
    driver = make_driver(spec, study, space, TwoMachines(devices), db, [], None, None)
    try:
        return study, driver.run()
    finally:
        db.close()


def test_a_trial_measured_on_another_device_stops_the_search_in_one_line(tmp_path):
    with pytest.raises(RunError) as refused:
        search(tmp_path, [FAST, SLOW])

    message = str(refused.value)
    assert "\n" not in message
    assert "was measured on cpu (Slow CPU, id bbbb2222)" in message
    assert "measures on cpu (Fast CPU, id aaaa1111)" in message
    assert "--allow-mixed-devices" in message
    study = optuna.load_study(study_name="devices", storage=f"sqlite:///{tmp_path}/devices.db")
    first, second = study.get_trials()[:2]
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.FAIL
    assert second.user_attrs["reason"] == "other_device"  # not counted: resume re-runs it
    assert study.user_attrs[DEVICE_ATTR]["id"] == FAST["id"]


def test_one_device_or_an_allowed_mix_runs_to_the_budget(tmp_path):
    study, progress = search(tmp_path, [FAST])
    assert progress.finished == 4

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    study, progress = search(mixed, [FAST, SLOW], allow_mixed_devices=True)
    assert progress.finished == 4
    ids = {t.user_attrs["fingerprint"]["id"] for t in study.get_trials()}
    assert ids == {FAST["id"], SLOW["id"]}
