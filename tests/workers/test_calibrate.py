from __future__ import annotations

import pytest

from tnas.nn.quant import UnsupportedQuantization
from tnas.predictors.latency import LatencyPredictor, LatencyTable
from tnas.space import ArchConfig, DesignSpace, LayerConfig
from tnas.workers.calibrate import calibrate, measure_block, measure_overhead
from tnas.workers.profile import device_fingerprint, profile

FAST = dict(repeats=3, threads=1)


def tiny_space(bits=(32, 8)) -> DesignSpace:
    return DesignSpace.from_dict(
        {
            "name": "tiny",
            "global": {
                "d_model": 32,
                "n_layers": {"low": 1, "high": 2},
                "vocab_size": 64,
                "max_seq_len": 16,
            },
            "shared": {"mixer": "attention", "activation": "gelu"},
            "per_layer": {
                "n_heads": 4,
                "ffn_dim": {"choices": [32, 64]},
                "bits": {"choices": list(bits)} if len(bits) > 1 else bits[0],
            },
        }
    )


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return calibrate(tiny_space(), budget=12, seq_len=16, **FAST)


def test_calibrate_respects_the_budget_with_positive_entries(table):
    assert 0 < table.measurements <= 12
    assert table.device_id == device_fingerprint("cpu")["id"]
    assert table.entries and table.overhead and len(table.full_models) >= 2
    assert all(ms > 0 for ms in [*table.entries.values(), *table.overhead.values()])
    assert {key[5] for key in table.entries} <= {32, 8}
    assert LatencyTable.from_json(table.to_json()) == table


def test_budget_left_once_every_key_is_measured_times_more_whole_models(table):
    keys = len(table.entries) + len(table.overhead)
    assert keys == 5  # 2 ffn_dim x 2 bits blocks, 1 overhead: all the tiny space has
    assert table.measurements == 12
    assert len(table.full_models) == 12 - keys > 3  # 3 by default, then the budget left


@pytest.fixture
def fake_measurements(monkeypatch) -> list[tuple[str, str]]:
    """Calibration's measurements replaced by instant fakes; the calls, in order, as (what,
    config hash)."""
    import tnas.workers.calibrate as module

    calls = []

    def fake(kind: str, ms: float):
        def measure(config, *args, **kwargs):
            calls.append((kind, config.hash))
            return {"latency_ms": ms} if kind == "whole" else ms

        return measure

    monkeypatch.setattr(module, "profile", fake("whole", 1.0))
    monkeypatch.setattr(module, "measure_block", fake("block", 0.1))
    monkeypatch.setattr(module, "measure_overhead", fake("overhead", 0.1))
    return calls


def test_each_whole_model_is_timed_right_after_its_own_blocks(fake_measurements):
    """On a machine whose speed drifts, a whole model and its blocks are measured together."""
    calls = fake_measurements
    table = calibrate(tiny_space(), budget=12, full_models=3, seq_len=16, **FAST)
    assert table.measurements == 12
    whole = [i for i, (kind, _) in enumerate(calls) if kind == "whole"]
    for previous, index in zip([-1, *whole[:2]], whole[:3], strict=True):
        parts = {digest for _, digest in calls[previous + 1 : index]}
        assert parts <= {calls[index][1]}  # only that model's keys measured in between
    assert calls[0][0] != "whole"  # the first model's keys come first


def test_a_large_budget_times_at_most_max_whole_models(fake_measurements):
    from tnas.workers.calibrate import MAX_WHOLE_MODELS

    table = calibrate(tiny_space(), budget=1000, full_models=3, seq_len=16, **FAST)
    assert len(table.full_models) == MAX_WHOLE_MODELS
    assert table.measurements == MAX_WHOLE_MODELS + 5  # and the tiny space's 5 keys


def test_measure_block_and_overhead_are_positive():
    cfg = ArchConfig(
        d_model=32,
        n_layers=1,
        vocab_size=64,
        max_seq_len=16,
        layers=(LayerConfig(ffn_dim=64, bits=8),),
    )
    assert measure_block(cfg, 0, seq_len=16, **FAST) > 0
    assert measure_overhead(cfg, seq_len=16, **FAST) > 0


def sized(d_model: int, n_layers: int, ffn_dim: int) -> ArchConfig:
    layers = tuple(LayerConfig(n_heads=4, ffn_dim=ffn_dim) for _ in range(n_layers))
    return ArchConfig(
        d_model=d_model, n_layers=n_layers, vocab_size=64, max_seq_len=64, layers=layers
    )


def test_predicted_latency_ranks_held_out_configs_like_profile():
    space = DesignSpace.from_dict(
        {
            "name": "sized",
            "global": {
                "d_model": {"choices": [32, 128]},
                "n_layers": {"low": 1, "high": 4},
                "vocab_size": 64,
                "max_seq_len": 64,
            },
            "per_layer": {"n_heads": 4, "ffn_dim": {"choices": [32, 512]}},
        }
    )
    table = calibrate(space, budget=12, seq_len=64, **FAST)
    assert table.measurements <= 12
    # Each step multiplies the work of a forward (layers x d_model x ffn_dim) by 4 or more.
    held_out = [sized(32, 1, 32), sized(32, 4, 32), sized(128, 1, 32), sized(128, 4, 32),
                sized(128, 1, 512), sized(128, 4, 512)]  # fmt: skip
    measured = [profile(cfg, seq_len=64, warmup=1, **FAST)["latency_ms"] for cfg in held_out]
    report = LatencyPredictor(table).report(held_out, measured, seq_len=64)
    assert report["kendall_tau"] > 0


def test_calibrated_predictor_correlates_with_profile(table):
    predictor = LatencyPredictor(table)
    held_out = [
        ArchConfig(
            d_model=32,
            n_layers=1,
            vocab_size=64,
            max_seq_len=16,
            layers=(LayerConfig(ffn_dim=32, bits=8),),
        ),
        ArchConfig(
            d_model=32,
            n_layers=2,
            vocab_size=64,
            max_seq_len=16,
            layers=(LayerConfig(ffn_dim=64),) * 2,
        ),
    ]
    assert all(predictor.predict(cfg) > 0 for cfg in held_out)


def test_bits_4_on_cpu_is_refused():
    with pytest.raises(UnsupportedQuantization, match="4-bit"):
        calibrate(tiny_space((4,)), budget=12, seq_len=16, **FAST)
    cfg = ArchConfig(
        d_model=32,
        n_layers=1,
        vocab_size=64,
        max_seq_len=16,
        layers=(LayerConfig(ffn_dim=32, bits=4),),
    )
    with pytest.raises(UnsupportedQuantization, match="4-bit"):
        measure_block(cfg, 0, seq_len=16, **FAST)
