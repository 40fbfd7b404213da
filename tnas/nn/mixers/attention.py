"""Softmax multi-head attention, and Primer's multi-dconv-head attention (MDHA).

MDHA (So et al., 2021, "Primer") adds a depthwise convolution over time, of `dconv_kernel`
taps, after each of the Q, K and V projections, per channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.nn.mixers.base import Mixer
from tnas.space.config import LayerConfig


class SoftmaxAttention(Mixer):
    """Multi-head attention through `scaled_dot_product_attention`, no biases."""

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.n_heads = layer.n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def project(self, x: Tensor, causal: bool) -> Tensor:
        return self.qkv(x)  # (B, T, 3D)

    def mix(self, x: Tensor, causal: bool) -> Tensor:
        B, T, D = x.shape
        H = self.n_heads
        qkv = (
            self.project(x, causal).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        )  # (3, B, H, T, Dh)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(B, T, D))

    def reference(self, x: Tensor, causal: bool) -> Tensor:
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.project(x, causal).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (D // H) ** 0.5  # (B, H, T, T)
        if causal:
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        y = scores.softmax(-1) @ v
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class MultiDConvHeadAttention(SoftmaxAttention):
    """Primer MDHA: a depthwise conv over time after the Q, K and V projections."""

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.kernel = layer.dconv_kernel
        self.dconv = nn.Conv1d(
            3 * d_model, 3 * d_model, self.kernel, groups=3 * d_model, bias=False
        )

    def project(self, x: Tensor, causal: bool) -> Tensor:
        qkv = self.qkv(x).transpose(1, 2)  # (B, 3D, T)
        left = self.kernel - 1 if causal else (self.kernel - 1) // 2
        qkv = F.pad(qkv, (left, self.kernel - 1 - left))
        return self.dconv(qkv).transpose(1, 2)  # (B, T, 3D)
