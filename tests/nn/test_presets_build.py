"""Every preset: 50 sampled configs each build, run a forward pass and match the param formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tnas.nn import build_model
from tnas.space import count_params, load_space, preset_names


@pytest.mark.parametrize("preset", preset_names())
def test_fifty_samples_build_and_run(preset):
    space = load_space(preset)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    seen_mixers = set()
    for _ in range(50):
        config = space.sample(rng)
        model = build_model(config).eval()
        assert sum(p.numel() for p in model.parameters()) == count_params(config)
        tokens = torch.randint(0, config.vocab_size, (1, 16))
        with torch.no_grad():
            logits = model(tokens)
        expected = (
            (1, config.n_classes) if config.head == "classifier" else (1, 16, config.vocab_size)
        )
        assert logits.shape == expected
        assert torch.isfinite(logits).all()
        seen_mixers.update(layer.mixer for layer in config.layers)
    if preset == "mixers":
        assert len(seen_mixers) == 8
