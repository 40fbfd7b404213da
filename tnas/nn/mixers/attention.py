"""Softmax multi-head attention, and Primer's multi-dconv-head attention (MDHA).

MDHA (So et al., 2021, "Primer") adds a depthwise convolution over time, of `dconv_kernel`
taps, after each of the Q, K and V projections, per channel.

Both take `layer.head_dim`: H heads of that size are `H * head_dim` wide side by side (`d_model`
when it is 0), so a model with a prefix of another's heads at the same head size is a slice of
it (MatFormer's head nesting, `tnas.elastic`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.nn.mixers.base import Mixer
from tnas.space.catalog import attention_width
from tnas.space.config import LayerConfig


class SoftmaxAttention(Mixer):
    """Multi-head attention through `scaled_dot_product_attention`, no biases.

    `qkv` holds the Q, K and V projections as three row blocks of `inner = H * head_dim` rows,
    each block head after head; `out` reads the heads' outputs in the same order. So the first
    `n_heads` heads are the first `n_heads * head_dim` rows of each block and as many columns
    of `out`: `forward(x, causal, n_heads=h)` runs those heads only, on views of the weights.
    """

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.n_heads = layer.n_heads
        self.inner = attention_width(d_model, layer.n_heads, layer.head_dim)
        self.head_dim = self.inner // self.n_heads
        self.qkv = nn.Linear(d_model, 3 * self.inner, bias=False)
        self.out = nn.Linear(self.inner, d_model, bias=False)

    def check_heads(self, n_heads: int | None) -> int:
        if n_heads is None:
            return self.n_heads
        if not 1 <= n_heads <= self.n_heads:
            raise ValueError(f"n_heads must be in 1..{self.n_heads}, got {n_heads}")
        return n_heads

    def project(self, x: Tensor, causal: bool, n_heads: int) -> Tensor:
        if n_heads == self.n_heads:
            return self.qkv(x)  # (B, T, 3 * inner), through the module (quantized or not)
        width = n_heads * self.head_dim
        rows = self.qkv.weight.view(3, self.inner, -1)  # (3, inner, D): Q, K, V blocks
        return torch.cat([F.linear(x, rows[i, :width]) for i in range(3)], -1)  # (B, T, 3w)

    def heads(self, x: Tensor, causal: bool, n_heads: int) -> Tensor:
        B, T, _ = x.shape
        qkv = self.project(x, causal, n_heads).view(B, T, 3, n_heads, self.head_dim)
        return qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, T, Dh)

    def output(self, y: Tensor, n_heads: int) -> Tensor:
        B, H, T, Dh = y.shape
        y = y.transpose(1, 2).reshape(B, T, H * Dh)
        return self.out(y) if n_heads == self.n_heads else F.linear(y, self.out.weight[:, : H * Dh])

    def mix(self, x: Tensor, causal: bool, n_heads: int | None = None) -> Tensor:
        n_heads = self.check_heads(n_heads)
        q, k, v = self.heads(x, causal, n_heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, T, Dh)
        return self.output(y, n_heads)

    def reference(self, x: Tensor, causal: bool, n_heads: int | None = None) -> Tensor:
        n_heads = self.check_heads(n_heads)
        T = x.shape[1]
        q, k, v = self.heads(x, causal, n_heads)
        scores = q @ k.transpose(-1, -2) / self.head_dim**0.5  # (B, H, T, T)
        if causal:
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        return self.output(scores.softmax(-1) @ v, n_heads)

    def forward(self, x: Tensor, causal: bool = True, n_heads: int | None = None) -> Tensor:
        return self.mix(x, causal, n_heads)


class MultiDConvHeadAttention(SoftmaxAttention):
    """Primer MDHA: a depthwise conv over time after the Q, K and V projections.

    The conv runs on the Triton kernel (`tnas.kernels.dwconv.causal_dwconv`, forward and
    backward, on the projections' (B, T, C) layout with no transposes) as `use_triton`
    allows: None (the default) on CUDA tensors only, True always (CUDA, or CPU under
    `TRITON_INTERPRET=1`), False never. The torch path pads and runs `nn.Conv1d` over (B, C, T).
    """

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.kernel = layer.dconv_kernel
        self.use_triton: bool | None = None
        channels = 3 * self.inner
        self.dconv = nn.Conv1d(channels, channels, self.kernel, groups=channels, bias=False)

    def taps(self, n_heads: int) -> Tensor:
        """The dconv weight of the first `n_heads` heads' Q, K and V channels: (3 * width, 1, K)."""
        if n_heads == self.n_heads:
            return self.dconv.weight
        width = n_heads * self.head_dim
        taps = self.dconv.weight.view(3, self.inner, 1, self.kernel)  # Q, K, V channel blocks
        return taps[:, :width].reshape(3 * width, 1, self.kernel)

    def project(self, x: Tensor, causal: bool, n_heads: int) -> Tensor:
        use_triton = x.is_cuda if self.use_triton is None else self.use_triton
        if use_triton:
            from tnas.kernels.dwconv import causal_dwconv  # imports Triton

            qkv = super().project(x, causal, n_heads)  # (B, T, 3 * width)
            lookahead = 0 if causal else self.kernel // 2  # the torch path's centred padding
            return causal_dwconv(qkv, self.taps(n_heads), lookahead)
        qkv = super().project(x, causal, n_heads).transpose(1, 2)  # (B, 3 * width, T)
        left = self.kernel - 1 if causal else (self.kernel - 1) // 2
        qkv = F.pad(qkv, (left, self.kernel - 1 - left))
        if n_heads == self.n_heads:
            return self.dconv(qkv).transpose(1, 2)  # (B, T, 3 * inner)
        width = n_heads * self.head_dim
        taps = self.dconv.weight.view(3, self.inner, 1, self.kernel)  # Q, K, V channel blocks
        blocks = qkv.split(width, dim=1)
        mixed = [F.conv1d(blocks[i], taps[i, :width], groups=width) for i in range(3)]
        return torch.cat(mixed, 1).transpose(1, 2)  # (B, T, 3 * width)
