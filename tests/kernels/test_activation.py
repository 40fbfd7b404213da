from __future__ import annotations

import pytest
import torch

from tests.kernels.devices import DEVICES
from tnas.kernels import common
from tnas.kernels.activation import (
    GLU,
    POINTWISE,
    bias_act,
    bias_act_reference,
    glu_act,
    glu_act_reference,
)
from tnas.nn.activations import create_activation

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# against the fp32 reference on the same inputs: erf implementations differ (GELU's negative tail
# cancels), and one rounding of the output (the interpreter truncates to bfloat16, hence a step)
TOLERANCE = {
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
}
# odd sizes off the block sizes (masking); (7, 301) spans several blocks, the bias wrapping rows
SHAPES = [(37,), (3, 5, 37), (7, 301)]

devices = pytest.mark.parametrize("device", DEVICES)
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
pointwise = pytest.mark.parametrize("activation", sorted(POINTWISE))
glus = pytest.mark.parametrize("activation", sorted(GLU))
with_bias = pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])


def randn(*shape, device, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(*shape, generator=generator)).to(device=device, dtype=dtype)


def assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual.float(), expected.float(), **TOLERANCE[dtype])


@devices
@dtypes
@pointwise
@with_bias
@shapes
def test_bias_act_matches_reference(device, dtype, activation, bias, shape):
    x = randn(*shape, device=device, dtype=dtype)
    b = randn(shape[-1], device=device, dtype=dtype, seed=1) if bias else None
    y = bias_act(x, b, activation=activation)
    assert y.shape == x.shape and y.dtype == dtype
    expected = bias_act_reference(
        x.float(), None if b is None else b.float(), activation=activation
    )
    assert_close(y, expected, dtype)


@devices
@dtypes
@glus
@pytest.mark.parametrize("biases", ["none", "gate", "both"])
@shapes
def test_glu_act_matches_reference(device, dtype, activation, biases, shape):
    gate = randn(*shape, device=device, dtype=dtype)
    up = randn(*shape, device=device, dtype=dtype, seed=1)
    bias_gate = randn(shape[-1], device=device, dtype=dtype, seed=2) if biases != "none" else None
    bias_up = randn(shape[-1], device=device, dtype=dtype, seed=3) if biases == "both" else None
    y = glu_act(gate, up, bias_gate, bias_up, activation=activation)
    assert y.shape == up.shape and y.dtype == dtype
    as_float = [None if t is None else t.float() for t in (gate, up, bias_gate, bias_up)]
    assert_close(y, glu_act_reference(*as_float, activation=activation), dtype)


@devices
@pytest.mark.parametrize("activation", sorted(POINTWISE) + sorted(GLU))
def test_matches_the_project_activations(device, activation):
    module = create_activation(activation)
    x, up = randn(4, 33, device=device), randn(4, 33, device=device, seed=1)
    if module.glu:
        torch.testing.assert_close(glu_act(x, up, activation=activation), module(x, up))
    else:
        torch.testing.assert_close(bias_act(x, activation=activation), module(x))


@devices
@pointwise
@with_bias
def test_bias_act_gradients_match_reference(device, activation, bias):
    x = randn(3, 37, device=device).requires_grad_()
    b = randn(37, device=device, seed=1).requires_grad_() if bias else None
    grad_y = randn(3, 37, device=device, seed=2)
    inputs = [x] + ([b] if bias else [])
    actual = torch.autograd.grad(bias_act(x, b, activation=activation), inputs, grad_y)
    expected = torch.autograd.grad(bias_act_reference(x, b, activation=activation), inputs, grad_y)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@devices
@glus
def test_glu_act_gradients_match_reference(device, activation):
    tensors = [randn(3, 37, device=device, seed=s) for s in range(2)]
    tensors += [randn(37, device=device, seed=s) for s in range(2, 4)]
    tensors = [t.requires_grad_() for t in tensors]
    grad_y = randn(3, 37, device=device, seed=4)
    actual = torch.autograd.grad(glu_act(*tensors, activation=activation), tensors, grad_y)
    reference = glu_act_reference(*tensors, activation=activation)
    expected = torch.autograd.grad(reference, tensors, grad_y)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@devices
@pytest.mark.parametrize("activation", ["gelu", "squared_relu", "swiglu"])
def test_gradcheck_float64(device, activation):
    def fn(*tensors):
        if activation in GLU:
            return glu_act(*tensors, activation=activation)
        return bias_act(*tensors, activation=activation)

    n_inputs = 4 if activation in GLU else 2
    tensors = [randn(2, 5, device=device, dtype=torch.float64, seed=s) for s in range(n_inputs)]
    tensors[n_inputs // 2 :] = [t[0] for t in tensors[n_inputs // 2 :]]  # the biases: (5,)
    tensors = [t.requires_grad_() for t in tensors]
    assert torch.autograd.gradcheck(fn, tensors, fast_mode=True)


@devices
def test_low_precision_gradients_keep_their_dtypes(device):
    x = randn(3, 37, device=device, dtype=torch.bfloat16).requires_grad_()
    b = randn(37, device=device, seed=1).requires_grad_()  # fp32 bias, as under autocast
    bias_act(x, b, activation="silu").float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and b.grad.dtype == torch.float32
    expected = torch.autograd.grad(bias_act_reference(x.float(), b, activation="silu").sum(), b)[0]
    torch.testing.assert_close(b.grad, expected, rtol=2e-2, atol=2e-2)


@devices
def test_strided_and_empty_inputs(device):
    x = randn(37, 6, device=device).t()  # (6, 37), last dim strided
    torch.testing.assert_close(
        bias_act(x, activation="gelu"), bias_act_reference(x, activation="gelu")
    )
    empty = torch.empty(0, 8, device=device)
    assert bias_act(empty, activation="relu").shape == (0, 8)
    assert glu_act(empty, empty, activation="geglu").shape == (0, 8)


@devices
def test_wrong_inputs_raise(device):
    x = randn(2, 8, device=device)
    with pytest.raises(ValueError, match="activation must be one of"):
        bias_act(x, activation="swish")
    with pytest.raises(ValueError, match="activation must be one of"):
        glu_act(x, x, activation="relu")
    with pytest.raises(ValueError, match=r"bias must be \(8,\)"):
        bias_act(x, randn(7, device=device), activation="relu")
    with pytest.raises(ValueError, match="differ"):
        glu_act(x, randn(2, 7, device=device), activation="swiglu")
    with pytest.raises(ValueError, match="floating point"):
        bias_act(torch.ones(2, 8, dtype=torch.int32, device=device), activation="relu")


def test_cpu_without_the_interpreter_raises(monkeypatch):
    monkeypatch.setattr(common, "INTERPRET", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        bias_act(torch.zeros(2, 3), activation="relu")
