"""The feed-forward block, runnable at any prefix of its hidden width (MatFormer nesting).

>>> import torch
>>> ffn = FFN(16, 64, "swiglu")
>>> ffn(torch.randn(2, 3, 16), width=8).shape
torch.Size([2, 3, 16])
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tnas.nn.activations import create_activation


class FFN(nn.Module):
    """`down(act(up(x)))`, or `down(act(gate(x)) * up(x))` for GLU activations; no biases.

    `width` (1..ffn_dim) runs the block on the first `width` hidden units only, by slicing the
    weights in place (Devvrit et al. 2023, MatFormer): the sub-block shares every parameter.
    """

    def __init__(self, d_model: int, ffn_dim: int, activation: str):
        super().__init__()
        self.ffn_dim = ffn_dim
        self.act = create_activation(activation)
        self.up = nn.Linear(d_model, ffn_dim, bias=False)
        self.gate = nn.Linear(d_model, ffn_dim, bias=False) if self.act.glu else None
        self.down = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x: Tensor, width: int | None = None) -> Tensor:
        if width is None or width == self.ffn_dim:
            # through the modules, so a quantized or cast `up`/`gate`/`down` is used as is
            hidden = self.up(x)  # (B, T, ffn_dim)
            hidden = self.act(self.gate(x), hidden) if self.gate is not None else self.act(hidden)
            return self.down(hidden)
        if not 1 <= width < self.ffn_dim:
            raise ValueError(f"FFN width must be in 1..{self.ffn_dim}, got {width}")
        hidden = F.linear(x, self.up.weight[:width])  # (B, T, width)
        if self.gate is not None:
            hidden = self.act(F.linear(x, self.gate.weight[:width]), hidden)
        else:
            hidden = self.act(hidden)
        return F.linear(hidden, self.down.weight[:, :width])
