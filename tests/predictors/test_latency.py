from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tnas.predictors.latency import LatencyPredictor, LatencyTable, block_key, overhead_key
from tnas.space import ArchConfig, LayerConfig

FFN_DIMS = (32, 64, 128)
BITS = (32, 8)
OVERHEAD_MS = 0.3


def entry_ms(ffn_dim: int, bits: int, mixer: str) -> float:
    return (0.01 * ffn_dim + 0.2) * (0.5 if bits == 8 else 1.0) * (2.0 if mixer == "ssm" else 1.0)


def config(*layers: tuple[int, int, str]) -> ArchConfig:
    return ArchConfig(
        d_model=32,
        n_layers=len(layers),
        vocab_size=64,
        max_seq_len=16,
        layers=tuple(LayerConfig(mixer=m, ffn_dim=f, bits=b) for f, b, m in layers),
    )


def synthetic_table(ffn_dims=FFN_DIMS) -> LatencyTable:
    table = LatencyTable(device_id="synthetic")
    for mixer in ("attention", "ssm"):
        for ffn_dim in ffn_dims:
            for bits in BITS:
                cfg = config((ffn_dim, bits, mixer))
                table.entries[block_key(cfg, cfg.layers[0], 1, 16)] = entry_ms(ffn_dim, bits, mixer)
    table.overhead[overhead_key(config((32, 32, "attention")), 1, 16)] = OVERHEAD_MS
    return table


def true_ms(cfg: ArchConfig) -> float:
    return OVERHEAD_MS + sum(entry_ms(l.ffn_dim, l.bits, l.mixer) for l in cfg.layers)


def sample_configs(n: int, seed: int = 0, ffn_dims=FFN_DIMS) -> list[ArchConfig]:
    rng = np.random.default_rng(seed)
    return [
        config(
            *(
                (
                    int(rng.choice(ffn_dims)),
                    int(rng.choice(BITS)),
                    str(rng.choice(["attention", "ssm"])),
                )
                for _ in range(int(rng.integers(1, 5)))
            )
        )
        for _ in range(n)
    ]


def test_module_imports_no_torch():
    code = "import sys, tnas.predictors.latency; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_exact_when_latency_is_the_sum_of_entries():
    predictor = LatencyPredictor(synthetic_table())
    for cfg in sample_configs(20):
        assert predictor.predict(cfg, batch=1, seq_len=16) == pytest.approx(true_ms(cfg), rel=1e-12)
    assert predictor.interpolated == 0


def test_seq_len_defaults_to_max_seq_len_cap():
    cfg = sample_configs(1)[0]
    predictor = LatencyPredictor(synthetic_table())
    assert predictor.predict(cfg) == predictor.predict(cfg, batch=1, seq_len=16)


def test_residual_fit_corrects_a_constant_per_layer_overhead():
    predictor = LatencyPredictor(synthetic_table())
    train, test = sample_configs(12, seed=1), sample_configs(12, seed=2)
    per_layer = 0.15
    measured = [true_ms(c) + per_layer * c.n_layers for c in train]
    predictor.fit_residual(train, measured, batch=1, seq_len=16, alpha=1e-8)
    for cfg in test:
        assert predictor.predict(cfg) == pytest.approx(
            true_ms(cfg) + per_layer * cfg.n_layers, rel=1e-6
        )


def test_full_models_in_the_table_fit_the_residual():
    table = synthetic_table()
    for cfg in sample_configs(8, seed=3):
        table.full_models.append((cfg.to_json(), 1, 16, true_ms(cfg) + 0.1 * cfg.n_layers))
    fitted, plain = LatencyPredictor(table, alpha=1e-8), LatencyPredictor(synthetic_table())
    cfg = config((64, 32, "attention"), (64, 8, "ssm"), (32, 8, "ssm"))
    assert fitted.predict(cfg) == pytest.approx(true_ms(cfg) + 0.3, rel=1e-6)
    assert plain.predict(cfg) == pytest.approx(true_ms(cfg))


@pytest.mark.parametrize("mixer", ["attention", "ssm"])
@pytest.mark.parametrize("bits", BITS, ids=lambda b: f"bits{b}")
def test_missing_ffn_dim_is_interpolated_between_neighbours(mixer, bits):
    predictor = LatencyPredictor(synthetic_table())
    cfg = config((96, bits, mixer))
    low, high = entry_ms(64, bits, mixer), entry_ms(128, bits, mixer)
    estimate = predictor.predict(cfg) - OVERHEAD_MS
    assert low < estimate < high
    assert estimate == pytest.approx(entry_ms(96, bits, mixer))
    assert predictor.interpolated == 1


def test_missing_ffn_dim_outside_the_table_is_fitted_on_the_mixer_entries():
    predictor = LatencyPredictor(synthetic_table())
    cfg = config((256, 32, "attention"))
    assert predictor.predict(cfg) - OVERHEAD_MS == pytest.approx(entry_ms(256, 32, "attention"))


def test_unknown_mixer_raises_key_error():
    with pytest.raises(KeyError, match="no table entry"):
        LatencyPredictor(synthetic_table()).predict(config((64, 32, "retention")))


def test_adapt_recovers_a_known_scale_factor():
    predictor = LatencyPredictor(synthetic_table())
    measurements = [(c, 2.5 * true_ms(c)) for c in sample_configs(8, seed=4)]
    adapted = predictor.adapt(measurements, batch=1, seq_len=16, device_id="faster")
    assert adapted.scales == pytest.approx({"attention": 2.5, "ssm": 2.5})
    assert adapted.offsets["attention"] == pytest.approx(0.0, abs=1e-9)
    assert adapted.overhead_scale == pytest.approx(2.5)
    assert adapted.table.device_id == "faster"
    assert set(adapted.table.entries) == set(predictor.table.entries)
    for cfg in sample_configs(10, seed=5):
        assert adapted.predict(cfg) == pytest.approx(2.5 * true_ms(cfg))


def test_adapt_with_few_measurements_keeps_unseen_mixers_near_the_old_device():
    predictor = LatencyPredictor(synthetic_table())
    only_attention = [config((f, 32, "attention")) for f in (32, 64)]
    adapted = predictor.adapt([(c, 2 * true_ms(c)) for c in only_attention], seq_len=16)
    assert adapted.scales["ssm"] == 1.0 and adapted.offsets["ssm"] == 0.0
    for cfg in only_attention:
        assert adapted.predict(cfg) == pytest.approx(2 * true_ms(cfg))


def test_json_round_trip(tmp_path):
    table = synthetic_table()
    table.full_models.append((config((64, 8, "ssm")).to_json(), 1, 16, 1.25))
    table.fingerprint = {"id": "synthetic", "cpu": "test"}
    assert LatencyTable.from_json(table.to_json()) == table
    path = tmp_path / "table.json"
    table.save(path)
    assert path.read_text().startswith("{")
    loaded = LatencyTable.load(path)
    assert loaded == table and all(isinstance(key, tuple) for key in loaded.entries)
    cfg = sample_configs(1)[0]
    assert LatencyPredictor(loaded).predict(cfg) == LatencyPredictor(table).predict(cfg)


def test_report_on_known_inputs():
    predictor = LatencyPredictor(synthetic_table())
    configs = [
        config((32, 32, "attention")),
        config((64, 32, "attention")),
        config((128, 32, "attention")),
    ]
    predicted = [true_ms(c) for c in configs]
    measured = [predicted[0], predicted[1] * 1.25, predicted[2] / 0.95]
    report = predictor.report(configs, measured)
    expected_mape = np.mean([0.0, 0.2, 0.05])
    assert report["mape"] == pytest.approx(expected_mape)
    assert report["within_10pct"] == pytest.approx(2 / 3)
    assert report["kendall_tau"] == pytest.approx(1.0)
    assert predictor.report(configs, predicted) == {
        "mape": 0.0,
        "within_10pct": 1.0,
        "kendall_tau": 1.0,
    }


def test_a_table_written_before_head_dim_joined_the_key_still_loads():
    cfg = ArchConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=16,
                     layers=(LayerConfig(ffn_dim=64),))  # fmt: skip
    key = block_key(cfg, cfg.layers[0], 1, 16)
    table = LatencyTable(device_id="old", entries={key: 1.5})
    data = table.to_dict()
    data["entries"] = [[list(k)[:-1], ms] for k, ms in data["entries"]]  # the old 13 fields
    assert LatencyTable.from_dict(data).entries == {key: 1.5}
