"""Int8 weight-only matmul: `y = x @ (w_int8 * scales[:, None]).T + bias`, dequantised in the
kernel.

Weights are quantized symmetrically per output channel (`quantize_int8`): row n of the (N, K)
int8 matrix times `scales[n]` approximates row n of the float weight to within `scales[n] / 2`.
The kernel reads the int8 tiles (a quarter of fp32's bytes, half of fp16's), converts them to the
activations' dtype (exact: |q| <= 127), accumulates the dot in fp32 and multiplies the
accumulator by each column's scale once, at the end. It is tuned for decoding, where the
weights' bytes are the cost: M (tokens) of 1 to 16 against K, N of 4096 and more.

There, N-tiles alone leave most SMs idle (N = 4096 in 64-wide tiles is 64 programs for an H100's
132 SMs), so for M <= `DECODE_MAX_M` the configs also split K over `SPLIT_K` programs, each
summing a contiguous run of K-tiles. Split partial sums meet in a zeroed float32 (M, N) buffer
through atomic adds and are cast to x's dtype after; the adds' order varies, so split results
may differ in their last bits from call to call. Unsplit, the kernel writes y directly.

>>> import torch
>>> weight = torch.randn(64, 32)
>>> w_int8, scales = quantize_int8(weight)
>>> bool(((dequantize_int8(w_int8, scales) - weight).abs() <= scales[:, None] / 2 + 1e-6).all())
True
>>> x = torch.randn(3, 32)
>>> int8_matmul_reference(x, w_int8, scales).shape
torch.Size([3, 64])
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from tnas.kernels.common import INTERPRET, autotune, require, runs_on

ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: (N, K) float -> int8 (N, K) and float32 scales (N,).

    `scales[n] = max |weight[n]| / 127`, so no value is clipped and each is off by at most half
    a step; an all-zero row gets scale 0.

    >>> w_int8, scales = quantize_int8(torch.tensor([[0.5, -1.0], [0.0, 0.0]]))
    >>> w_int8.tolist(), scales[1].item()
    ([[64, -127], [0, 0]], 0.0)
    """
    require(weight.ndim == 2, f"weight must be (N, K), got shape {tuple(weight.shape)}")
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=1) / 127  # (N,)
    steps = torch.round(weight / scales.clamp_min(torch.finfo(torch.float32).tiny)[:, None])
    return steps.clamp(-127, 127).to(torch.int8), scales


def dequantize_int8(w_int8: Tensor, scales: Tensor) -> Tensor:
    """The float32 (N, K) weight an int8 weight and its per-channel scales stand for."""
    return w_int8.float() * scales.float()[:, None]


def int8_matmul_reference(
    x: Tensor, w_int8: Tensor, scales: Tensor, bias: Tensor | None = None
) -> Tensor:
    """`x @ dequantize_int8(w_int8, scales).T (+ bias)` in float32, returned in x's dtype.

    x: (..., K), w_int8: (N, K), scales: (N,), bias: (N,) -> (..., N).
    """
    y = x.float() @ dequantize_int8(w_int8, scales).T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
TILES = [
    (16, 64, 128, 4, 4),
    (16, 16, 256, 2, 4),
    (16, 32, 128, 4, 4),
    (16, 32, 256, 4, 4),
    (16, 32, 512, 4, 3),
    (16, 64, 256, 4, 3),
    (16, 128, 128, 4, 4),
    (16, 128, 256, 8, 3),
    (32, 128, 128, 4, 4),
    (64, 128, 64, 4, 4),
    (128, 128, 64, 8, 3),
]
# tokens up to which the split-K configs (and their float32 buffer) are used: decoding
DECODE_MAX_M = 16


def tile_config(tile: tuple[int, int, int, int, int], split_k: int) -> triton.Config:
    """The config of a `TILES` entry whose K is split over `split_k` programs."""
    block_m, block_n, block_k, num_warps, num_stages = tile
    meta = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": split_k}
    return triton.Config(meta, num_warps=num_warps, num_stages=num_stages)


DECODE_CONFIGS = [tile_config(t, s) for t in TILES if t[0] == 16 for s in (1, 2, 4, 8, 16)]
PREFILL_CONFIGS = [tile_config(t, 1) for t in TILES]


def drop_idle_splits(configs: list[triton.Config], named_args: dict, **_) -> list[triton.Config]:
    """The configs whose K-ranges each hold at least one K-tile (the autotuner's
    `early_config_prune`): more splits than K-tiles only add programs that add zeros."""
    K = named_args["K"]
    return [c for c in configs if c.kwargs["SPLIT_K"] <= triton.cdiv(K, c.kwargs["BLOCK_K"])]


@triton.jit
def _int8_matmul_kernel(
    x_ptr,
    w_ptr,
    scales_ptr,
    bias_ptr,
    y_ptr,
    acc_ptr,
    M,
    N,
    K,
    M_BUCKET,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    # this program's K-range: whole K-tiles, the splits' ranges one after another
    tiles_per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K)
    k_start = pid_k * tiles_per_split * BLOCK_K
    k_end = tl.minimum(K, k_start + tiles_per_split * BLOCK_K)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_start + offs_k[None, :]) * stride_xk
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + (k_start + offs_k[:, None]) * stride_wk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        k_left = K - k
        x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
        w = tl.load(w_ptrs, mask=(offs_n[None, :] < N) & (offs_k[:, None] < k_left), other=0)
        acc = tl.dot(x, w.to(x.dtype), acc)  # (BM, BK) @ (BK, BN)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    scales = tl.load(scales_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
    acc = acc * scales[None, :]
    if HAS_BIAS:
        if pid_k == 0:  # once per output: by the first split
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K == 1:
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=y_mask)
    else:
        # acc_ptr: zeroed float32 (M, N), laid out as y
        acc_ptrs = acc_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
        tl.atomic_add(acc_ptrs, acc, mask=y_mask, sem="relaxed")


_KEY = ["M_BUCKET", "N", "K"]
# the tuning runs add into acc too: zero it after them, before the call's own launch
_int8_matmul_decode = autotune(
    DECODE_CONFIGS,
    key=_KEY,
    reset_to_zero=["acc_ptr"],
    prune_configs_by={"early_config_prune": drop_idle_splits},
)(_int8_matmul_kernel)
_int8_matmul_prefill = autotune(PREFILL_CONFIGS, key=_KEY)(_int8_matmul_kernel)


def check_quantized_args(
    name: str, x: Tensor, weight: Tensor, scales: Tensor, bias: Tensor | None
) -> None:
    """The checks both weight-only matmuls share: devices, dtypes, and the bias' shape."""
    require(runs_on(x), f"{name}: x must be on CUDA (or CPU under TRITON_INTERPRET=1): {x.device}")
    for label, tensor in (("weight", weight), ("scales", scales), ("bias", bias)):
        if tensor is not None:
            require(
                tensor.device == x.device, f"{name}: {label} on {tensor.device}, x on {x.device}"
            )
    require(x.dtype in ACTIVATION_DTYPES, f"{name}: x must be float16/bfloat16/float32: {x.dtype}")
    # Triton's interpreter holds bfloat16 as raw uint16 bits, and its dot multiplies those
    require(not (INTERPRET and x.dtype == torch.bfloat16), f"{name}: bfloat16 x needs CUDA")
    require(weight.ndim == 2, f"{name}: weight must be 2-D, got shape {tuple(weight.shape)}")
    require(scales.is_floating_point(), f"{name}: scales must be floating point: {scales.dtype}")
    if bias is not None:
        N = weight.shape[0]
        require(bias.shape == (N,), f"{name}: bias must be ({N},), got {tuple(bias.shape)}")
        require(bias.is_floating_point(), f"{name}: bias must be floating point: {bias.dtype}")


def int8_matmul(x: Tensor, w_int8: Tensor, scales: Tensor, bias: Tensor | None = None) -> Tensor:
    """`x @ (w_int8 * scales[:, None]).T (+ bias)` on the Triton kernel, in x's dtype.

    x: (..., K) float16, bfloat16 or float32; w_int8: (N, K) int8; scales: (N,); bias: (N,)
    -> (..., N). Raises `ValueError` on a wrong shape, dtype or device. It never waits on the
    device, so it can be captured in a CUDA graph once each shape has been tuned (a shape's
    first call benchmarks the configs).

    >>> from tnas.kernels.common import INTERPRET
    >>> w_int8, scales = quantize_int8(torch.randn(48, 32))
    >>> x = torch.randn(2, 3, 32)
    >>> if INTERPRET:  # CUDA tensors elsewhere
    ...     y = int8_matmul(x, w_int8, scales)
    ...     assert torch.allclose(y, int8_matmul_reference(x, w_int8, scales), atol=1e-4)
    """
    check_quantized_args("int8_matmul", x, w_int8, scales, bias)
    N, K = w_int8.shape
    require(w_int8.dtype == torch.int8, f"int8_matmul: w_int8 must be int8, got {w_int8.dtype}")
    require(x.shape[-1] == K, f"int8_matmul: x has {x.shape[-1]} features, w_int8 expects {K}")
    require(scales.shape == (N,), f"int8_matmul: scales must be ({N},), got {tuple(scales.shape)}")
    kernels = (_int8_matmul_decode, _int8_matmul_prefill)
    return launch(kernels, x, N, (w_int8, scales.contiguous()), bias, w_int8.stride())


def launch(kernels, x: Tensor, N: int, weights: tuple, bias, strides: tuple, **meta) -> Tensor:
    """Run a weight-only matmul on x (..., K): the decode kernel (split-K, into a zeroed float32
    buffer) up to `DECODE_MAX_M` rows, else the prefill one; y (..., N) in x's dtype.

    `kernels` is (decode, prefill) over one `@triton.jit` function taking x, the `weights`
    tensors, bias, y, the buffer, M, N, K, the tuning bucket of M, then x's strides, the
    weights' `strides` and y's, and the constexprs `meta` plus HAS_BIAS.
    """
    K = x.shape[-1]
    x2d = x.reshape(-1, K)  # (M, K)
    M = x2d.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if M == 0:
        return y.reshape(*x.shape[:-1], N)
    kernel, acc = kernels[1], y
    if M <= DECODE_MAX_M:
        kernel, acc = kernels[0], torch.zeros(M, N, device=x.device, dtype=torch.float32)

    def grid(meta):
        return triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]), meta["SPLIT_K"]

    kernel[grid](
        x2d,
        *weights,
        y if bias is None else bias.contiguous(),
        y,
        acc,
        M,
        N,
        K,
        min(triton.next_power_of_2(M), 256),  # tuning key: prefill lengths share a config
        *x2d.stride(),
        *strides,
        *y.stride(),
        HAS_BIAS=bias is not None,
        **meta,
    )
    if kernel.best_config.kwargs["SPLIT_K"] > 1:
        y = acc.to(x.dtype)
    return y.reshape(*x.shape[:-1], N)


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 per output channel, run on `int8_matmul`.

    Buffers (in `state_dict` and counted by `model_bytes`): `qweight` int8 (out, in), `scales`
    float32 (out,), `bias` float32 (out,) or None. `weight` is the dequantized weight in `dtype`,
    for code that slices it (MatFormer's sub-widths) instead of calling the layer.

    >>> from tnas.kernels.common import INTERPRET
    >>> layer = Int8Linear.from_linear(nn.Linear(32, 16))
    >>> layer.qweight.dtype, layer.weight.shape
    (torch.int8, torch.Size([16, 32]))
    >>> if INTERPRET:  # CUDA tensors elsewhere
    ...     assert layer(torch.randn(2, 5, 32)).shape == (2, 5, 16)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        self.register_buffer(
            "qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scales", torch.ones(out_features, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype = torch.float16) -> Int8Linear:
        """The int8 layer quantized from `linear`'s weight (`quantize_int8`), on its device;
        `dtype` is that of `weight`, the activations it will see."""
        has_bias, device = linear.bias is not None, linear.weight.device
        layer = cls(linear.in_features, linear.out_features, has_bias, dtype, device)
        layer.qweight, layer.scales = quantize_int8(linear.weight)
        if has_bias:
            layer.bias = linear.bias.detach().float().clone()
        return layer

    @property
    def weight(self) -> Tensor:
        return dequantize_int8(self.qweight, self.scales).to(self.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return int8_matmul(x, self.qweight, self.scales, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + (
            f"bias={self.bias is not None}, dtype={self.dtype}"
        )


__all__ = [
    "Int8Linear",
    "dequantize_int8",
    "int8_matmul",
    "int8_matmul_reference",
    "quantize_int8",
]
