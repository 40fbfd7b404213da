from __future__ import annotations

import pytest
import torch

from tests.kernels.devices import DEVICES
from tnas.kernels import common, dwconv
from tnas.kernels.dwconv import causal_dwconv, causal_dwconv_reference

# against the fp32 reference: one rounding of the output (a full step: the interpreter truncates)
TOLERANCE = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=2e-2),
}
# (B, T, C, K, lookahead): channels and steps off the block sizes, one step, one tap, centred
CASES = [(2, 13, 70, 3, 0), (1, 1, 5, 4, 0), (2, 9, 33, 7, 3), (3, 40, 8, 1, 0), (1, 17, 12, 4, 2)]

devices = pytest.mark.parametrize("device", DEVICES)
cases = pytest.mark.parametrize(
    "B, T, C, K, lookahead", CASES, ids=[f"B{b}T{t}C{c}K{k}ahead{a}" for b, t, c, k, a in CASES]
)


def randn(*shape, device, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)


@devices
@cases
@pytest.mark.parametrize(
    "dtype, weight_dtype",
    [
        (torch.float32, torch.float32),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
        (torch.bfloat16, torch.float32),  # autocast: bf16 projections, fp32 taps
    ],
    ids=["fp32", "fp16", "bf16", "bf16_fp32_weight"],
)
def test_forward_matches_reference(device, B, T, C, K, lookahead, dtype, weight_dtype):
    x = randn(B, T, C, device=device, dtype=dtype)
    weight = randn(C, 1, K, device=device, dtype=weight_dtype, seed=1)
    y = causal_dwconv(x, weight, lookahead)
    assert y.shape == (B, T, C) and y.dtype == dtype
    expected = causal_dwconv_reference(x.float(), weight.float(), lookahead)
    torch.testing.assert_close(y.float(), expected, **TOLERANCE[dtype])


@devices
@cases
def test_gradients_match_reference(device, B, T, C, K, lookahead):
    x = randn(B, T, C, device=device).requires_grad_()
    weight = randn(C, 1, K, device=device, seed=1).requires_grad_()
    grad_y = randn(B, T, C, device=device, seed=2)
    actual = torch.autograd.grad(causal_dwconv(x, weight, lookahead), (x, weight), grad_y)
    reference = causal_dwconv_reference(x, weight, lookahead)
    expected = torch.autograd.grad(reference, (x, weight), grad_y)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)


@devices
def test_weight_gradient_over_several_time_chunks(device, monkeypatch):
    monkeypatch.setattr(dwconv, "T_CHUNK", 8)  # 21 steps: chunks of 8, 8 and 5 per sequence
    x = randn(2, 21, 6, device=device).requires_grad_()
    weight = randn(6, 1, 3, device=device, seed=1).requires_grad_()
    grad_y = randn(2, 21, 6, device=device, seed=2)
    actual = torch.autograd.grad(causal_dwconv(x, weight), weight, grad_y)[0]
    expected = torch.autograd.grad(causal_dwconv_reference(x, weight), weight, grad_y)[0]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)


@devices
@pytest.mark.parametrize("lookahead", [0, 1], ids=["causal", "centred"])
def test_gradcheck_float64(device, lookahead, monkeypatch):
    monkeypatch.setattr(dwconv, "T_CHUNK", 4)
    x = randn(2, 7, 3, device=device, dtype=torch.float64).requires_grad_()
    weight = randn(3, 1, 3, device=device, dtype=torch.float64, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, weight: causal_dwconv(x, weight, lookahead), (x, weight), fast_mode=True
    )


@devices
def test_low_precision_gradients_keep_their_dtypes(device):
    x = randn(2, 9, 6, device=device, dtype=torch.bfloat16).requires_grad_()
    weight = randn(6, 1, 3, device=device, seed=1).requires_grad_()
    causal_dwconv(x, weight).float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
    expected = torch.autograd.grad(causal_dwconv_reference(x.float(), weight).sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, rtol=1e-4, atol=1e-4)


@devices
def test_causality(device):
    x = randn(2, 16, 6, device=device)
    weight = randn(6, 1, 4, device=device, seed=1)
    y = causal_dwconv(x, weight)
    for t in (0, 5, 14):
        future = x.clone()
        future[:, t + 1 :] = randn(2, 15 - t, 6, device=device, seed=t) * 3
        y2 = causal_dwconv(future, weight)
        torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=0, atol=0)
        assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :])


@devices
def test_lookahead_sees_that_many_future_steps(device):
    x = randn(1, 12, 4, device=device)
    weight = randn(4, 1, 5, device=device, seed=1)
    bumped = x.clone()
    bumped[:, 8] += 1.0
    changed = (causal_dwconv(bumped, weight, 2) - causal_dwconv(x, weight, 2)).abs().sum((0, 2))
    assert changed.nonzero().flatten().tolist() == [6, 7, 8, 9, 10]  # steps 8-2 .. 8+5-1-2


@devices
def test_strided_input(device):
    x = randn(2, 10, 9, device=device).transpose(0, 1).contiguous().transpose(0, 1)  # (B, T, C)
    weight = randn(9, 1, 3, device=device, seed=1)
    torch.testing.assert_close(causal_dwconv(x, weight), causal_dwconv_reference(x, weight))


@devices
def test_wrong_inputs_raise(device):
    x = randn(2, 5, 4, device=device)
    weight = randn(4, 1, 3, device=device)
    with pytest.raises(ValueError, match=r"x must be \(B, T, C\)"):
        causal_dwconv(x[0], weight)
    with pytest.raises(ValueError, match=r"weight must be \(4, 1, K\)"):
        causal_dwconv(x, weight.view(4, 3))
    with pytest.raises(ValueError, match=r"weight must be \(4, 1, K\)"):
        causal_dwconv(x, randn(5, 1, 3, device=device))
    with pytest.raises(ValueError, match="lookahead must be in 0..2"):
        causal_dwconv(x, weight, 3)
    with pytest.raises(ValueError, match="floating point"):
        causal_dwconv(x.int(), weight)


def test_cpu_without_the_interpreter_raises(monkeypatch):
    monkeypatch.setattr(common, "INTERPRET", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        causal_dwconv(torch.zeros(1, 4, 2), torch.zeros(2, 1, 3))
