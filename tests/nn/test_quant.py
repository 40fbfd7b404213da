from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from tnas.nn.mixers import MIXER_CLASSES
from tnas.nn.model import build_model
from tnas.nn.quant import (
    CastBlock,
    DynamicQuantizedLinear,
    UnsupportedQuantization,
    model_bytes,
    quantize,
)
from tnas.space import ArchConfig, LayerConfig, count_params

# relative error of a block's update (block(x) - x) against fp32, on random weights and inputs;
# int8 is dominated by the per-tensor dynamic quantization of the activations
TOLERANCE = {8: 0.1, 16: 0.05}


def tiny_config(mixer: str = "attention", bits=(32,), activation: str = "gelu", **kw) -> ArchConfig:
    layers = tuple(
        LayerConfig(mixer=mixer, n_heads=4, ffn_dim=128, activation=activation, bits=b)
        for b in bits
    )
    options = dict(d_model=64, vocab_size=64, max_seq_len=32) | kw
    return ArchConfig(n_layers=len(layers), layers=layers, **options)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected).norm() / expected.norm()).item()


CASES = [
    pytest.param(mixer, bits, id=f"{mixer}-{bits}bit")
    for mixer in MIXER_CLASSES
    for bits in (8, 16)
]


@pytest.mark.parametrize("mixer, bits", CASES)
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_every_mixer_runs_quantized_close_to_fp32(mixer, bits, activation):
    torch.manual_seed(0)
    config = tiny_config(mixer, bits=(bits, bits), activation=activation)
    model = build_model(config).eval()
    qmodel = quantize(model, config, "cpu")
    x = torch.randn(2, 32, 64)
    tokens = torch.randint(0, 64, (2, 32))
    with torch.inference_mode():
        expected = model.blocks[0](x) - x
        actual = qmodel.blocks[0](x) - x
        logits = qmodel(tokens)
    assert actual.dtype == torch.float32
    assert relative_error(actual, expected) < TOLERANCE[bits]
    assert logits.shape == (2, 32, 64) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_bidirectional_classifier_runs_quantized():
    config = tiny_config("gla", bits=(8, 16), head="classifier", n_classes=3)
    qmodel = quantize(build_model(config), config, "cpu")
    with torch.inference_mode():
        assert qmodel(torch.randint(0, 64, (2, 10))).shape == (2, 3)


def test_policy_touches_only_the_layers_it_names():
    config = tiny_config("ssm", bits=(32, 8, 16, 32))
    model = build_model(config)
    qmodel = quantize(model, config, "cpu")

    int8_block = qmodel.blocks[1]
    int8_linears = [m for m in int8_block.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert len(int8_linears) == len([m for m in model.blocks[1].modules() if type(m) is nn.Linear])
    assert not any(type(m) is nn.Linear for m in int8_block.modules())
    assert all(p.dtype == torch.float32 for p in int8_block.parameters())  # norms, conv, A_log

    assert isinstance(qmodel.blocks[2], CastBlock)
    assert all(p.dtype == torch.bfloat16 for p in qmodel.blocks[2].parameters())

    for i in (0, 3):
        assert type(qmodel.blocks[i]) is type(model.blocks[i])
        for (name, p), q in zip(
            model.blocks[i].named_parameters(), qmodel.blocks[i].parameters(), strict=True
        ):
            assert q.dtype == torch.float32 and torch.equal(p, q), name
    assert qmodel.tok_emb.weight.dtype == torch.float32
    assert qmodel.lm_head.weight is qmodel.tok_emb.weight
    assert not qmodel.training

    # the input model is left as it was
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(isinstance(m, (DynamicQuantizedLinear, CastBlock)) for m in model.modules())


def test_quantize_keeps_warnings_filters_and_engine():
    config = tiny_config(bits=(8,))
    filters = list(warnings.filters)
    engine = torch.backends.quantized.engine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize(build_model(config), config, "cpu")
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert warnings.filters == filters
    assert torch.backends.quantized.engine == engine


def test_4bit_on_cpu_raises_naming_the_layers():
    config = tiny_config(bits=(32, 4, 8, 4))
    with pytest.raises(UnsupportedQuantization, match=r"4-bit .*cpu.*layer1, layer3") as err:
        quantize(build_model(config), config, "cpu")
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_int8_on_cuda_raises_before_touching_the_device():
    config = tiny_config(bits=(16, 8))
    with pytest.raises(UnsupportedQuantization, match=r"8-bit .*cuda.*layer1"):
        quantize(build_model(config), config, "cuda")


def test_config_and_model_must_match():
    with pytest.raises(ValueError, match="blocks"):
        quantize(build_model(tiny_config(bits=(32,))), tiny_config(bits=(32, 32)), "cpu")


def test_model_bytes_by_hand():
    D, F, V, T = 8, 16, 10, 4
    layer = LayerConfig(mixer="attention", n_heads=2, ffn_dim=F, bits=32)
    config = ArchConfig(d_model=D, n_layers=1, vocab_size=V, max_seq_len=T, layers=(layer,))
    outside = V * D + T * D + 2 * D  # embeddings (head tied) and final norm, always fp32
    block_norms = 2 * 2 * D
    linear_rows = 3 * D + D + F + D  # qkv, out, up, down: output rows
    linear_weights = 3 * D * D + D * D + F * D + D * F

    model = build_model(config)
    assert model_bytes(model) == 4 * count_params(config)
    assert model_bytes(model) == 4 * (outside + block_norms + linear_weights)

    int8 = config.replace(layers=(replace(layer, bits=8),))
    # 1 byte per weight, a float64 scale and an int64 zero point per output row
    expected = 4 * (outside + block_norms) + linear_weights + 16 * linear_rows
    assert model_bytes(quantize(model, int8, "cpu")) == expected

    bf16 = config.replace(layers=(replace(layer, bits=16),))
    expected = 4 * outside + 2 * (block_norms + linear_weights)
    assert model_bytes(quantize(model, bf16, "cpu")) == expected


def test_model_bytes_int8_below_bf16_below_fp32():
    def size(bits: int) -> int:
        config = tiny_config("gla", bits=(bits,) * 3, activation="swiglu")
        return model_bytes(quantize(build_model(config), config, "cpu"))

    assert size(8) < size(16) < size(32)
