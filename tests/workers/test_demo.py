from __future__ import annotations

import numpy as np

from tnas.space import ArchConfig, LayerConfig, load_space
from tnas.workers.demo import sample_small, stdlib_bytes, train_demo


def test_stdlib_corpus_is_deterministic_python_source():
    data = stdlib_bytes(limit=200_000)
    assert len(data) == 200_000
    assert np.array_equal(data, stdlib_bytes(limit=200_000))
    assert b"def " in data.tobytes()


def test_demo_training_lowers_validation_loss():
    layer = LayerConfig(mixer="mdha", n_heads=2, ffn_dim=64, activation="squared_relu")
    config = ArchConfig(
        d_model=32, n_layers=2, vocab_size=256, max_seq_len=64, layers=(layer, layer)
    )
    result = train_demo(config, steps=30, batch=8, seq_len=64, lr=1e-2, seed=0)
    assert result.val_bpb_after < result.val_bpb_before - 1.0


def test_sample_small_respects_the_limit():
    config = sample_small(load_space("primer"), seed=0, max_params=2e6)
    assert config.derived()["params"] <= 2e6
