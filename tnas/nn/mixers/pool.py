"""Average pooling as a token mixer: PoolFormer (Yu et al., 2022, "MetaFormer Is Actually What
You Need for Vision").

The mixer is `pool(x) - x` with no parameters. `pool` averages a window of `conv_kernel` tokens
ending at t (causal) or centred on t (bidirectional); near the edges it averages only the tokens
that exist, as `count_include_pad=False` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tnas.nn.mixers.base import Mixer
from tnas.space.config import LayerConfig


class CausalAvgPool(Mixer):
    """PoolFormer's `pool(x) - x` over a window of `layer.conv_kernel` tokens; no parameters."""

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.kernel = layer.conv_kernel

    def window(self, causal: bool) -> tuple[int, int]:
        """Tokens the window reaches before and after t."""
        before = self.kernel - 1 if causal else (self.kernel - 1) // 2
        return before, self.kernel - 1 - before

    def mix(self, x: Tensor, causal: bool) -> Tensor:
        B, T, D = x.shape
        before, after = self.window(causal)
        padded = F.pad(x.transpose(1, 2), (before, after))  # (B, D, T + K - 1)
        mean_with_zeros = F.avg_pool1d(padded, self.kernel, stride=1)  # (B, D, T)
        ones = F.pad(x.new_ones(1, 1, T), (before, after))
        share_real = F.avg_pool1d(ones, self.kernel, stride=1)  # (1, 1, T): real tokens / K
        return (mean_with_zeros / share_real).transpose(1, 2) - x

    def reference(self, x: Tensor, causal: bool) -> Tensor:
        T = x.shape[1]
        before, after = self.window(causal)
        pooled = torch.stack(
            [x[:, max(0, t - before) : t + after + 1].mean(1) for t in range(T)], dim=1
        )  # (B, T, D)
        return pooled - x
