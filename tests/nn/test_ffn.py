"""The FFN's fused-activation path (`use_triton`) against its torch path."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.devices import DEVICES
from tnas.kernels import activation as fused
from tnas.nn.ffn import FFN, FUSED_ACTIVATIONS
from tnas.space.catalog import ACTIVATION_SPECS

D, F = 16, 24


def test_fused_activations_are_the_kernels():
    assert FUSED_ACTIVATIONS == set(fused.POINTWISE) | set(fused.GLU)
    assert {name: ACTIVATION_SPECS[name].gate for name in fused.GLU} == fused.GLU


def pair(activation: str, device: str) -> tuple[FFN, FFN]:
    torch.manual_seed(0)
    on_torch = FFN(D, F, activation).to(device)
    on_triton = FFN(D, F, activation).to(device)
    on_triton.load_state_dict(on_torch.state_dict())
    on_torch.use_triton, on_triton.use_triton = False, True
    return on_torch, on_triton


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", sorted(FUSED_ACTIVATIONS))
@pytest.mark.parametrize("width", [None, 10], ids=["full", "width10"])
def test_triton_path_matches_torch(device, activation, width):
    on_torch, on_triton = pair(activation, device)
    x = torch.randn(2, 5, D, device=device)
    outputs, grads = [], []
    for ffn in (on_torch, on_triton):
        inputs = x.clone().requires_grad_()
        y = ffn(inputs, width=width)
        y.square().sum().backward()
        outputs.append(y)
        grads.append([inputs.grad] + [p.grad for p in ffn.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for triton_grad, torch_grad in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(triton_grad, torch_grad, rtol=1e-4, atol=1e-5)


def refuse(*args, **kwargs):
    raise AssertionError("the Triton kernel ran")


def test_cpu_runs_torch_by_default(monkeypatch):
    monkeypatch.setattr(fused, "bias_act", refuse)
    monkeypatch.setattr(fused, "glu_act", refuse)
    for activation in ("squared_relu", "swiglu"):
        ffn = FFN(D, F, activation)
        assert ffn.use_triton is None
        ffn(torch.randn(2, 3, D))
        ffn(torch.randn(2, 3, D), width=8)


def test_unfused_activation_runs_torch(monkeypatch):
    monkeypatch.setattr(fused, "bias_act", refuse)
    ffn = FFN(D, F, "polyrelu")
    ffn.use_triton = True
    ffn(torch.randn(2, 3, D))
