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
from tnas.space.catalog import FUSED_ACTIVATIONS


class FFN(nn.Module):
    """`down(act(up(x)))`, or `down(act(gate(x)) * up(x))` for GLU activations; no biases.

    `width` (1..ffn_dim) runs the block on the first `width` hidden units only, by slicing the
    weights in place (Devvrit et al. 2023, MatFormer): the sub-block shares every parameter.

    The activation runs on the fused Triton kernel (`tnas.kernels.activation`, forward and
    backward) when it is one of `FUSED_ACTIVATIONS` and `use_triton` allows: None (the
    default) on CUDA tensors only, True always (CUDA, or CPU under `TRITON_INTERPRET=1`),
    False never. The torch path is the reference the kernel is tested against.

    >>> import torch
    >>> ffn = FFN(16, 64, "squared_relu")
    >>> ffn.use_triton = False  # the torch activation even on CUDA
    >>> ffn(torch.randn(2, 3, 16)).shape
    torch.Size([2, 3, 16])
    """

    def __init__(self, d_model: int, ffn_dim: int, activation: str):
        super().__init__()
        self.ffn_dim = ffn_dim
        self.activation = activation
        self.use_triton: bool | None = None
        self.act = create_activation(activation)
        self.up = nn.Linear(d_model, ffn_dim, bias=False)
        self.gate = nn.Linear(d_model, ffn_dim, bias=False) if self.act.glu else None
        self.down = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x: Tensor, width: int | None = None) -> Tensor:
        if width is None or width == self.ffn_dim:
            # through the modules, so a quantized or cast `up`/`gate`/`down` is used as is
            hidden = self.up(x)  # (B, T, ffn_dim)
            gate = self.gate(x) if self.gate is not None else None
            return self.down(self.activate(hidden, gate))
        if not 1 <= width < self.ffn_dim:
            raise ValueError(f"FFN width must be in 1..{self.ffn_dim}, got {width}")
        hidden = F.linear(x, self.up.weight[:width])  # (B, T, width)
        gate = F.linear(x, self.gate.weight[:width]) if self.gate is not None else None
        return F.linear(self.activate(hidden, gate), self.down.weight[:, :width])

    def activate(self, hidden: Tensor, gate: Tensor | None) -> Tensor:
        """`act(hidden)`, or `act(gate, hidden)` for a GLU, on the fused kernel where it applies."""
        use_triton = hidden.is_cuda if self.use_triton is None else self.use_triton
        if use_triton and self.activation in FUSED_ACTIVATIONS:
            from tnas.kernels.activation import bias_act, glu_act  # imports Triton

            if gate is None:
                return bias_act(hidden, activation=self.activation)
            return glu_act(gate, hidden, activation=self.activation)
        return self.act(hidden) if gate is None else self.act(gate, hidden)
