"""The sliced forward: submodels run on the supernet's own tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tnas.elastic import SubmodelError, Supernet
from tnas.nn.mixers import create_mixer
from tnas.space import LayerConfig, load_space

from .conftest import tiny_supernet, tokens


def test_from_space_builds_the_largest_config():
    supernet = Supernet.from_space("matformer")
    assert supernet.space == "matformer" and supernet.step == 0
    assert len(supernet.blocks) == 4
    mixer = supernet.blocks[0].mixer
    assert (mixer.n_heads, mixer.head_dim, supernet.blocks[0].ffn.ffn_dim) == (8, 32, 1024)
    config = load_space("matformer").sample(np.random.default_rng(3))
    assert supernet.resolve(config).config == config


def test_the_whole_supernet_is_its_own_largest_submodel(supernet):
    x = tokens(supernet)
    with torch.no_grad():
        torch.testing.assert_close(supernet(x, supernet.config), supernet(x), rtol=0, atol=0)


def test_submodel_builder_places_layers_and_fixes_the_head_size(supernet):
    sub = supernet.submodel(ffn_dim=[8, 64], n_heads=[1, 4])
    assert sub.kept == (0, 3)
    layers = sub.config.layers
    assert [(layer.ffn_dim, layer.n_heads, layer.head_dim) for layer in layers] == [
        (8, 1, 8),
        (64, 4, 0),  # 4 heads of 8 in d_model 32: the default, stored as 0
    ]
    assert supernet.submodel(n_layers=2, kept=None).kept == (0, 3)
    assert supernet.submodel(ffn_dim=16, kept=[1, 2]).config.n_layers == 2
    with pytest.raises(SubmodelError, match="ffn_dim has 3 values for 2 layers"):
        supernet.submodel(ffn_dim=[8, 8, 8], kept=[0, 1])
    with pytest.raises(SubmodelError, match=r"kept \[0, 4\] must be increasing"):
        supernet.submodel(kept=[0, 4])


@pytest.mark.parametrize("mixer", ["attention", "mdha"])
def test_a_head_prefix_is_a_narrower_attention(mixer):
    torch.manual_seed(0)
    big = create_mixer(32, LayerConfig(mixer=mixer, n_heads=4, head_dim=12), 16).double()
    small = create_mixer(32, LayerConfig(mixer=mixer, n_heads=2, head_dim=12), 16).double()
    width = 2 * 12
    with torch.no_grad():
        q, k, v = big.qkv.weight.view(3, 48, 32)
        small.qkv.weight.copy_(torch.cat([q[:width], k[:width], v[:width]]))
        small.out.weight.copy_(big.out.weight[:, :width])
        if mixer == "mdha":
            taps = big.dconv.weight.view(3, 48, 1, 3)[:, :width]
            small.dconv.weight.copy_(taps.reshape(-1, 1, 3))
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    for causal in (True, False):
        expected = small(x, causal)
        torch.testing.assert_close(big(x, causal, n_heads=2), expected)
        torch.testing.assert_close(big.reference(x, causal, n_heads=2), expected)
    with pytest.raises(ValueError, match=r"n_heads must be in 1..4, got 5"):
        big(x, True, n_heads=5)


def test_gradients_land_in_the_supernet_prefixes_only(supernet):
    supernet.train()
    sub = supernet.submodel(ffn_dim=[16, 32], n_heads=[2, 3], kept=[1, 2])
    supernet(tokens(supernet), sub).square().mean().backward()
    for index in (0, 3):  # skipped layers get no gradient at all
        assert all(p.grad is None for p in supernet.blocks[index].parameters())
    for index, width, heads in ((1, 16, 2), (2, 32, 3)):
        block = supernet.blocks[index]
        up, down = block.ffn.up.weight.grad, block.ffn.down.weight.grad
        assert up[:width].abs().sum() > 0 and up[width:].abs().sum() == 0
        assert down[:, :width].abs().sum() > 0 and down[:, width:].abs().sum() == 0
        qkv = block.mixer.qkv.weight.grad.view(3, 32, 32)  # Q, K, V blocks of 4 heads of 8
        rows = heads * 8
        assert qkv[:, :rows].abs().sum() > 0 and qkv[:, rows:].abs().sum() == 0
        out = block.mixer.out.weight.grad
        assert out[:, :rows].abs().sum() > 0 and out[:, rows:].abs().sum() == 0


def test_a_config_outside_the_supernet_is_refused_by_forward(supernet):
    bigger = supernet.config.replace(layers=(LayerConfig(n_heads=4, ffn_dim=128),) * 4)
    with pytest.raises(SubmodelError, match="layer0: ffn_dim 128 exceeds the supernet's 64"):
        supernet(tokens(supernet), bigger)


def test_mdha_supernet_runs_wider_heads_than_d_model():
    supernet = tiny_supernet("mdha")
    assert supernet.blocks[0].mixer.inner == 48  # 4 heads of 12 in d_model 32
    sub = supernet.submodel(n_heads=[3, 1], ffn_dim=[16, 8])
    assert sub.config.layers[0].head_dim == 12
    assert supernet(tokens(supernet), sub).shape == (2, 16, 40)
