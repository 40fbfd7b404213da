"""Causal depthwise conv1d over time: Primer's dconv after the Q, K and V projections (MDHA).

Channels-last: x (B, T, C), the layout the projections produce, so MDHA calls it with no
transposes; the weight is nn.Conv1d's (C, 1, K) for `groups=C`. Output step t of channel c is
`sum_k weight[c, 0, k] * x[:, t - (K - 1) + k + lookahead, c]`, zero outside 0..T-1:
`lookahead=0` is causal (t sees t-K+1..t), and MDHA's bidirectional form is `lookahead=K // 2`,
its centred padding.

The forward is one kernel over (batch x time blocks, channel blocks), accumulating in fp32
(fp64 for fp64 inputs). The input's gradient is the same kernel with the taps flipped (the
transposed convolution); the weight's gradient is a second kernel whose programs each reduce
a chunk of time of one sequence into (K, C) partial sums, which the host adds up: deterministic,
no atomics. x and weight may differ in dtype (autocast: bf16 activations, fp32 weights); the
output has x's dtype and the weight's gradient the weight's.

>>> import torch
>>> x = torch.arange(1.0, 5.0).view(1, 4, 1)  # (B, T, C)
>>> weight = torch.tensor([[[1.0, 10.0]]])  # (C, 1, K): 10 * x[t] + x[t - 1]
>>> causal_dwconv_reference(x, weight)[0, :, 0].tolist()
[10.0, 21.0, 32.0, 43.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from tnas.kernels.common import autotune, require, runs_on

T_CHUNK = 256  # time steps one weight-gradient program reduces: (B * T / T_CHUNK, K, C) partials


def causal_dwconv_reference(x: Tensor, weight: Tensor, lookahead: int = 0) -> Tensor:
    """The convolution in torch, as MDHA pads and convolves: x (B, T, C), weight (C, 1, K)."""
    K = weight.shape[-1]
    padded = F.pad(x.transpose(1, 2), (K - 1 - lookahead, lookahead))  # (B, C, T + K - 1)
    return F.conv1d(padded, weight, groups=x.shape[-1]).transpose(1, 2)


CONFIGS = [
    triton.Config({"BLOCK_T": 32, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_T": 64, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_T": 16, "BLOCK_C": 128}, num_warps=4),
    triton.Config({"BLOCK_T": 64, "BLOCK_C": 128}, num_warps=8),
    triton.Config({"BLOCK_T": 128, "BLOCK_C": 32}, num_warps=4),
]


@autotune(CONFIGS, key=["C", "K"])
@triton.jit
def _dwconv_kernel(
    x_ptr,
    weight_ptr,
    y_ptr,
    T,
    C,
    SHIFT,
    K: tl.constexpr,
    FLIP: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # y[b, t, c] = sum_k weight[c, k] * x[b, t + k - SHIFT, c]; FLIP: x[b, t + SHIFT - k, c]
    n_t_blocks = tl.cdiv(T, BLOCK_T)
    b = tl.program_id(0) // n_t_blocks
    t = (tl.program_id(0) % n_t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    c_mask = c < C
    sequence = b.to(tl.int64) * T * C
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=COMPUTE)
    for k in tl.static_range(K):
        source = t + (SHIFT - k) if FLIP else t + (k - SHIFT)
        mask = ((source >= 0) & (source < T))[:, None] & c_mask[None, :]
        x = tl.load(x_ptr + sequence + source[:, None] * C + c[None, :], mask=mask, other=0.0)
        tap = tl.load(weight_ptr + c * K + k, mask=c_mask, other=0.0).to(COMPUTE)
        acc += x.to(COMPUTE) * tap[None, :]
    mask = (t < T)[:, None] & c_mask[None, :]
    tl.store(y_ptr + sequence + t[:, None] * C + c[None, :], acc.to(y_ptr.dtype.element_ty), mask)


@autotune(CONFIGS, key=["C", "K"])
@triton.jit
def _dwconv_weight_grad_kernel(
    x_ptr,
    grad_y_ptr,
    partial_ptr,
    T,
    C,
    SHIFT,
    K: tl.constexpr,
    T_CHUNK: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # partial[program, k, c] = sum over this chunk's t of grad_y[b, t, c] * x[b, t + k - SHIFT, c]
    n_chunks = tl.cdiv(T, T_CHUNK)
    b = tl.program_id(0) // n_chunks
    start = (tl.program_id(0) % n_chunks) * T_CHUNK
    end = tl.minimum(start + T_CHUNK, T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    c_mask = c < C
    sequence = b.to(tl.int64) * T * C
    out = partial_ptr + tl.program_id(0).to(tl.int64) * K * C + c
    for k in tl.static_range(K):
        # elementwise products over the chunk, one reduction across time at the end: a
        # reduction per block would synchronise the warps at every step
        acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=COMPUTE)
        for block_start in range(start, end, BLOCK_T):
            t = block_start + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
            source = t + (k - SHIFT)
            t_mask = (t < end)[:, None] & c_mask[None, :]
            mask = t_mask & ((source >= 0) & (source < T))[:, None]
            grad_y = tl.load(
                grad_y_ptr + sequence + t[:, None] * C + c[None, :], mask=t_mask, other=0.0
            )
            x = tl.load(x_ptr + sequence + source[:, None] * C + c[None, :], mask=mask, other=0.0)
            acc += x.to(COMPUTE) * grad_y.to(COMPUTE)
        tl.store(out + k * C, tl.sum(acc, axis=0), mask=c_mask)


def _compute_dtype(x: Tensor) -> tl.dtype:
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _convolve(source: Tensor, weight: Tensor, out: Tensor, shift: int, flip: bool) -> Tensor:
    B, T, C = source.shape

    def grid(meta):
        return B * triton.cdiv(T, meta["BLOCK_T"]), triton.cdiv(C, meta["BLOCK_C"])

    if source.numel():
        _dwconv_kernel[grid](
            source,
            weight,
            out,
            T,
            C,
            shift,
            K=weight.shape[-1],
            FLIP=flip,
            COMPUTE=_compute_dtype(source),
        )
    return out


def _weight_grad(x: Tensor, grad_y: Tensor, weight: Tensor, shift: int) -> Tensor:
    B, T, C = x.shape
    K = weight.shape[-1]
    n_chunks = triton.cdiv(T, T_CHUNK)
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = torch.empty(B * n_chunks, K, C, device=x.device, dtype=accumulate)

    def grid(meta):
        return B * n_chunks, triton.cdiv(C, meta["BLOCK_C"])

    if x.numel():
        _dwconv_weight_grad_kernel[grid](
            x,
            grad_y,
            partial,
            T,
            C,
            shift,
            K=K,
            T_CHUNK=T_CHUNK,
            COMPUTE=_compute_dtype(x),
        )
    return partial.sum(0).t().reshape(C, 1, K).to(weight.dtype)  # (C, 1, K)


class _CausalDWConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, lookahead: int) -> Tensor:
        x, weight = x.contiguous(), weight.contiguous()
        shift = weight.shape[-1] - 1 - lookahead
        ctx.save_for_backward(x, weight)
        ctx.shift = shift
        return _convolve(x, weight, torch.empty_like(x), shift, flip=False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _convolve(grad_y, weight, torch.empty_like(x), ctx.shift, flip=True)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_grad(x, grad_y, weight, ctx.shift)
        return grad_x, grad_weight, None


def causal_dwconv(x: Tensor, weight: Tensor, lookahead: int = 0) -> Tensor:
    """Depthwise conv over time on the Triton kernels, differentiable in x and weight.

    x: (B, T, C); weight: (C, 1, K), nn.Conv1d's for `groups=C`; `lookahead` in 0..K-1 future
    steps each output sees (0: causal). Returns (B, T, C) in x's dtype; equals
    `causal_dwconv_reference`. Raises `ValueError` on a wrong shape, dtype or device.

    >>> import torch
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: under TRITON_INTERPRET=1
    >>> x = torch.arange(1.0, 5.0, device=device).view(1, 4, 1)
    >>> weight = torch.tensor([[[1.0, 10.0]]], device=device)
    >>> causal_dwconv(x, weight)[0, :, 0].tolist()
    [10.0, 21.0, 32.0, 43.0]
    """
    require(runs_on(x), "x must be on CUDA, or on CPU under TRITON_INTERPRET=1")
    require(x.dim() == 3, f"x must be (B, T, C), got shape {tuple(x.shape)}")
    C = x.shape[-1]
    require(
        weight.dim() == 3 and weight.shape[:2] == (C, 1),
        f"weight must be ({C}, 1, K) for x with {C} channels, got {tuple(weight.shape)}",
    )
    K = weight.shape[-1]
    require(K >= 1, "weight must have at least one tap")
    require(0 <= lookahead < K, f"lookahead must be in 0..{K - 1}, got {lookahead}")
    require(x.device == weight.device, f"x is on {x.device}, weight on {weight.device}")
    require(
        x.is_floating_point() and weight.is_floating_point(),
        f"x and weight must be floating point, got {x.dtype} and {weight.dtype}",
    )
    return _CausalDWConv.apply(x, weight, lookahead)


__all__ = ["causal_dwconv", "causal_dwconv_reference"]
