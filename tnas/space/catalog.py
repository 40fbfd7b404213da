"""The catalogue of choices a layer can take, and their exact parameter counts.

This module is the single source of the mixers and activations that `tnas.nn` registers (a test
checks that the two agree), of what is known of each without torch (`MixerSpec`,
`ActivationSpec`), and of each block's parameter count as a formula, so that constraints such as
`params <= 20e6` are checked without importing torch. `tests/nn` checks every formula against
`sum(p.numel() for p in module.parameters())` of the built module.

>>> mixer_params("attention", d_model=64, n_heads=4, dconv_kernel=0, conv_kernel=0,
...              state_size=0, max_seq_len=128)
16384
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tnas.space.errors import unknown_name

# Knob names a layer can carry beyond `mixer`, `ffn_dim`, `activation` and `bits`.
MIXER_OPTIONS = ("n_heads", "dconv_kernel", "conv_kernel", "state_size", "head_dim")
# Options for which 0 is a value in its own right: `head_dim` 0 means `d_model // n_heads`.
ZERO_MEANS_DEFAULT = frozenset({"head_dim"})

# Long convolution: SGConv sub-kernels of this many taps, one per scale (see `long_conv_scales`).
LONG_CONV_BASE_TAPS = 16


@dataclass(frozen=True)
class MixerSpec:
    """What a mixer reads from its `LayerConfig` and a one-line description."""

    name: str
    uses: frozenset[str]
    summary: str


MIXERS: dict[str, MixerSpec] = {
    spec.name: spec
    for spec in (
        MixerSpec("attention", frozenset({"n_heads", "head_dim"}), "softmax multi-head attention"),
        MixerSpec(
            "mdha",
            frozenset({"n_heads", "head_dim", "dconv_kernel"}),
            "Primer multi-dconv-head attention (depthwise causal conv after Q, K, V)",
        ),
        MixerSpec("linear_attention", frozenset({"n_heads"}), "linear attention, ELU+1 features"),
        MixerSpec("gla", frozenset({"n_heads"}), "gated linear attention, data-dependent decay"),
        MixerSpec("retention", frozenset({"n_heads"}), "retention, fixed per-head decay"),
        MixerSpec("pool", frozenset({"conv_kernel"}), "causal average pooling (PoolFormer)"),
        MixerSpec(
            "ssm",
            frozenset({"state_size", "conv_kernel"}),
            "Mamba-style selective state-space scan",
        ),
        MixerSpec("long_conv", frozenset(), "SGConv-style FFT long convolution"),
    )
}


@dataclass(frozen=True)
class ActivationSpec:
    """An FFN activation: a one-line summary and what tnas must know of it without torch.

    `gate`: for a gated linear unit, the pointwise activation of its gate, `gate(x W) * (x V)`
    (three matrices instead of two); `params`: the learnable scalars it owns; `fused`: whether
    the Triton kernel of `tnas.kernels.activation` computes it (a test checks the kernel agrees).
    Its torch function is `tnas.kernels.pointwise.FUNCTIONS[name]`, or a module of its own in
    `tnas.nn.activations` when it has parameters.
    """

    name: str
    summary: str
    gate: str = ""
    params: int = 0
    fused: bool = False

    @property
    def glu(self) -> bool:
        return bool(self.gate)


ACTIVATION_SPECS: dict[str, ActivationSpec] = {
    spec.name: spec
    for spec in (
        ActivationSpec("relu", "ReLU", fused=True),
        ActivationSpec("gelu", "GELU (tanh-free, exact)", fused=True),
        ActivationSpec("silu", "SiLU / swish", fused=True),
        ActivationSpec("squared_relu", "ReLU(x)^2 (Primer)", fused=True),
        ActivationSpec("swiglu", "SiLU-gated linear unit (3 matrices)", gate="silu", fused=True),
        ActivationSpec("geglu", "GELU-gated linear unit (3 matrices)", gate="gelu", fused=True),
        ActivationSpec("polyrelu", "sum_i a_i ReLU(x)^i, i=0..3 (PolyCom)", params=4),
        ActivationSpec("polynorm", "sum_i a_i RMSNorm(x^i) + b, i=1..3 (PolyCom)", params=4),
    )
}
# Views of the catalogue, by name.
ACTIVATIONS = {name: spec.summary for name, spec in ACTIVATION_SPECS.items()}
GLU_ACTIVATIONS = frozenset(name for name, spec in ACTIVATION_SPECS.items() if spec.glu)
ACTIVATION_PARAMS = {name: spec.params for name, spec in ACTIVATION_SPECS.items() if spec.params}
FUSED_ACTIVATIONS = frozenset(name for name, spec in ACTIVATION_SPECS.items() if spec.fused)

NORMS = ("layernorm", "rmsnorm")
HEADS = ("lm", "classifier")
BITS = (32, 16, 8, 4)


def long_conv_scales(max_seq_len: int) -> int:
    """Number of SGConv scales: each doubles the span, until the kernel covers `max_seq_len`."""
    return 1 + max(0, math.ceil(math.log2(max_seq_len / LONG_CONV_BASE_TAPS)))


def ssm_dt_rank(d_model: int) -> int:
    """Mamba's low rank for the step-size projection."""
    return math.ceil(d_model / 16)


def attention_width(d_model: int, n_heads: int, head_dim: int) -> int:
    """Width of the heads side by side, `n_heads * head_dim` (`head_dim` 0: `d_model // n_heads`).

    >>> attention_width(64, 4, 0), attention_width(64, 2, 16)
    (64, 32)
    """
    return n_heads * (head_dim or d_model // n_heads)


def mixer_params(
    mixer: str,
    *,
    d_model: int,
    n_heads: int,
    dconv_kernel: int,
    conv_kernel: int,
    state_size: int,
    max_seq_len: int,
    head_dim: int = 0,
) -> int:
    """Exact number of parameters of one mixer module (no biases unless stated)."""
    D = d_model
    if mixer in ("attention", "mdha"):
        inner = attention_width(D, n_heads, head_dim)
        # fused QKV (D, 3 inner) + output (inner, D); MDHA: + depthwise conv on Q, K, V, no bias
        return 4 * D * inner + (3 * inner * dconv_kernel if mixer == "mdha" else 0)
    if mixer in ("linear_attention", "retention"):
        return 4 * D * D  # fused QKV (D, 3D) + output (D, D)
    if mixer == "gla":
        return 4 * D * D + D * n_heads + n_heads  # + per-head decay projection with bias
    if mixer == "pool":
        return 0
    if mixer == "ssm":
        R, N, K = ssm_dt_rank(D), state_size, conv_kernel
        # in_proj (D, 2D), conv (D*K + D), x_proj (D, R+2N), dt_proj (R*D + D), A_log (D, N),
        # skip D (D), out_proj (D, D)
        return 3 * D * D + D * K + 3 * D + 2 * D * R + 3 * D * N
    if mixer == "long_conv":
        # kernel taps per scale, skip D, output projection (D, D)
        return D * D + D * LONG_CONV_BASE_TAPS * long_conv_scales(max_seq_len) + D
    raise KeyError(unknown_name("mixer", mixer, MIXERS))


def ffn_params(d_model: int, ffn_dim: int, activation: str) -> int:
    """Parameters of the FFN: up (and gate) and down projections, no biases."""
    matrices = 3 if activation in GLU_ACTIVATIONS else 2
    return matrices * d_model * ffn_dim + ACTIVATION_PARAMS.get(activation, 0)


def norm_params(norm: str, d_model: int) -> int:
    return 2 * d_model if norm == "layernorm" else d_model
