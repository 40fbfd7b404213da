"""Per-layer weight precision, applied for real with the kernels torch ships: `quantize`.

Each layer's `bits` decides what its block becomes, for inference:

| bits | CPU                                                    | CUDA                     |
|------|--------------------------------------------------------|--------------------------|
| 32   | unchanged                                              | unchanged                |
| 16   | `CastBlock` in bfloat16                                | `CastBlock` in float16   |
| 8    | dynamic int8 linears (`quantize_dynamic`, per channel) | `UnsupportedQuantization` |
| 4    | `UnsupportedQuantization`                              | `UnsupportedQuantization` |

A precision without a real kernel on the device raises rather than pretending: a latency
measured on fp32 kernels and reported as 4-bit would be made up. Int8 and int4 on CUDA come
with the Triton kernels (issue 7).

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
SUPPORTED_BITS = {"cpu": (32, 16, 8), "cuda": (32, 16)}
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
    kernel on the device (see the module docstring).
    """
    if len(model.blocks) != len(config.layers):
        raise ValueError(
            f"the model has {len(model.blocks)} blocks but the config {len(config.layers)} layers"
        )
    check_supported(config, device)
    kind = torch.device(device).type
    model = copy.deepcopy(model).to(device).eval()
    for i, layer in enumerate(config.layers):
        if layer.bits == 16:
            model.blocks[i] = CastBlock(model.blocks[i], HALF_DTYPES[kind])
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
    """Bytes of the model's weights as stored: parameters and buffers at their dtype's size,
    int8 dynamic linears unpacked; tied weights counted once.

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
    "check_supported",
    "model_bytes",
    "quantize",
    "quantized_engine",
]
