"""A search on PostgreSQL through a URL with a password: the password reaches the server, but
nothing tnas prints or stores holds it (issue 8, "Hostile input")."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from tests.conftest import write_replay_table
from tnas.cli import app

PASSWORD = "S3cret-pw"
runner = CliRunner()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_replay_table(tmp_path_factory.mktemp("replay") / "table.jsonl", 12, seed=2)


def test_a_postgresql_password_is_never_printed_or_stored(postgres_cluster, table):
    plain = postgres_cluster.create_database("secrets")  # trusts local connections
    url = plain.replace("tnas@", f"tnas:{PASSWORD}@")
    masked = plain.replace("tnas@", "tnas:***@")
    args = ["--evaluator", f"replay:{table}", "--workers", "0", "--storage", url]
    outputs = []
    for command in (
        ["search", "launch", "--trials", "3", "--study", "pw", *args],
        ["search", "resume", "pw", "--storage", url],
        ["studies", "--storage", url],
        ["trials", "pw", "--storage", url, "--format", "json"],
        ["pareto", "pw", "--storage", url, "--format", "json"],
        ["trials", "missing", "--storage", url],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == (2 if "missing" in command else 0), result.output
        outputs.append(result.output)
    assert PASSWORD not in "".join(outputs)
    assert masked.split("@")[0] in outputs[-1]  # the unknown-study error names the database

    study = optuna.load_study(study_name="pw", storage=url)
    trials = study.get_trials()
    assert len(trials) >= 3
    stored = [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
    stored += [t.user_attrs for t in trials] + [t.system_attrs for t in trials]
    assert PASSWORD not in json.dumps(stored, default=str)
    assert study.user_attrs["tnas"]["run"]["storage"] == masked
