"""Int4 weight-only matmul: `y = x @ dequantize_int4(packed, scales, group_size).T + bias`,
unpacked and dequantised in the kernel.

Weights are quantized symmetrically per output channel and per group of `group_size`
consecutive input features (`quantize_int4`): each group has a float32 scale, its weights
integers in [-8, 7] (in practice [-7, 7]: `scale = max |w| / 7`), off by at most `scale / 2`.

Layout, chosen for the kernel: `packed` is uint8 (N, K // 2), row n holding output channel n
as `nn.Linear.weight` does, byte j holding input features 2j (low nibble) and 2j + 1 (high
nibble), each stored as `q + 8` in 0..15. A K-tile of a row is then contiguous bytes, and its
two nibbles are the tile's even and odd features, so the kernel multiplies them by the even and
odd columns of x: no interleaving of unpacked values. `scales` is float32 (N, K // group_size).
The kernel reads an eighth of fp32's weight bytes plus the scales and accumulates in fp32. A
K-tile inside one group is multiplied as integers (exact in x's dtype) and its dot product
scaled once per column; a K-tile holding several groups is expanded weight by weight with its
groups' scales. As in `tnas.kernels.int8_matmul`, decode sizes (M <= `DECODE_MAX_M`) also split
K over several programs, summed by atomic adds into a float32 buffer (last bits may vary from
call to call).

>>> import torch
>>> weight = torch.randn(64, 32)
>>> packed, scales = quantize_int4(weight, group_size=16)
>>> packed.shape, packed.dtype, scales.shape
(torch.Size([64, 16]), torch.uint8, torch.Size([64, 2]))
>>> error = (dequantize_int4(packed, scales, 16) - weight).abs()
>>> bool((error <= scales.repeat_interleave(16, dim=1) / 2 + 1e-6).all())
True
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from tnas.kernels.common import autotune, require
from tnas.kernels.int8_matmul import TILES as INT8_TILES
from tnas.kernels.int8_matmul import (
    check_quantized_args,
    drop_idle_splits,
    launch,
    tile_config,
)

DEFAULT_GROUP_SIZE = 128


def check_group_size(group_size: int, K: int, prefix: str = "") -> None:
    """Raise `ValueError` unless `group_size` is a power of two, at least 2, dividing K: a pair
    of features never straddles two groups, and a K-tile holds whole groups or lies in one."""
    require(
        group_size >= 2 and group_size & (group_size - 1) == 0 and K % group_size == 0,
        f"{prefix}group_size must be a power of two >= 2 dividing K={K}, got {group_size}",
    )


def quantize_int4(weight: Tensor, group_size: int = DEFAULT_GROUP_SIZE) -> tuple[Tensor, Tensor]:
    """Symmetric group-wise int4: (N, K) float -> packed uint8 (N, K // 2) and float32 scales
    (N, K // group_size); `group_size` is a power of two dividing K. See the module docstring for
    the layout.

    >>> packed, scales = quantize_int4(torch.tensor([[7.0, -3.5, 0.0, 1.0]]), group_size=4)
    >>> unpack_int4(packed).tolist(), scales.tolist()
    ([[7, -4, 0, 1]], [[1.0]])
    """
    require(weight.ndim == 2, f"weight must be (N, K), got shape {tuple(weight.shape)}")
    N, K = weight.shape
    check_group_size(group_size, K)
    groups = weight.detach().float().reshape(N, K // group_size, group_size)
    scales = groups.abs().amax(dim=2) / 7  # (N, K // group_size)
    steps = torch.round(groups / scales.clamp_min(torch.finfo(torch.float32).tiny)[..., None])
    return pack_int4(steps.clamp(-8, 7).reshape(N, K).to(torch.int8)), scales


def pack_int4(values: Tensor) -> Tensor:
    """Integers in [-8, 7], (N, K) with K even -> uint8 (N, K // 2), two per byte (low nibble
    first), each stored as value + 8."""
    nibbles = (values.to(torch.int16) + 8).to(torch.uint8)  # (N, K) in 0..15
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: Tensor) -> Tensor:
    """The int8 (N, K) values in [-8, 7] that `pack_int4` packed into (N, K // 2) bytes.

    >>> values = torch.tensor([[-8, 7, 0, -1]], dtype=torch.int8)
    >>> torch.equal(unpack_int4(pack_int4(values)), values)
    True
    """
    low = (packed & 0xF).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).flatten(-2)  # (N, K // 2, 2) -> (N, K)


def dequantize_int4(packed: Tensor, scales: Tensor, group_size: int) -> Tensor:
    """The float32 (N, K) weight packed int4 values and their group scales stand for."""
    return unpack_int4(packed).float() * scales.float().repeat_interleave(group_size, dim=1)


def int4_matmul_reference(
    x: Tensor, packed: Tensor, scales: Tensor, group_size: int, bias: Tensor | None = None
) -> Tensor:
    """`x @ dequantize_int4(packed, scales, group_size).T (+ bias)` in float32, returned in x's
    dtype. x: (..., K), packed: (N, K // 2), scales: (N, K // group_size), bias: (N,) -> (..., N).
    """
    y = x.float() @ dequantize_int4(packed, scales, group_size).T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); a tile with BLOCK_K <= group_size scales
# its dot product, a wider one each weight (see the kernel)
TILES = [(16, 64, 64, 4, 4), *INT8_TILES]  # int8's, plus one that fits groups of 64
DECODE_CONFIGS = [tile_config(t, s) for t in TILES if t[0] == 16 for s in (1, 2, 4, 8, 16)]
PREFILL_CONFIGS = [tile_config(t, 1) for t in TILES]


@triton.jit
def _int4_matmul_kernel(
    x_ptr,
    packed_ptr,
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
    stride_pn,
    stride_pk,
    stride_sn,
    stride_sg,
    stride_ym,
    stride_yn,
    GROUP_SIZE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    HALF_K: tl.constexpr = BLOCK_K // 2
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    # this program's K-range: whole K-tiles (so whole groups, or runs of tiles inside one)
    tiles_per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K)
    k_start = pid_k * tiles_per_split * BLOCK_K
    k_end = tl.minimum(K, k_start + tiles_per_split * BLOCK_K)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_byte = tl.arange(0, HALF_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_start + offs_k[None, :]) * stride_xk
    p_ptrs = (  # (BK/2, BN)
        packed_ptr + offs_n[None, :] * stride_pn + (k_start // 2 + offs_byte[:, None]) * stride_pk
    )
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < K - k), other=0.0)
        # (BM, BK/2) each: features 2j and 2j + 1, byte j's low and high nibbles
        x_even, x_odd = tl.split(tl.reshape(x, (BLOCK_M, HALF_K, 2)))
        w_mask = (offs_n[None, :] < N) & (offs_byte[:, None] < (K - k) // 2)
        packed = tl.load(p_ptrs, mask=w_mask, other=0x88).to(tl.int32)
        w_even = (packed & 0xF) - 8  # (BK/2, BN) in -8..7
        w_odd = (packed >> 4) - 8
        if BLOCK_K <= GROUP_SIZE:
            # the tile lies in one group: integer weights (exact in x's dtype), one scale per dot
            dot = tl.dot(x_even, w_even.to(x.dtype))
            dot = tl.dot(x_odd, w_odd.to(x.dtype), dot)
            s_ptrs = scales_ptr + offs_n * stride_sn + (k // GROUP_SIZE) * stride_sg
            scales = tl.load(s_ptrs, mask=offs_n < N, other=0.0).to(tl.float32)  # (BN,)
            acc += dot * scales[None, :]
        else:
            # the tile holds whole groups: each weight times its group's scale, repeated over
            # the group's bytes
            GROUPS: tl.constexpr = BLOCK_K // GROUP_SIZE
            offs_group = k // GROUP_SIZE + tl.arange(0, GROUPS)
            s_mask = (offs_n[None, :] < N) & (offs_group[:, None] < K // GROUP_SIZE)
            s_ptrs = scales_ptr + offs_n[None, :] * stride_sn + offs_group[:, None] * stride_sg
            scales = tl.load(s_ptrs, mask=s_mask, other=0.0).to(tl.float32)  # (GROUPS, BN)
            scales = tl.broadcast_to(scales[:, None, :], (GROUPS, HALF_K // GROUPS, BLOCK_N))
            scales = tl.reshape(scales, (HALF_K, BLOCK_N))
            acc = tl.dot(x_even, (w_even.to(tl.float32) * scales).to(x.dtype), acc)
            acc = tl.dot(x_odd, (w_odd.to(tl.float32) * scales).to(x.dtype), acc)
        x_ptrs += BLOCK_K * stride_xk
        p_ptrs += HALF_K * stride_pk
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


_KEY = ["M_BUCKET", "N", "K", "GROUP_SIZE"]
# the tuning runs add into acc too: zero it after them, before the call's own launch
_int4_matmul_decode = autotune(
    DECODE_CONFIGS,
    key=_KEY,
    reset_to_zero=["acc_ptr"],
    prune_configs_by={"early_config_prune": drop_idle_splits},
)(_int4_matmul_kernel)
_int4_matmul_prefill = autotune(PREFILL_CONFIGS, key=_KEY)(_int4_matmul_kernel)


def int4_matmul(
    x: Tensor, packed: Tensor, scales: Tensor, group_size: int, bias: Tensor | None = None
) -> Tensor:
    """`x @ dequantize_int4(packed, scales, group_size).T (+ bias)` on the Triton kernel, in
    x's dtype.

    x: (..., K) float16, bfloat16 or float32; packed: uint8 (N, K // 2); scales:
    (N, K // group_size); bias: (N,) -> (..., N). Raises `ValueError` on a wrong shape, dtype,
    group size or device. It never waits on the device, so it can be captured in a CUDA graph
    once each shape has been tuned (a shape's first call benchmarks the configs).

    >>> from tnas.kernels.common import INTERPRET
    >>> packed, scales = quantize_int4(torch.randn(48, 64), group_size=32)
    >>> x = torch.randn(2, 3, 64)
    >>> if INTERPRET:  # CUDA tensors elsewhere
    ...     y = int4_matmul(x, packed, scales, 32)
    ...     assert torch.allclose(y, int4_matmul_reference(x, packed, scales, 32), atol=1e-4)
    """
    check_quantized_args("int4_matmul", x, packed, scales, bias)
    N, K = packed.shape[0], 2 * packed.shape[1]
    require(packed.dtype == torch.uint8, f"int4_matmul: packed must be uint8, got {packed.dtype}")
    require(x.shape[-1] == K, f"int4_matmul: x has {x.shape[-1]} features, packed expects {K}")
    check_group_size(group_size, K, "int4_matmul: ")
    require(
        scales.shape == (N, K // group_size),
        f"int4_matmul: scales must be ({N}, {K // group_size}), got {tuple(scales.shape)}",
    )
    kernels = (_int4_matmul_decode, _int4_matmul_prefill)
    strides = (*packed.stride(), *scales.stride())
    return launch(kernels, x, N, (packed, scales), bias, strides, GROUP_SIZE=group_size)


class Int4Linear(nn.Module):
    """A linear layer whose weight is int4 in groups of `group_size` input features, run on
    `int4_matmul`.

    Buffers (in `state_dict` and counted by `model_bytes`): `qweight` uint8 (out, in // 2),
    `scales` float32 (out, in // group_size), `bias` float32 (out,) or None. `weight` is the
    dequantized weight in `dtype`, for code that slices it (MatFormer's sub-widths) instead of
    calling the layer.

    >>> from tnas.kernels.common import INTERPRET
    >>> layer = Int4Linear.from_linear(nn.Linear(64, 16), group_size=32)
    >>> layer.qweight.shape, layer.scales.shape
    (torch.Size([16, 32]), torch.Size([16, 2]))
    >>> if INTERPRET:  # CUDA tensors elsewhere
    ...     assert layer(torch.randn(2, 5, 64)).shape == (2, 5, 16)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        group_size: int = DEFAULT_GROUP_SIZE,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        check_group_size(group_size, in_features)
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        self.group_size = group_size
        packed = torch.full(
            (out_features, in_features // 2), 0x88, dtype=torch.uint8, device=device
        )
        self.register_buffer("qweight", packed)
        self.register_buffer(
            "scales", torch.ones(out_features, in_features // group_size, device=device)
        )
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        group_size: int = DEFAULT_GROUP_SIZE,
        dtype: torch.dtype = torch.float16,
    ) -> Int4Linear:
        """The int4 layer quantized from `linear`'s weight (`quantize_int4`), on its device;
        `dtype` is that of `weight`, the activations it will see."""
        has_bias, device = linear.bias is not None, linear.weight.device
        layer = cls(linear.in_features, linear.out_features, has_bias, group_size, dtype, device)
        layer.qweight, layer.scales = quantize_int4(linear.weight, group_size)
        if has_bias:
            layer.bias = linear.bias.detach().float().clone()
        return layer

    @property
    def weight(self) -> Tensor:
        return dequantize_int4(self.qweight, self.scales, self.group_size).to(self.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return int4_matmul(x, self.qweight, self.scales, self.group_size, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, group_size={self.group_size}, dtype={self.dtype}"
        )


__all__ = [
    "DEFAULT_GROUP_SIZE",
    "Int4Linear",
    "dequantize_int4",
    "int4_matmul",
    "int4_matmul_reference",
    "pack_int4",
    "quantize_int4",
    "unpack_int4",
]
