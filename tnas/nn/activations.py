"""Registry of FFN activations: pointwise ones, GLU variants, and PolyCom's polynomials.

Built from the catalogue (`tnas.space.catalog.ACTIVATION_SPECS`): an activation with parameters
of its own is a module here (`MODULES`); any other runs its torch function from
`tnas.kernels.pointwise`, a GLU its gate's. A GLU activation (`glu = True`) takes the gate and
the up projection, `act(gate) * up`, so its FFN has three matrices instead of two.

>>> import torch
>>> create_activation("squared_relu")(torch.tensor([-1.0, 2.0])).tolist()
[0.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnas.kernels.pointwise import FUNCTIONS
from tnas.space.catalog import ACTIVATION_SPECS, ActivationSpec
from tnas.space.config import ConfigError
from tnas.space.errors import unknown_name


class Pointwise(nn.Module):
    glu = False

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class GLU(nn.Module):
    """Gated linear unit (Shazeer 2020): `fn(gate) * up`."""

    glu = True

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, gate: Tensor, up: Tensor) -> Tensor:
        return self.fn(gate) * up


class PolyReLU(nn.Module):
    """PolyCom (Zhuo et al. 2024): sum_{i=0..3} a_i ReLU(x)^i with learned a."""

    glu = False

    def __init__(self, order: int = 3):
        super().__init__()
        self.coefficients = nn.Parameter(torch.tensor([0.0] + [1.0 / order] * order))

    def forward(self, x: Tensor) -> Tensor:
        r = F.relu(x)
        powers = torch.stack([r**i for i in range(len(self.coefficients))], dim=-1)
        return powers @ self.coefficients


class PolyNorm(nn.Module):
    """PolyCom (Zhuo et al. 2024): sum_{i=1..3} a_i RMSNorm(x^i) + b, normalised over features."""

    glu = False

    def __init__(self, order: int = 3, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.coefficients = nn.Parameter(torch.full((order,), 1.0 / order))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bias
        for i, a in enumerate(self.coefficients, start=1):
            p = x**i
            out = out + a * p * torch.rsqrt(p.square().mean(-1, keepdim=True) + self.eps)
        return out


# The activations with parameters of their own (`ActivationSpec.params`).
MODULES: dict[str, type[nn.Module]] = {"polyrelu": PolyReLU, "polynorm": PolyNorm}


def _constructor(spec: ActivationSpec) -> Callable[[], nn.Module]:
    if spec.name in MODULES:
        return MODULES[spec.name]
    if spec.glu:
        return partial(GLU, FUNCTIONS[spec.gate])
    return partial(Pointwise, FUNCTIONS[spec.name])


ACTIVATION_CLASSES = {name: _constructor(spec) for name, spec in ACTIVATION_SPECS.items()}


def create_activation(name: str) -> nn.Module:
    if name not in ACTIVATION_CLASSES:
        raise ConfigError(unknown_name("activation", name, ACTIVATION_CLASSES))
    return ACTIVATION_CLASSES[name]()
