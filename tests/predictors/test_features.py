"""The encoding of a config for predictors, over the small spaces of `tests/space` and presets."""

import numpy as np
import pytest

from tests.space.test_space import SMALL_SPACES
from tnas.predictors import encode, encoded_names
from tnas.space import DesignSpace, load_space


@pytest.fixture(params=sorted(SMALL_SPACES) + ["primer", "mixers", "wide"])
def space(request):
    if request.param in SMALL_SPACES:
        return DesignSpace.from_dict(SMALL_SPACES[request.param])
    return load_space(request.param)


def test_encode_has_fixed_length_and_unit_range(space):
    rng = np.random.default_rng(1)
    names = encoded_names(space)
    assert len(names) == len(set(names))
    for _ in range(30):
        vector = encode(space, space.sample(rng))
        assert vector.dtype == np.float64
        assert vector.shape == (len(names),)
        assert vector.min() >= 0.0 and vector.max() <= 1.0


def test_encode_marks_inactive_layers_with_zeros():
    space = load_space("primer")
    config = space.sample(np.random.default_rng(0))
    names, vector = encoded_names(space), encode(space, config)
    for i in range(space.max_depth):
        block = [v for n, v in zip(names, vector, strict=True) if n.startswith(f"layer{i}.")]
        assert block[0] == float(i < config.n_layers)
        if i >= config.n_layers:
            assert not any(block)
    assert "vocab_size" not in names  # fixed knobs are left out
