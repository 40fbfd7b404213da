"""Linear attention with the ELU+1 feature map (Katharopoulos et al., 2020, "Transformers are
RNNs: Fast Autoregressive Transformers with Linear Attention").

With phi(x) = elu(x) + 1, the causal output is

    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps),  S_t = sum_{s<=t} phi(k_s) v_s^T,
                                                    z_t = sum_{s<=t} phi(k_s).

`reference` takes the cumulative sums over time directly; `mix` works in chunks: a masked
(L, L) product inside each chunk, and a state (S, z) carried from one chunk to the next.
Without `causal`, every token reads the sums over the whole sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.nn.mixers.base import Mixer
from tnas.space.config import LayerConfig

CHUNK = 16
EPS = 1e-6


def feature_map(x: Tensor) -> Tensor:
    return F.elu(x) + 1


class LinearAttention(Mixer):
    """Multi-head linear attention, fused QKV and output projections, no biases.

    >>> from tnas.space import LayerConfig
    >>> mixer = LinearAttention(32, LayerConfig(mixer="linear_attention", n_heads=4), 64)
    >>> mixer(torch.randn(2, 10, 32)).shape
    torch.Size([2, 10, 32])
    """

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.n_heads = layer.n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh)
        return feature_map(q), feature_map(k), v

    def merge(self, y: Tensor) -> Tensor:
        B, H, T, Dh = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * Dh))

    def global_sums(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        state = k.transpose(-1, -2) @ v  # (B, H, Dh, Dh)
        norm = k.sum(2)  # (B, H, Dh)
        return (q @ state) / ((q * norm[:, :, None]).sum(-1, keepdim=True) + EPS)

    def mix(self, x: Tensor, causal: bool) -> Tensor:
        q, k, v = self.features(x)
        if not causal:
            return self.merge(self.global_sums(q, k, v))
        B, H, T, Dh = q.shape
        state = q.new_zeros(B, H, Dh, Dh)  # sum of phi(k_s) v_s^T over earlier chunks
        norm = q.new_zeros(B, H, 1, Dh)  # sum of phi(k_s) over earlier chunks
        outputs = []
        for start in range(0, T, CHUNK):
            qc, kc, vc = (t[:, :, start : start + CHUNK] for t in (q, k, v))  # (B, H, L, Dh)
            L = qc.shape[2]
            future = torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1)
            scores = (qc @ kc.transpose(-1, -2)).masked_fill(future, 0.0)  # (B, H, L, L)
            numerator = scores @ vc + qc @ state  # (B, H, L, Dh)
            denominator = scores.sum(-1, keepdim=True) + (qc * norm).sum(-1, keepdim=True)
            outputs.append(numerator / (denominator + EPS))
            state = state + kc.transpose(-1, -2) @ vc
            norm = norm + kc.sum(2, keepdim=True)
        return self.merge(torch.cat(outputs, dim=2))

    def reference(self, x: Tensor, causal: bool) -> Tensor:
        q, k, v = self.features(x)
        if not causal:
            return self.merge(self.global_sums(q, k, v))
        states = torch.einsum("bhtd,bhte->bhtde", k, v).cumsum(2)  # (B, H, T, Dh, Dh)
        norms = k.cumsum(2)  # (B, H, T, Dh)
        numerator = torch.einsum("bhtd,bhtde->bhte", q, states)
        denominator = torch.einsum("bhtd,bhtd->bht", q, norms)[..., None]
        return self.merge(numerator / (denominator + EPS))
