"""A multi-fidelity search on the Ray pool: rungs of one trial may run on either worker, each
continuing from the checkpoint the last one left in the shared folder."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tnas.launch import launch

pytestmark = pytest.mark.usefixtures("local_ray")


def test_a_fidelity_search_on_two_ray_workers_reaches_the_top_rung(tmp_path):
    folder = tmp_path / "checkpoints"
    result = launch(
        space="simq",
        task="digits",
        trials=4,
        workers=2,
        fidelity="steps",
        min_steps=2,
        max_steps=6,
        eta=3,
        checkpoint_dir=str(folder),
        study="ray",
        storage=f"sqlite:///{tmp_path / 'ray.db'}",
        profile_repeats=2,
    )

    trials = optuna.load_study(study_name="ray", storage=result.storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, [(t.state, t.user_attrs.get("reason")) for t in trials]
    for trial in complete:
        assert sorted(int(steps) for steps in trial.user_attrs["rungs"]) == [2, 6]
        assert trial.user_attrs["metrics"]["steps"] == 6
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len(trials) == 4
    assert list(folder.iterdir()) == []
