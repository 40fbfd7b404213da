"""A per-channel long convolution, built as in SGConv (Li et al., 2022, "What Makes
Convolutional Models Great on Long Sequence Modeling?").

The kernel is made of `long_conv_scales(max_seq_len)` sub-kernels of `LONG_CONV_BASE_TAPS`
taps each. As in SGConv, sub-kernel i is linearly upsampled by 2^max(0, i-1), so that after
scale i the kernel spans 16 * 2^i taps, and is weighted by 0.5^i, so that far taps are smoother
and smaller. The pieces are concatenated, cropped to `max_seq_len` and divided by their norm
over taps, per channel. The mixer is `out(gelu(k * x + D_skip x))`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.nn.mixers.base import Mixer, bidirectional
from tnas.space.catalog import LONG_CONV_BASE_TAPS, long_conv_scales
from tnas.space.config import LayerConfig

DECAY = 0.5


class LongConv(Mixer):
    """SGConv-style long convolution, by FFT in `mix` and directly in `reference`."""

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        D = d_model
        self.sub_kernels = nn.ParameterList(
            nn.Parameter(torch.randn(D, LONG_CONV_BASE_TAPS))
            for _ in range(long_conv_scales(max_seq_len))
        )
        self.D_skip = nn.Parameter(torch.randn(D))
        self.out = nn.Linear(D, D, bias=False)

    def kernel(self, T: int) -> Tensor:
        """The first T taps of the unit-norm kernel, (D, T)."""
        if T > self.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.max_seq_len}")
        pieces = []
        for i, sub_kernel in enumerate(self.sub_kernels):
            upsample = 2 ** max(0, i - 1)
            piece = F.interpolate(sub_kernel[None], scale_factor=upsample, mode="linear")[0]
            pieces.append(piece * DECAY**i)  # (D, 16 * upsample)
        k = torch.cat(pieces, dim=-1)[:, : self.max_seq_len]  # (D, max_seq_len)
        # Normalised live rather than by a norm frozen at init (SGConv), so the taps beyond T
        # still get a gradient and the kernel keeps unit norm per channel while it trains.
        return (k / k.norm(dim=-1, keepdim=True))[:, :T]

    def fft_conv(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        # in fp32 at least: CPU FFTs have no bf16, and CUDA's fp16 FFTs want power-of-2 lengths
        dtype = torch.promote_types(x.dtype, torch.float32)
        k_f = torch.fft.rfft(self.kernel(T).to(dtype), n=2 * T)  # (D, T + 1)
        x_f = torch.fft.rfft(x.transpose(1, 2).to(dtype), n=2 * T)  # (B, D, T + 1)
        y = torch.fft.irfft(x_f * k_f, n=2 * T)[..., :T].transpose(1, 2)  # (B, T, D)
        return y.to(x.dtype)

    def direct_conv(self, x: Tensor) -> Tensor:
        T, D = x.shape[1], x.shape[2]
        weight = self.kernel(T).flip(-1)[:, None]  # (D, 1, T)
        padded = F.pad(x.transpose(1, 2), (T - 1, 0))  # (B, D, 2T - 1)
        return F.conv1d(padded, weight, groups=D).transpose(1, 2)  # (B, T, D)

    def finish(self, x: Tensor, conv: Tensor) -> Tensor:
        return self.out(F.gelu(conv + self.D_skip * x))

    def mix(self, x: Tensor, causal: bool) -> Tensor:
        conv = self.fft_conv(x) if causal else bidirectional(self.fft_conv, x)
        return self.finish(x, conv)

    def reference(self, x: Tensor, causal: bool) -> Tensor:
        conv = self.direct_conv(x) if causal else bidirectional(self.direct_conv, x)
        return self.finish(x, conv)
