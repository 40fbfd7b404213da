from __future__ import annotations

import copy
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from tests.kernels.devices import relative_error
from tnas.kernels.common import INTERPRET
from tnas.nn.mixers import MIXER_CLASSES
from tnas.nn.model import build_model
from tnas.nn.quant import (
    CastBlock,
    DynamicQuantizedLinear,
    UnsupportedQuantization,
    check_supported,
    int4_group_size,
    model_bytes,
    quantize,
    weight_only_block,
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


def test_cuda_runs_8_and_4_bits_and_other_devices_only_32():
    config = tiny_config(bits=(32, 16, 8, 4))
    check_supported(config, "cuda")
    with pytest.raises(
        UnsupportedQuantization,
        match=r"4-bit kernel on mps for layer3; .* layer1 \(bits 32 run there\)$",
    ):
        check_supported(config, "mps")


def test_4bit_on_cuda_raises_naming_the_linear_before_touching_the_device():
    config = tiny_config("ssm", bits=(8, 4))  # dt_proj's 4 inputs: ceil(64 / 16)
    with pytest.raises(
        UnsupportedQuantization, match="4 input features of mixer.dt_proj in layer1"
    ):
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


# the weight-only Triton blocks (bits 8 and 4 on CUDA): on CPU under the interpreter
KERNELS = pytest.mark.skipif(
    not (INTERPRET or torch.cuda.is_available()), reason="needs CUDA or TRITON_INTERPRET=1"
)
KERNEL_DEVICE = "cpu" if INTERPRET else "cuda"
# relative error of a block's update against fp32: int4 rounds each weight by up to 1/14 of
# its group's range, int8 by 1/254 of its row's
WEIGHT_ONLY_TOLERANCE = {8: 0.03, 4: 0.3}
# torch's CPU float16 depthwise conv takes seconds a call: their blocks run in float32 there
CONV_MIXERS = {"mdha", "ssm"}


def weight_only_dtype(mixer: str) -> torch.dtype:
    if KERNEL_DEVICE == "cpu" and mixer in CONV_MIXERS:
        return torch.float32
    return torch.float16


def kernel_block_and_input(mixer: str, bits: int, d_model: int = 256):
    torch.manual_seed(0)
    config = tiny_config(mixer, activation="swiglu", d_model=d_model)
    block = build_model(config).blocks[0].to(KERNEL_DEVICE).eval()
    quantized = weight_only_block(copy.deepcopy(block), bits, weight_only_dtype(mixer), "layer0")
    return block, quantized, torch.randn(2, 8, d_model, device=KERNEL_DEVICE)


@KERNELS
@pytest.mark.parametrize(
    "mixer, bits",
    [pytest.param(m, b, id=f"{m}-{b}bit") for m in MIXER_CLASSES for b in (8, 4)],
)
def test_weight_only_block_runs_every_mixer_close_to_fp32(mixer, bits):
    # d_model 256: the SSM's dt_proj then has 16 inputs, an int4 group
    block, quantized, x = kernel_block_and_input(mixer, bits)
    expected_type = "Int8Linear" if bits == 8 else "Int4Linear"
    linears = [name for name, m in block.named_modules() if type(m) is nn.Linear]
    assert linears and all(
        type(quantized.block.get_submodule(name)).__name__ == expected_type for name in linears
    )
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    with torch.inference_mode():
        expected = block(x) - x
        actual = quantized(x) - x
    assert actual.dtype == torch.float32
    assert relative_error(actual, expected) < WEIGHT_ONLY_TOLERANCE[bits]


@KERNELS
@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_block_serves_sliced_weights(bits):
    # MatFormer's sub-widths read `.weight` slices instead of calling the linear
    block, quantized, x = kernel_block_and_input("attention", bits, d_model=64)
    for name, module in block.named_modules():
        if type(module) is nn.Linear:
            weight = quantized.block.get_submodule(name).weight
            assert weight.dtype == torch.float16 and weight.shape == module.weight.shape
    with torch.inference_mode():
        expected = block(x, True, 64) - x
        actual = quantized(x, True, 64) - x
    assert relative_error(actual, expected) < WEIGHT_ONLY_TOLERANCE[bits]


def test_weight_only_block_bytes_by_hand():
    D, F = 64, 128
    layer = LayerConfig(mixer="attention", n_heads=2, ffn_dim=F)
    config = ArchConfig(d_model=D, n_layers=1, vocab_size=10, max_seq_len=4, layers=(layer,))
    block = build_model(config).blocks[0]
    norms = 2 * 2 * D  # weights and biases of two LayerNorms, float16 in the block
    linears = {"qkv": (D, 3 * D), "out": (D, D), "up": (D, F), "down": (F, D)}  # (in, out)
    weights = sum(i * o for i, o in linears.values())
    assert model_bytes(block) == 4 * (norms + weights)

    # int8: a byte per weight, a float32 scale per output row
    rows = sum(o for _, o in linears.values())
    int8 = weight_only_block(copy.deepcopy(block), 8)
    assert model_bytes(int8) == 2 * norms + weights + 4 * rows
    # int4: half a byte per weight, a float32 scale per output row and group of inputs
    assert [int4_group_size(i) for i, _ in linears.values()] == [64, 64, 64, 128]
    groups = sum(o * i // int4_group_size(i) for i, o in linears.values())
    int4 = weight_only_block(copy.deepcopy(block), 4)
    assert model_bytes(int4) == 2 * norms + weights // 2 + 4 * groups
    assert model_bytes(int4) < model_bytes(int8) < model_bytes(block) / 3

    state = int4.state_dict()
    assert state["block.ffn.up.qweight"].dtype == torch.uint8
    assert state["block.ffn.up.scales"].shape == (F, 1)


def test_weight_only_block_rejects_other_bits_and_ungroupable_linears():
    with pytest.raises(ValueError, match="bits 8 or 4, got 16"):
        weight_only_block(build_model(tiny_config()).blocks[0], 16)
    block = build_model(tiny_config("ssm")).blocks[0]
    before = copy.deepcopy(block.state_dict())
    with pytest.raises(UnsupportedQuantization, match="mixer.dt_proj in layer3"):
        weight_only_block(block, 4, name="layer3")
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_quantize_on_cuda_runs_every_precision():
    torch.manual_seed(0)
    config = tiny_config("gla", bits=(32, 16, 8, 4), activation="swiglu")
    model = build_model(config).eval()
    qmodel = quantize(model, config, "cuda")
    assert [type(b).__name__ for b in qmodel.blocks] == [
        "Block",
        "CastBlock",
        "CastBlock",
        "CastBlock",
    ]
    assert type(qmodel.blocks[2].block.ffn.up).__name__ == "Int8Linear"
    assert type(qmodel.blocks[3].block.ffn.up).__name__ == "Int4Linear"
    tokens = torch.randint(0, 64, (2, 32))
    with torch.inference_mode():
        expected = model(tokens)
        logits = qmodel(tokens.cuda())
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert relative_error(logits.cpu(), expected) < 0.3
    assert model_bytes(qmodel) < model_bytes(model)
