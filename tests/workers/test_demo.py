from __future__ import annotations

import math

from tnas.space import ArchConfig, LayerConfig, load_space
from tnas.workers.demo import sample_small
from tnas.workers.tasks import create_task
from tnas.workers.train import Budget, train


def test_sample_small_respects_the_limit():
    config = sample_small(load_space("primer"), seed=0, max_params=2e6)
    assert config.derived()["params"] <= 2e6


def test_textlm_training_lowers_bits_per_byte():
    layer = LayerConfig(mixer="mdha", n_heads=2, ffn_dim=64, activation="squared_relu")
    config = ArchConfig(d_model=32, n_layers=2, layers=(layer, layer))
    task = create_task("textlm", seq_len=64)
    result = train(config, task, Budget(steps=30, batch_size=8, lr=1e-2))
    first_bits = result.curve[0][1] / math.log(2)  # ~8 bits per byte untrained
    assert result.metrics["bpb"] < first_bits - 1.0
