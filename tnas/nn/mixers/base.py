"""The base every token mixer derives from: `(B, T, D) -> (B, T, D)` with a `causal` flag."""

from __future__ import annotations

import abc

from torch import Tensor, nn

from tnas.space.config import LayerConfig


class Mixer(nn.Module, abc.ABC):
    """A token mixer built from one layer's config.

    Subclasses implement `mix`, their fast form. Mixers that also have a slow, obviously
    correct form (a recurrence, a direct convolution) override `reference`; the conformance
    suite checks the two agree to 1e-4 in fp32.

    Mixers that are recurrences by nature (a scan runs forward in time) are made bidirectional
    for `causal=False` by `bidirectional`, which sums a forward and a time-reversed pass.
    """

    def __init__(self, d_model: int, layer: LayerConfig, max_seq_len: int):
        super().__init__()
        self.d_model = d_model
        self.max_seq_len = max_seq_len

    @abc.abstractmethod
    def mix(self, x: Tensor, causal: bool) -> Tensor:
        """The fast form. x: (B, T, D) -> (B, T, D)."""

    def reference(self, x: Tensor, causal: bool) -> Tensor:
        """The slow reference form; by default the fast form is its own reference."""
        return self.mix(x, causal)

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        return self.mix(x, causal)


def bidirectional(fn, x: Tensor) -> Tensor:
    """Run a causal map forward and on the time-reversed input, and sum. x: (B, T, D)."""
    return fn(x) + fn(x.flip(1)).flip(1)
