"""`tnas.launch`: the one path into a search, from Python as from the CLI."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import write_replay_table
from tnas.launch import RunError, RunSpec, SearchResult, launch, resume, run_spec
from tnas.search.db import StorageError


@pytest.fixture
def table(tmp_path):
    return write_replay_table(tmp_path / "table.jsonl", rows=40, seed=0)


def replayed(table, tmp_path, **settings) -> dict:
    return {
        "space": "primer",
        "pool": str(table),  # the pool is in the replay format: it is the evaluator too
        "objectives": ["accuracy:max", "latency_ms:min"],
        "trials": 6,
        "workers": 0,
        "study": "s",
        "storage": f"sqlite:///{tmp_path / 'x.db'}",
    } | settings


def test_launch_returns_the_study_its_end_and_its_front(table, tmp_path):
    seen = []
    result = launch(progress=seen.append, **replayed(table, tmp_path))
    assert isinstance(result, SearchResult)
    assert (result.study, result.stopped) == ("s", "6 trials evaluated")
    assert result.storage == f"sqlite:///{tmp_path / 'x.db'}"
    assert result.progress.finished == 6 and not result.interrupted
    assert result.front and {"number", "accuracy", "latency_ms", "config"} <= set(result.front[0])
    assert seen[0].study == "s" and seen[0].total == 6 and seen[0].requeued is None
    assert seen[-1].finished == 6


def test_keywords_override_a_run_file_and_a_dict(table, tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(replayed(table, tmp_path, trials=3)))
    assert run_spec(run_file).trials == 3
    assert run_spec(run_file, trials=5, seed=None).trials == 5
    assert run_spec({"trials": 3}, trials=4).trials == 4
    spec = RunSpec(space="simq", trials=3)
    assert (
        run_spec(spec, sampler="tpe").model_dump()
        == spec.model_copy(update={"sampler": "tpe"}).model_dump()
    )
    result = launch(str(run_file), trials=4)
    assert result.progress.finished == 4


def test_resume_goes_on_with_the_stored_settings_and_a_larger_study_is_joined(table, tmp_path):
    settings = replayed(table, tmp_path)
    launch(**settings)
    again = resume("s", storage=settings["storage"])
    assert again.progress.requeued == 0 and again.progress.finished == 6
    more = launch(**(settings | {"trials": 9}))
    assert more.progress.finished == 9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objectives": ["accuracy:best"]}, "must be NAME:max or NAME:min"),
        ({"objectives": ["bleu:max"]}, "unknown objective 'bleu'"),
        ({"constraints": ["params <= 1"]}, "no feasible config"),
        ({"sampler": "cmaes"}, "unknown sampler 'cmaes'"),
        ({"space": "nope"}, "nope"),
        ({"pool": "missing.jsonl"}, "no such pool file"),
    ],
    ids=["direction", "objective", "constraint", "sampler", "space", "pool"],
)
def test_bad_settings_raise_one_line_and_write_nothing(table, tmp_path, change, message):
    with pytest.raises(RunError, match=message) as raised:
        launch(**replayed(table, tmp_path, **change))
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "x.db").exists()


def test_an_unknown_study_or_database_is_one_line(table, tmp_path):
    launch(**replayed(table, tmp_path))
    with pytest.raises(RunError, match="unknown study 'other'; studies in .*: s"):
        resume("other", storage=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StorageError):
        launch(**replayed(table, tmp_path, storage="mysql://nowhere/x"))
