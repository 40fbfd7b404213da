"""Linear attention with a per-head decay: gated linear attention and retention.

Both run, per head, the recurrence

    S_t = a_t S_{t-1} + k_t v_t^T,    o_t = q_t^T S_t    (q scaled by Dh^-0.5)

and differ only in where the decay a_t in (0, 1) comes from:

- GLA (Yang et al., 2024, "Gated Linear Attention Transformers with Hardware-Efficient
  Training"): data-dependent, log a_t = logsigmoid(W x_t + b) / 16 per token and head; the
  temperature 16 keeps decays near 1.
- Retention (Sun et al., 2023, "Retentive Network: A Successor to Transformer for Large
  Language Models"): fixed, a = 1 - 2^(-5-h) for head h.

Each head's output goes through a parameter-free RMS norm before the output projection.
`reference` is the recurrence, one step per token; `mix` is the chunked form: inside a chunk a
masked (L, L) product weighted by decays from cumulative log-decays, across chunks a carried
state. Without `causal`, a forward and a time-reversed pass are summed (`bidirectional`).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.nn.mixers.base import Mixer, bidirectional
from tnas.space.config import LayerConfig

CHUNK = 16
NORM_EPS = 1e-5


def recurrent(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor) -> Tensor:
    """The recurrence, one token at a time. q, k, v: (B, H, T, Dh); log_decay: (B, H, T)."""
    B, H, T, Dh = q.shape
    state = q.new_zeros(B, H, Dh, Dh)
    outputs = []
    for t in range(T):
        decay = log_decay[:, :, t, None, None].exp()  # (B, H, 1, 1)
        state = decay * state + k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, Dh, Dh)
        outputs.append((q[:, :, t, None, :] @ state).squeeze(2))  # (B, H, Dh)
    return torch.stack(outputs, dim=2)


def chunked(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor) -> Tensor:
    """The same recurrence, a chunk of tokens at a time. Shapes as in `recurrent`.

    Every exponent is a sum of log-decays over a span that ends at or after where it starts,
    so it is <= 0 and its exp never overflows.
    """
    B, H, T, Dh = q.shape
    state = q.new_zeros(B, H, Dh, Dh)
    outputs = []
    for start in range(0, T, CHUNK):
        qc, kc, vc = (t[:, :, start : start + CHUNK] for t in (q, k, v))  # (B, H, L, Dh)
        L = qc.shape[2]
        cumulative = log_decay[:, :, start : start + CHUNK].cumsum(-1)  # (B, H, L)
        future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
        gaps = cumulative[..., :, None] - cumulative[..., None, :]  # (B, H, L, L): t, s
        decays = gaps.masked_fill(future, float("-inf")).exp()
        intra = ((qc @ kc.transpose(-1, -2)) * decays) @ vc
        inter = (qc * cumulative[..., None].exp()) @ state
        outputs.append(intra + inter)
        to_end = (cumulative[..., -1:] - cumulative).exp()  # (B, H, L)
        carried = cumulative[..., -1, None, None].exp() * state  # decayed across the chunk
        state = carried + (kc * to_end[..., None]).transpose(-1, -2) @ vc  # (B, H, Dh, Dh)
    return torch.cat(outputs, dim=2)


class DecayedLinearAttention(Mixer):
    """Shared body of GLA and retention; subclasses give the per-head log-decay."""

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.n_heads = layer.n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    @abc.abstractmethod
    def log_decay(self, x: Tensor) -> Tensor:
        """log a_t per head and token, all < 0. x: (B, T, D) -> (B, H, T)."""

    def heads(self, x: Tensor, scan) -> Tensor:
        """Run `scan` over the heads and RMS-normalise each head. x: (B, T, D) -> (B, T, D)."""
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh)
        o = scan(q * (D // H) ** -0.5, k, v, self.log_decay(x))  # (B, H, T, Dh)
        o = F.rms_norm(o, (D // H,), eps=NORM_EPS)
        return o.transpose(1, 2).reshape(B, T, D)

    def run(self, x: Tensor, causal: bool, scan) -> Tensor:
        if causal:
            return self.out(self.heads(x, scan))
        return self.out(bidirectional(lambda seq: self.heads(seq, scan), x))

    def mix(self, x: Tensor, causal: bool) -> Tensor:
        return self.run(x, causal, chunked)

    def reference(self, x: Tensor, causal: bool) -> Tensor:
        return self.run(x, causal, recurrent)


class GatedLinearAttention(DecayedLinearAttention):
    """GLA with a scalar gate per head: log a_t = logsigmoid(W x_t + b) / 16.

    >>> from tnas.space import LayerConfig
    >>> mixer = GatedLinearAttention(32, LayerConfig(mixer="gla", n_heads=4), 64)
    >>> mixer(torch.randn(2, 10, 32)).shape
    torch.Size([2, 10, 32])
    """

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        self.decay = nn.Linear(d_model, layer.n_heads, bias=True)

    def log_decay(self, x: Tensor) -> Tensor:
        return (F.logsigmoid(self.decay(x)) / 16).transpose(1, 2)  # (B, H, T)


class Retention(DecayedLinearAttention):
    """RetNet retention: a fixed decay 1 - 2^(-5-h) for head h.

    >>> from tnas.space import LayerConfig
    >>> mixer = Retention(32, LayerConfig(mixer="retention", n_heads=4), 64)
    >>> mixer(torch.randn(2, 10, 32)).shape
    torch.Size([2, 10, 32])
    """

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__(d_model, layer, max_seq_len)
        gamma = 1 - 2.0 ** (-5 - torch.arange(layer.n_heads, dtype=torch.float32))
        self.register_buffer("gamma", gamma)  # (H,)

    def log_decay(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return self.gamma.log()[None, :, None].expand(B, -1, T).to(x.dtype)  # (B, H, T)
