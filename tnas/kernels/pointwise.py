"""The pointwise activations in torch, each defined once: the references the fused kernel of
`tnas.kernels.activation` is tested against, and the functions `tnas.nn.activations` builds the
FFN's activations from (a GLU's gate included). Names are those of `tnas.space.catalog`.

Unlike the kernel modules this one imports no Triton, so `tnas.nn` imports it on any machine.

>>> import torch
>>> FUNCTIONS["squared_relu"](torch.tensor([-1.0, 2.0])).tolist()
[0.0, 4.0]
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def squared_relu(x: Tensor) -> Tensor:
    """ReLU(x)^2 (So et al. 2021, Primer)."""
    return F.relu(x).square()


FUNCTIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf-based)
    "silu": F.silu,
    "squared_relu": squared_relu,
}
