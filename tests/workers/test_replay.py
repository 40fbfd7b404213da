from __future__ import annotations

import json

import numpy as np
import pytest

from tnas.space import ArchConfig, load_space
from tnas.workers.replay import ReplayError, ReplayEvaluator, write_table


@pytest.fixture
def recorded(tmp_path):
    space = load_space("primer")
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(5)]
    rows = [
        (
            c,
            {
                "status": "ok",
                "reason": None,
                "metrics": {"accuracy": 0.5 + i / 10, "latency_ms": 1.0 + i},
            },
        )
        for i, c in enumerate(configs)
    ]
    path = tmp_path / "table.jsonl"
    write_table(path, rows)
    return space, configs, rows, path


def test_replay_returns_exactly_what_was_recorded(recorded):
    _, configs, rows, path = recorded
    replay = ReplayEvaluator(path)
    for i, config in enumerate(configs):
        replay.submit(f"t{i}", config)
    reports = replay.collect()
    assert [r["key"] for r in reports] == [f"t{i}" for i in range(5)]
    for report, (config, row) in zip(reports, rows, strict=True):
        assert report["status"] == "ok"
        assert report["config_hash"] == config.hash
        assert report["metrics"] == row["metrics"]


def test_flat_configs_and_csv_tables_need_and_use_the_space(recorded, tmp_path):
    space, configs, _, _ = recorded
    flat = tmp_path / "flat.jsonl"
    flat.write_text(
        "\n".join(
            json.dumps({"config": space.to_flat(c), "metrics": {"accuracy": i}})
            for i, c in enumerate(configs)
        )
    )
    with pytest.raises(ReplayError, match="needs the design space"):
        ReplayEvaluator(flat)
    replay = ReplayEvaluator(flat, space=space)
    replay.submit("x", configs[3])
    assert replay.collect()[0]["metrics"] == {"accuracy": 3.0}

    table = tmp_path / "table.csv"
    names = sorted({k for c in configs for k in space.to_flat(c)})
    lines = [",".join(names + ["accuracy"])]
    for i, c in enumerate(configs):
        values = space.to_flat(c)
        lines.append(",".join([str(values.get(n, "")) for n in names] + [str(i / 10)]))
    table.write_text("\n".join(lines) + "\n")
    replay = ReplayEvaluator(table, space=space)
    replay.submit("y", configs[2])
    assert replay.collect()[0]["metrics"] == {"accuracy": 0.2}


def test_unknown_config_and_recorded_failure(recorded, tmp_path):
    _, configs, _, path = recorded
    with path.open("a") as handle:
        other = ArchConfig(n_layers=1)
        handle.write(
            json.dumps(
                {"config": other.to_dict(), "metrics": {}, "status": "failed", "reason": "nan_loss"}
            )
            + "\n"
        )
    replay = ReplayEvaluator(path)
    replay.submit("a", ArchConfig(n_layers=2))
    replay.submit("b", ArchConfig(n_layers=1))
    missing, nan = replay.collect()
    assert missing["status"] == "failed" and missing["reason"] == "not_recorded"
    assert nan["status"] == "failed" and nan["reason"] == "nan_loss"


def test_noise_is_seeded_and_relative(recorded):
    _, configs, rows, path = recorded

    def noisy(seed):
        replay = ReplayEvaluator(path, noise=0.05, seed=seed)
        replay.submit("t", configs[0])
        replay.submit("t", configs[0])
        return [r["metrics"]["accuracy"] for r in replay.collect()]

    first = noisy(1)
    assert first == noisy(1) and first != noisy(2)
    assert first[0] != first[1]
    assert all(abs(v / 0.5 - 1) < 0.5 for v in first)


def test_broken_table_is_one_line_with_the_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"config": {"n_layers": 1}, "metrics": {}}\n{not json\n')
    with pytest.raises(ReplayError, match=r"bad.jsonl:2: not JSON") as info:
        ReplayEvaluator(path)
    assert "\n" not in str(info.value)
    path.write_text('{"config": {"d_model": 30, "n_layers": 1, "layers": [{"n_heads": 4}]}}\n')
    with pytest.raises(ReplayError, match=r"bad.jsonl:1: .*not divisible by n_heads 4"):
        ReplayEvaluator(path)
    with pytest.raises(ReplayError, match="no such replay table"):
        ReplayEvaluator(tmp_path / "missing.jsonl")
