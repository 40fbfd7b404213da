"""Conformance suite run over every registered mixer (CONVENTIONS.md, item 4)."""

from __future__ import annotations

import pytest
import torch

from tnas.nn.mixers import MIXER_CLASSES, create_mixer
from tnas.space import LayerConfig
from tnas.space.catalog import MIXERS, attention_width, mixer_params

D, T, B = 32, 24, 2
MAX_SEQ_LEN = 64


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    layer = LayerConfig(mixer=name, n_heads=4, dconv_kernel=3, conv_kernel=4, state_size=8)
    return create_mixer(D, layer, MAX_SEQ_LEN).double(), layer


def inputs(seed: int = 1, T: int = T) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=generator, dtype=torch.float64)


names = pytest.mark.parametrize("name", sorted(MIXER_CLASSES))
causal_flags = pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])


def test_registry_matches_catalog():
    assert set(MIXER_CLASSES) == set(MIXERS)


@names
@causal_flags
def test_shape(name, causal):
    mixer, _ = make(name)
    for length in (1, 7, T):
        assert mixer(inputs(T=length), causal=causal).shape == (B, length, D)


@names
def test_causality(name):
    mixer, _ = make(name)
    x = inputs()
    y = mixer(x, causal=True)
    for t in (0, 5, T - 2):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
        y2 = mixer(x2, causal=True)
        torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=0, atol=1e-10)
        assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :])


@names
def test_bidirectional_sees_the_future(name):
    mixer, _ = make(name)
    x = inputs()
    x2 = x.clone()
    x2[:, -1] += 1.0
    y, y2 = mixer(x, causal=False), mixer(x2, causal=False)
    assert not torch.allclose(y[:, :-1], y2[:, :-1])  # some earlier output sees the last token


@names
def test_gradients_reach_every_parameter(name):
    mixer, _ = make(name)
    x = inputs().requires_grad_()
    mixer(x, causal=True).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, param in mixer.named_parameters():
        assert param.grad is not None, pname
        assert param.grad.abs().sum() > 0, pname
        assert torch.isfinite(param.grad).all(), pname


@names
def test_deterministic(name):
    first, _ = make(name, seed=3)
    second, _ = make(name, seed=3)
    x = inputs()
    torch.testing.assert_close(first(x), second(x), rtol=0, atol=0)
    torch.testing.assert_close(first(x), first(x), rtol=0, atol=0)


@names
@causal_flags
def test_fast_form_matches_reference(name, causal):
    mixer, _ = make(name)
    mixer = mixer.float()
    x = inputs().float()
    with torch.no_grad():
        torch.testing.assert_close(
            mixer.mix(x, causal), mixer.reference(x, causal), rtol=1e-4, atol=1e-4
        )


@names
def test_param_formula_is_exact(name):
    mixer, layer = make(name)
    expected = mixer_params(
        name,
        d_model=D,
        n_heads=layer.n_heads,
        dconv_kernel=layer.dconv_kernel,
        conv_kernel=layer.conv_kernel,
        state_size=layer.state_size,
        max_seq_len=MAX_SEQ_LEN,
    )
    assert sum(p.numel() for p in mixer.parameters()) == expected


@pytest.mark.parametrize("name", ["attention", "mdha"])
@pytest.mark.parametrize("n_heads, head_dim", [(2, 8), (3, 16), (4, 0)], ids=str)
def test_head_dim_sets_the_attention_width(name, n_heads, head_dim):
    layer = LayerConfig(mixer=name, n_heads=n_heads, head_dim=head_dim, dconv_kernel=3)
    torch.manual_seed(0)
    mixer = create_mixer(D, layer, MAX_SEQ_LEN).double()
    inner = attention_width(D, n_heads, head_dim)
    assert mixer.qkv.weight.shape == (3 * inner, D)
    assert mixer.out.weight.shape == (D, inner)
    x = inputs()
    assert mixer(x).shape == (B, T, D)
    torch.testing.assert_close(mixer.mix(x, True), mixer.reference(x, True))
    expected = mixer_params(
        name,
        d_model=D,
        n_heads=n_heads,
        head_dim=head_dim,
        dconv_kernel=layer.dconv_kernel,
        conv_kernel=0,
        state_size=0,
        max_seq_len=MAX_SEQ_LEN,
    )
    assert sum(p.numel() for p in mixer.parameters()) == expected
