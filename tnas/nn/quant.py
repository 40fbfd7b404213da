"""Per-layer weight precision, applied for real with kernels that exist: `quantize`.

Each layer's `bits` decides what its block becomes, for inference:

| bits | CPU                                                    | CUDA                            |
|------|--------------------------------------------------------|---------------------------------|
| 32   | unchanged                                              | unchanged                       |
| 16   | `CastBlock` in bfloat16                                | `CastBlock` in float16          |
| 8    | dynamic int8 linears (`quantize_dynamic`, per channel) | `Int8Linear`s, block in float16 |
| 4    | `UnsupportedQuantization`                              | `Int4Linear`s, block in float16 |

A precision without a real kernel on the device raises rather than pretending: a latency
measured on fp32 kernels and reported as 4-bit would be made up. On CUDA, 8 and 4 bits run on
the Triton weight-only kernels of `tnas.kernels` (`weight_only_block`): int8 weights per output
channel, or int4 in groups of input features (`int4_group_size`: 128, else 64, 32 or 16; a
linear none of them divides raises), dequantised inside the matmul; activations float16.

>>> from tnas.nn.model import build_model
>>> from tnas.space import ArchConfig, LayerConfig
>>> cfg = ArchConfig(d_model=32, n_layers=2, vocab_size=64, max_seq_len=16,
...                  layers=(LayerConfig(ffn_dim=64, bits=8), LayerConfig(ffn_dim=64, bits=16)))
>>> model = build_model(cfg)
>>> qmodel = quantize(model, cfg, "cpu")
>>> qmodel.blocks[0].ffn.up._get_name(), type(qmodel.blocks[1]).__name__
('DynamicQuantizedLinear', 'CastBlock')
>>> model_bytes(qmodel) < model_bytes(model)
True
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.ao.quantization
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from tnas.nn.model import TnasModel
from tnas.space.config import ArchConfig

ENGINE_PREFERENCE = ("x86", "fbgemm", "onednn", "qnnpack")
SUPPORTED_BITS = {"cpu": (32, 16, 8), "cuda": (32, 16, 8, 4)}
INT4_GROUP_SIZES = (128, 64, 32, 16)
HALF_DTYPES = {"cpu": torch.bfloat16, "cuda": torch.float16}


class UnsupportedQuantization(ValueError):
    """No real kernel for a layer's precision on this device; the message is one line."""


class CastBlock(nn.Module):
    """A block stored and run in a low-precision float dtype, float32 in and out.

    The input is cast to `dtype` and the output back to the input's dtype, so the residual
    stream between blocks stays float32.
    """

    def __init__(self, block: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.block = block.to(dtype)

    def forward(self, x: Tensor, causal: bool = True, ffn_width: int | None = None) -> Tensor:
        return self.block(x.to(self.dtype), causal, ffn_width).to(x.dtype)


def quantized_engine() -> str:
    """The quantized CPU engine int8 layers are packed for: x86/fbgemm if built, else the next.

    >>> quantized_engine() in ENGINE_PREFERENCE
    True
    """
    engines = torch.backends.quantized.supported_engines
    for name in ENGINE_PREFERENCE:
        if name in engines:
            return name
    raise UnsupportedQuantization(f"no quantized CPU engine in this torch build: {engines}")


@contextmanager
def _engine(name: str) -> Iterator[None]:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _dynamic_int8(block: nn.Module) -> None:
    """Swap every `nn.Linear` of the block for an int8 dynamic one, in place.

    Weights are quantized symmetrically per output channel; activations per tensor at run time.
    """
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (not a dependency here);
        # the fbgemm/onednn kernels it calls are still shipped and work.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_.*", category=UserWarning)
        with _engine(quantized_engine()):
            torch.ao.quantization.quantize_dynamic(
                block, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
            )


def int4_group_size(in_features: int) -> int | None:
    """The int4 group size for a linear of `in_features` inputs: the first of 128, 64, 32 and
    16 that divides it, or None.

    >>> int4_group_size(512), int4_group_size(96), int4_group_size(48), int4_group_size(4)
    (128, 32, 16, None)
    """
    return next((size for size in INT4_GROUP_SIZES if in_features % size == 0), None)


def check_int4_groups(block: nn.Module, name: str) -> None:
    """Raise `UnsupportedQuantization` if a linear of `block` (called `name` in the message)
    has no int4 group size.

    >>> check_int4_groups(nn.ModuleDict({"up": nn.Linear(64, 8), "down": nn.Linear(8, 2)}),
    ...                   "layer0")
    Traceback (most recent call last):
    ...
    tnas.nn.quant.UnsupportedQuantization: no int4 group size ... 8 input features of down in layer0
    """
    for linear_name, module in block.named_modules():
        if type(module) is nn.Linear and int4_group_size(module.in_features) is None:
            raise UnsupportedQuantization(
                "no int4 group size (128, 64, 32 or 16) divides the "
                f"{module.in_features} input features of {linear_name} in {name}"
            )


def weight_only_block(
    block: nn.Module, bits: int, dtype: torch.dtype = torch.float16, name: str = "block"
) -> CastBlock:
    """`block` on the Triton weight-only kernels: a `CastBlock` in `dtype` whose every
    `nn.Linear` is an `Int8Linear` (`bits` 8) or an `Int4Linear` (`bits` 4, groups of
    `int4_group_size`), quantized from the float weights.

    Changes `block` in place. Runs wherever the kernels run: on CUDA (`quantize` uses it there)
    and on CPU under `TRITON_INTERPRET=1`. `dtype` is the activations': float16 (what `quantize`
    uses), bfloat16 on CUDA only, or float32. Raises `UnsupportedQuantization` naming `name`
    and the linear if one has no int4 group size, before changing anything.

    >>> from tnas.kernels.common import INTERPRET
    >>> from tnas.nn.model import Block
    >>> from tnas.space import ArchConfig, LayerConfig
    >>> cfg = ArchConfig(d_model=32, n_layers=1, layers=(LayerConfig(n_heads=2, ffn_dim=64),))
    >>> block = weight_only_block(Block(cfg, cfg.layers[0]), bits=4)
    >>> type(block.block.ffn.up).__name__, block.block.ffn.up.group_size
    ('Int4Linear', 32)
    >>> if INTERPRET:  # CUDA tensors elsewhere
    ...     assert block(torch.randn(2, 3, 32)).dtype == torch.float32
    """
    if bits not in (8, 4):
        raise ValueError(f"weight-only kernels take bits 8 or 4, got {bits}")
    if bits == 4:
        check_int4_groups(block, name)
    from tnas.kernels.int4_matmul import Int4Linear
    from tnas.kernels.int8_matmul import Int8Linear

    quantized = {}
    for linear_name, module in block.named_modules():
        if type(module) is not nn.Linear:
            continue
        if bits == 8:
            quantized[linear_name] = Int8Linear.from_linear(module, dtype)
        else:
            group_size = int4_group_size(module.in_features)
            quantized[linear_name] = Int4Linear.from_linear(module, group_size, dtype)
    cast = CastBlock(block, dtype)  # after quantizing, so the weights are quantized from fp32
    for linear_name, module in quantized.items():
        cast.block.set_submodule(linear_name, module)
    return cast


def check_supported(config: ArchConfig, device: str | torch.device) -> None:
    """Raise `UnsupportedQuantization` naming every layer whose bits have no kernel here.

    >>> from tnas.space import ArchConfig, LayerConfig
    >>> check_supported(ArchConfig(n_layers=2, layers=(LayerConfig(bits=8),
    ...                                                LayerConfig(bits=4))), "cpu")
    Traceback (most recent call last):
    ...
    tnas.nn.quant.UnsupportedQuantization: no real 4-bit kernel on cpu for layer1 ...
    """
    kind = torch.device(device).type
    supported = SUPPORTED_BITS.get(kind, (32,))
    problems = []
    for bits in sorted({layer.bits for layer in config.layers} - set(supported)):
        names = ", ".join(
            f"layer{i}" for i, layer in enumerate(config.layers) if layer.bits == bits
        )
        problems.append(f"no real {bits}-bit kernel on {kind} for {names}")
    if problems:
        allowed = ", ".join(str(bits) for bits in supported)
        raise UnsupportedQuantization(f"{'; '.join(problems)} (bits {allowed} run there)")


def quantize(model: TnasModel, config: ArchConfig, device: str | torch.device = "cpu") -> TnasModel:
    """A copy of `model` on `device`, in eval mode, with each block at its layer's `bits`.

    Embeddings, the final norm and the head stay float32. The input model is not changed.
    Raises `UnsupportedQuantization` before copying anything if a layer's bits have no real
    kernel on the device, or a 4-bit layer a linear with no int4 group size (see the module
    docstring).
    """
    if len(model.blocks) != len(config.layers):
        raise ValueError(
            f"the model has {len(model.blocks)} blocks but the config {len(config.layers)} layers"
        )
    check_supported(config, device)
    kind = torch.device(device).type
    for i, layer in enumerate(config.layers):
        if layer.bits == 4:
            check_int4_groups(model.blocks[i], f"layer{i}")
    model = copy.deepcopy(model).to(device).eval()
    for i, layer in enumerate(config.layers):
        if layer.bits == 16:
            model.blocks[i] = CastBlock(model.blocks[i], HALF_DTYPES[kind])
        elif layer.bits in (8, 4) and kind == "cuda":
            model.blocks[i] = weight_only_block(model.blocks[i], layer.bits, HALF_DTYPES[kind])
        elif layer.bits == 8:
            _dynamic_int8(model.blocks[i])
    return model


def _dynamic_linear_bytes(module: nn.Module) -> int:
    """Bytes of a dynamic int8 linear: 1 per weight, its scales and zero points, its bias.

    Counted from the unpacked weight, as `state_dict`/`torch.save` store it: per channel, a
    float64 scale and an int64 zero point per output row; per tensor, one of each.
    """
    weight, bias = module._packed_params._weight_bias()
    total = weight.numel() * weight.element_size()
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        for extra in (weight.q_per_channel_scales(), weight.q_per_channel_zero_points()):
            total += extra.numel() * extra.element_size()
    else:
        total += 8 + 8
    if bias is not None:
        total += bias.numel() * bias.element_size()
    return total


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as stored: parameters and buffers at their dtype's size
    (the Triton kernels' packed weights and scales are buffers), int8 dynamic linears unpacked;
    tied weights counted once.

    >>> from tnas.nn.model import build_model
    >>> from tnas.space import ArchConfig, count_params
    >>> cfg = ArchConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=16)
    >>> model_bytes(build_model(cfg)) == 4 * count_params(cfg)
    True
    """
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    for module in model.modules():
        if isinstance(module, DynamicQuantizedLinear):
            total += _dynamic_linear_bytes(module)
    return total


__all__ = [
    "CastBlock",
    "DynamicQuantizedLinear",
    "UnsupportedQuantization",
    "check_int4_groups",
    "check_supported",
    "int4_group_size",
    "model_bytes",
    "quantize",
    "quantized_engine",
    "weight_only_block",
]
