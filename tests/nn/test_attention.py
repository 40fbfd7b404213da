"""MDHA's dconv on the Triton kernel (`use_triton`) against its torch path."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.devices import DEVICES
from tnas.kernels import dwconv
from tnas.nn.mixers import create_mixer
from tnas.space import LayerConfig

D, T, B = 32, 11, 2


def pair(kernel: int, device: str):
    torch.manual_seed(0)
    layer = LayerConfig(mixer="mdha", n_heads=4, dconv_kernel=kernel)
    on_torch = create_mixer(D, layer, 64).to(device)
    on_triton = create_mixer(D, layer, 64).to(device)
    on_triton.load_state_dict(on_torch.state_dict())
    on_torch.use_triton, on_triton.use_triton = False, True
    return on_torch, on_triton


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", [3, 4])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("n_heads", [None, 2], ids=["all_heads", "2_heads"])
def test_triton_dconv_matches_torch(device, kernel, causal, n_heads):
    on_torch, on_triton = pair(kernel, device)
    x = torch.randn(B, T, D, device=device)
    outputs, grads = [], []
    for mixer in (on_torch, on_triton):
        inputs = x.clone().requires_grad_()
        y = mixer(inputs, causal=causal, n_heads=n_heads)
        y.square().sum().backward()
        outputs.append(y)
        grads.append([inputs.grad] + [p.grad for p in mixer.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for triton_grad, torch_grad in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(triton_grad, torch_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_heads", [None, 3], ids=["all_heads", "3_heads"])
def test_taps_are_the_sliced_heads_channels(n_heads):
    mixer, _ = pair(3, "cpu")
    width = (n_heads or 4) * mixer.head_dim
    taps = mixer.taps(n_heads or 4)
    assert taps.shape == (3 * width, 1, 3)
    for block in range(3):  # Q, K, V
        expected = mixer.dconv.weight[block * mixer.inner : block * mixer.inner + width]
        torch.testing.assert_close(taps[block * width : (block + 1) * width], expected)


def test_cpu_runs_torch_by_default(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton kernel ran")

    monkeypatch.setattr(dwconv, "causal_dwconv", refuse)
    mixer = create_mixer(D, LayerConfig(mixer="mdha", n_heads=4), 64)
    assert mixer.use_triton is None
    mixer(torch.randn(B, T, D))
    mixer(torch.randn(B, T, D), causal=False, n_heads=2)
