"""Fused bias + activation: the FFN's elementwise epilogue in one pass over memory.

`bias_act(x, bias, activation=...)` is `act(x + bias)` for a pointwise activation;
`glu_act(gate, up, activation=...)` is `fn(gate + bias_gate) * (up + bias_up)` for a GLU one
(`swiglu`: `fn` is SiLU, `geglu`: exact, erf-based GELU); the torch functions are those of
`tnas.kernels.pointwise`, which `tnas.nn.activations` runs too. Both take any leading shape with
the bias along the last dim, fp16, bf16, fp32 or fp64 (computed in fp32, fp64 in fp64, rounded
once), and are differentiable: the backward is a second elementwise kernel that recomputes the
activation from the saved inputs.

>>> import torch
>>> x = torch.tensor([[-1.0, 2.0]])
>>> bias_act_reference(x, torch.tensor([0.5, 0.0]), activation="squared_relu").tolist()
[[0.0, 4.0]]
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from tnas.kernels.common import autotune, require, runs_on
from tnas.kernels.pointwise import FUNCTIONS

# What the kernel computes (the branches of `_activate`), with the torch function of each: the
# activations `tnas.space.catalog` marks `fused` (a test checks the two agree).
POINTWISE = {name: FUNCTIONS[name] for name in ("relu", "gelu", "silu", "squared_relu")}
GLU = {"swiglu": "silu", "geglu": "gelu"}  # GLU name -> the pointwise function of its gate


def bias_act_reference(x: Tensor, bias: Tensor | None = None, *, activation: str) -> Tensor:
    """`act(x + bias)` in torch; `bias` of shape `(x.shape[-1],)` or None."""
    return POINTWISE[activation](x if bias is None else x + bias)


def glu_act_reference(
    gate: Tensor,
    up: Tensor,
    bias_gate: Tensor | None = None,
    bias_up: Tensor | None = None,
    *,
    activation: str,
) -> Tensor:
    """`fn(gate + bias_gate) * (up + bias_up)` in torch, `fn` the gate function of the GLU."""
    gate = gate if bias_gate is None else gate + bias_gate
    up = up if bias_up is None else up + bias_up
    return POINTWISE[GLU[activation]](gate) * up


CONFIGS = [
    triton.Config({"BLOCK_SIZE": 1024}, num_warps=4),
    triton.Config({"BLOCK_SIZE": 2048}, num_warps=8),
    triton.Config({"BLOCK_SIZE": 4096}, num_warps=8),
    triton.Config({"BLOCK_SIZE": 512}, num_warps=2),
]


@triton.jit
def _activate(h, ACTIVATION: tl.constexpr):
    if ACTIVATION == "relu":
        y = tl.maximum(h, 0.0)
    elif ACTIVATION == "squared_relu":
        r = tl.maximum(h, 0.0)
        y = r * r
    elif ACTIVATION == "silu":
        y = h * tl.sigmoid(h)
    else:  # gelu, exact: h * Phi(h)
        y = 0.5 * h * (1.0 + tl.math.erf(h * 0.7071067811865476))
    return y


@triton.jit
def _activate_grad(h, ACTIVATION: tl.constexpr):
    if ACTIVATION == "relu":
        d = tl.where(h > 0.0, 1.0, 0.0).to(h.dtype)
    elif ACTIVATION == "squared_relu":
        d = 2.0 * tl.maximum(h, 0.0)
    elif ACTIVATION == "silu":
        s = tl.sigmoid(h)
        d = s * (1.0 + h * (1.0 - s))
    else:  # gelu: Phi(h) + h * phi(h)
        cdf = 0.5 * (1.0 + tl.math.erf(h * 0.7071067811865476))
        d = cdf + h * 0.3989422804014327 * tl.exp(-0.5 * h * h)
    return d


@triton.jit
def _load_biased(ptr, bias_ptr, offsets, mask, n_cols, HAS_BIAS: tl.constexpr, COMPUTE):
    value = tl.load(ptr + offsets, mask=mask, other=0.0).to(COMPUTE)
    if HAS_BIAS:
        value += tl.load(bias_ptr + offsets % n_cols, mask=mask, other=0.0).to(COMPUTE)
    return value


@autotune(CONFIGS, key=["n_cols"])
@triton.jit
def _bias_act_kernel(
    x_ptr,
    bias_ptr,
    y_ptr,
    n_elements,
    n_cols,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    h = _load_biased(x_ptr, bias_ptr, offsets, mask, n_cols, HAS_BIAS, COMPUTE)
    y = _activate(h, ACTIVATION)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@autotune(CONFIGS, key=["n_cols"])
@triton.jit
def _bias_act_backward_kernel(
    x_ptr,
    bias_ptr,
    grad_y_ptr,
    grad_x_ptr,
    n_elements,
    n_cols,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    h = _load_biased(x_ptr, bias_ptr, offsets, mask, n_cols, HAS_BIAS, COMPUTE)
    grad_y = tl.load(grad_y_ptr + offsets, mask=mask, other=0.0).to(COMPUTE)
    grad_x = grad_y * _activate_grad(h, ACTIVATION)
    tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)


@autotune(CONFIGS, key=["n_cols"])
@triton.jit
def _glu_act_kernel(
    gate_ptr,
    up_ptr,
    bias_gate_ptr,
    bias_up_ptr,
    y_ptr,
    n_elements,
    n_cols,
    HAS_BIAS_GATE: tl.constexpr,
    HAS_BIAS_UP: tl.constexpr,
    ACTIVATION: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    gate = _load_biased(gate_ptr, bias_gate_ptr, offsets, mask, n_cols, HAS_BIAS_GATE, COMPUTE)
    up = _load_biased(up_ptr, bias_up_ptr, offsets, mask, n_cols, HAS_BIAS_UP, COMPUTE)
    y = _activate(gate, ACTIVATION) * up
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@autotune(CONFIGS, key=["n_cols"])
@triton.jit
def _glu_act_backward_kernel(
    gate_ptr,
    up_ptr,
    bias_gate_ptr,
    bias_up_ptr,
    grad_y_ptr,
    grad_gate_ptr,
    grad_up_ptr,
    n_elements,
    n_cols,
    HAS_BIAS_GATE: tl.constexpr,
    HAS_BIAS_UP: tl.constexpr,
    ACTIVATION: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    gate = _load_biased(gate_ptr, bias_gate_ptr, offsets, mask, n_cols, HAS_BIAS_GATE, COMPUTE)
    up = _load_biased(up_ptr, bias_up_ptr, offsets, mask, n_cols, HAS_BIAS_UP, COMPUTE)
    grad_y = tl.load(grad_y_ptr + offsets, mask=mask, other=0.0).to(COMPUTE)
    grad_gate = grad_y * up * _activate_grad(gate, ACTIVATION)
    grad_up = grad_y * _activate(gate, ACTIVATION)
    tl.store(grad_gate_ptr + offsets, grad_gate.to(grad_gate_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_up_ptr + offsets, grad_up.to(grad_up_ptr.dtype.element_ty), mask=mask)


def _compute_dtype(x: Tensor) -> tl.dtype:
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _grid(n_elements: int):
    return lambda meta: (triton.cdiv(n_elements, meta["BLOCK_SIZE"]),)


def _check(x: Tensor, name: str, bias: Tensor | None = None) -> None:
    require(runs_on(x), f"{name} must be on CUDA, or on CPU under TRITON_INTERPRET=1")
    require(x.is_floating_point(), f"{name} must be floating point, got {x.dtype}")
    require(x.dim() >= 1, f"{name} must have at least one dimension")
    if bias is not None:
        require(bias.shape == x.shape[-1:], f"bias must be ({x.shape[-1]},), got {bias.shape}")
        require(bias.device == x.device, f"bias is on {bias.device}, {name} on {x.device}")
        require(bias.is_floating_point(), f"bias must be floating point, got {bias.dtype}")


def _or_placeholder(bias: Tensor | None, tensor: Tensor) -> Tensor:
    return tensor if bias is None else bias  # the kernel's HAS_BIAS leaves a placeholder unread


def _bias_grad(grad: Tensor, bias: Tensor) -> Tensor:
    return grad.reshape(-1, grad.shape[-1]).sum(0, dtype=torch.float32).to(bias.dtype)


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bias: Tensor | None, activation: str) -> Tensor:
        x = x.contiguous()
        bias = None if bias is None else bias.contiguous()
        ctx.save_for_backward(x, bias)
        ctx.activation = activation
        y = torch.empty_like(x)
        if x.numel():
            _bias_act_kernel[_grid(x.numel())](
                x,
                _or_placeholder(bias, x),
                y,
                x.numel(),
                x.shape[-1],
                HAS_BIAS=bias is not None,
                ACTIVATION=activation,
                COMPUTE=_compute_dtype(x),
            )
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, bias = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = torch.empty_like(x)
        if x.numel():
            _bias_act_backward_kernel[_grid(x.numel())](
                x,
                _or_placeholder(bias, x),
                grad_y,
                grad_x,
                x.numel(),
                x.shape[-1],
                HAS_BIAS=bias is not None,
                ACTIVATION=ctx.activation,
                COMPUTE=_compute_dtype(x),
            )
        grad_bias = _bias_grad(grad_x, bias) if ctx.needs_input_grad[1] else None
        return grad_x, grad_bias, None


class _GLUAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, bias_gate, bias_up, activation: str) -> Tensor:
        gate, up = gate.contiguous(), up.contiguous()
        bias_gate = None if bias_gate is None else bias_gate.contiguous()
        bias_up = None if bias_up is None else bias_up.contiguous()
        ctx.save_for_backward(gate, up, bias_gate, bias_up)
        ctx.activation = activation
        y = torch.empty_like(up)
        if up.numel():
            _glu_act_kernel[_grid(up.numel())](
                gate,
                up,
                _or_placeholder(bias_gate, gate),
                _or_placeholder(bias_up, up),
                y,
                up.numel(),
                up.shape[-1],
                HAS_BIAS_GATE=bias_gate is not None,
                HAS_BIAS_UP=bias_up is not None,
                ACTIVATION=GLU[activation],
                COMPUTE=_compute_dtype(up),
            )
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        gate, up, bias_gate, bias_up = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_gate, grad_up = torch.empty_like(gate), torch.empty_like(up)
        if up.numel():
            _glu_act_backward_kernel[_grid(up.numel())](
                gate,
                up,
                _or_placeholder(bias_gate, gate),
                _or_placeholder(bias_up, up),
                grad_y,
                grad_gate,
                grad_up,
                up.numel(),
                up.shape[-1],
                HAS_BIAS_GATE=bias_gate is not None,
                HAS_BIAS_UP=bias_up is not None,
                ACTIVATION=GLU[ctx.activation],
                COMPUTE=_compute_dtype(up),
            )
        needs = ctx.needs_input_grad
        grad_bias_gate = _bias_grad(grad_gate, bias_gate) if needs[2] else None
        grad_bias_up = _bias_grad(grad_up, bias_up) if needs[3] else None
        return grad_gate, grad_up, grad_bias_gate, grad_bias_up, None


def bias_act(x: Tensor, bias: Tensor | None = None, *, activation: str) -> Tensor:
    """`act(x + bias)` in one kernel, differentiable. x: (..., N), bias: (N,) or None;
    `activation` one of `POINTWISE` (relu, gelu, silu, squared_relu). The result has x's dtype.

    >>> import torch
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: under TRITON_INTERPRET=1
    >>> x = torch.tensor([[0.5, -3.0]], device=device)
    >>> bias = torch.tensor([0.5, 1.0], device=device)
    >>> bias_act(x, bias, activation="relu").tolist()
    [[1.0, 0.0]]
    """
    require(
        activation in POINTWISE,
        f"activation must be one of {sorted(POINTWISE)}, got {activation!r}",
    )
    _check(x, "x", bias)
    return _BiasAct.apply(x, bias, activation)


def glu_act(
    gate: Tensor,
    up: Tensor,
    bias_gate: Tensor | None = None,
    bias_up: Tensor | None = None,
    *,
    activation: str,
) -> Tensor:
    """`fn(gate + bias_gate) * (up + bias_up)` in one kernel, differentiable: the GLU of
    `tnas.nn.activations` called as `act(gate, up)`. gate, up: (..., N) of one shape; biases
    (N,) or None; `activation` "swiglu" or "geglu". The result has up's dtype.

    >>> import torch
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: under TRITON_INTERPRET=1
    >>> gate, up = torch.tensor([0.0, 20.0], device=device), torch.tensor([5.0, 3.0], device=device)
    >>> glu_act(gate, up, activation="swiglu").tolist()
    [0.0, 60.0]
    """
    require(activation in GLU, f"activation must be one of {sorted(GLU)}, got {activation!r}")
    require(gate.shape == up.shape, f"gate {tuple(gate.shape)} and up {tuple(up.shape)} differ")
    require(gate.device == up.device, f"gate is on {gate.device}, up on {up.device}")
    _check(gate, "gate", bias_gate)
    _check(up, "up", bias_up)
    return _GLUAct.apply(gate, up, bias_gate, bias_up, activation)


__all__ = [
    "GLU",
    "POINTWISE",
    "bias_act",
    "bias_act_reference",
    "glu_act",
    "glu_act_reference",
]
