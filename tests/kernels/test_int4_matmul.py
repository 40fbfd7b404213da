from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.kernels.devices import DEVICES, relative_error
from tnas.kernels.common import INTERPRET
from tnas.kernels.int4_matmul import (
    DECODE_CONFIGS,
    PREFILL_CONFIGS,
    Int4Linear,
    _int4_matmul_decode,
    _int4_matmul_prefill,
    dequantize_int4,
    int4_matmul,
    int4_matmul_reference,
    pack_int4,
    quantize_int4,
    unpack_int4,
)

# bfloat16 only on CUDA: the interpreter's bfloat16 dot is wrong (the wrapper refuses it there)
DTYPES = {
    "cpu": (torch.float32, torch.float16),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
}
# relative error against the fp32 reference: the weight tile rounded to x's dtype, output
# rounding, and tf32 dots for fp32 on CUDA
TOLERANCE = {torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2}
# (M, N, K, group_size): odd M and N off the block sizes (masking), K over several K-tiles,
# groups smaller than, equal to and spanning K-tiles
SHAPES = [(1, 64, 128, 128), (5, 100, 96, 32), (16, 130, 384, 128), (17, 48, 64, 16)]


def cases():
    for device in DEVICES:
        name = device.values[0]
        for dtype in DTYPES[name]:
            dtype_name = str(dtype).removeprefix("torch.")
            yield pytest.param(name, dtype, marks=device.marks, id=f"{name}-{dtype_name}")


@pytest.mark.parametrize("device, dtype", list(cases()))
@pytest.mark.parametrize("M, N, K, group_size", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_kernel_matches_reference(device, dtype, M, N, K, group_size, bias):
    torch.manual_seed(0)
    packed, scales = quantize_int4(torch.randn(N, K, device=device), group_size)
    b = torch.randn(N, device=device) if bias else None
    x = torch.randn(M, K, device=device).to(dtype)
    y = int4_matmul(x, packed, scales, group_size, b)
    assert y.shape == (M, N) and y.dtype == dtype
    expected = int4_matmul_reference(x, packed, scales, group_size, b)
    assert relative_error(y, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("device, dtype", list(cases()))
def test_leading_dims_and_strided_input(device, dtype):
    torch.manual_seed(0)
    packed, scales = quantize_int4(torch.randn(40, 64, device=device), 32)
    x = torch.randn(2, 3, 64, device=device).to(dtype)
    y = int4_matmul(x, packed, scales, 32)
    assert y.shape == (2, 3, 40)
    assert relative_error(y, int4_matmul_reference(x, packed, scales, 32)) < TOLERANCE[dtype]

    strided = torch.randn(64, 6, device=device).to(dtype).T  # (6, 64), not contiguous
    expected = int4_matmul_reference(strided, packed, scales, 32)
    assert relative_error(int4_matmul(strided, packed, scales, 32), expected) < TOLERANCE[dtype]
    assert int4_matmul(x[:, :0], packed, scales, 32).shape == (2, 0, 40)


def config_id(config) -> str:
    return "{BLOCK_M}x{BLOCK_N}x{BLOCK_K}-split{SPLIT_K}".format(**config.kwargs)


# (autotuner, M, config): decode configs at a decode M, prefill configs past DECODE_MAX_M
TUNED = [
    *(pytest.param(_int4_matmul_decode, 5, c, id=f"decode-{config_id(c)}") for c in DECODE_CONFIGS),
    *(
        pytest.param(_int4_matmul_prefill, 20, c, id=f"prefill-{config_id(c)}")
        for c in PREFILL_CONFIGS
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel, M, config", TUNED)
@pytest.mark.parametrize("group_size", [16, 128, 256])
def test_every_tuning_config_matches_reference(device, kernel, M, config, group_size, monkeypatch):
    # the interpreter would run the first config only, and on CUDA tuning may pick any;
    # K = 768 is 3 to 48 groups, and 12, 6, 3 or 1.5 K-tiles: groups inside, equal to and
    # spanning K-tiles, splits with a partial tile and splits with none
    monkeypatch.setattr(kernel, "configs", [config])
    torch.manual_seed(0)
    packed, scales = quantize_int4(torch.randn(72, 768, device=device), group_size)
    bias = torch.randn(72, device=device)
    x = torch.randn(M, 768, device=device).half()
    expected = int4_matmul_reference(x, packed, scales, group_size, bias)
    actual = int4_matmul(x, packed, scales, group_size, bias)
    assert actual.dtype == torch.float16
    assert relative_error(actual, expected) < TOLERANCE[torch.float16]


@pytest.mark.parametrize("device, dtype", list(cases()))
@pytest.mark.parametrize("split_k", [2, 16])
@pytest.mark.parametrize("group_size", [32, 128])
def test_split_k_adds_bias_once_in_every_dtype(device, dtype, split_k, group_size, monkeypatch):
    config = next(c for c in DECODE_CONFIGS if c.kwargs["SPLIT_K"] == split_k)
    monkeypatch.setattr(_int4_matmul_decode, "configs", [config])
    torch.manual_seed(0)
    packed, scales = quantize_int4(torch.randn(72, 896, device=device), group_size)
    bias = torch.randn(72, device=device) * 10
    x = torch.randn(2, 8, 896, device=device).to(dtype)  # M = 16
    actual = int4_matmul(x, packed, scales, group_size, bias)
    assert actual.shape == (2, 8, 72) and actual.dtype == dtype
    expected = int4_matmul_reference(x, packed, scales, group_size, bias)
    assert relative_error(actual, expected) < TOLERANCE[dtype]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_tuning_call_leaves_the_split_k_buffer_zeroed():
    # the first call of a shape runs every config into the buffer before its own launch
    torch.manual_seed(0)
    packed, scales = quantize_int4(torch.randn(384, 2048, device="cuda"), 128)
    x = torch.randn(3, 2048, device="cuda").half()
    expected = int4_matmul_reference(x, packed, scales, 128)
    for _ in range(2):
        actual = int4_matmul(x, packed, scales, 128)
        assert relative_error(actual, expected) < TOLERANCE[torch.float16]


def test_pack_unpack_is_exact_for_every_nibble_pair():
    low, high = torch.meshgrid(torch.arange(-8, 8), torch.arange(-8, 8), indexing="ij")
    values = torch.stack([low.flatten(), high.flatten()], dim=1).to(torch.int8)  # (256, 2)
    values = values.reshape(4, 128)
    packed = pack_int4(values)
    assert packed.dtype == torch.uint8 and packed.shape == (4, 64)
    assert torch.equal(unpack_int4(packed), values)
    assert packed.unique().numel() == 256  # every byte value, each nibble pair once
    assert pack_int4(torch.tensor([[3, -2]], dtype=torch.int8)).item() == (3 + 8) | (-2 + 8) << 4


@pytest.mark.parametrize("group_size", [16, 32, 128])
def test_quantize_round_trip_error_is_at_most_half_a_step(group_size):
    torch.manual_seed(0)
    weight = torch.randn(9, 256) * torch.logspace(-3, 1, 256)  # groups of different ranges
    weight[2, :group_size] = 0.0
    packed, scales = quantize_int4(weight, group_size)
    assert packed.shape == (9, 128) and scales.shape == (9, 256 // group_size)
    assert scales.dtype == torch.float32
    values = unpack_int4(packed)
    assert values.min() >= -8 and values.max() <= 7
    per_weight_scale = scales.repeat_interleave(group_size, dim=1)
    error = (dequantize_int4(packed, scales, group_size) - weight).abs()
    assert (error <= per_weight_scale / 2 * (1 + 1e-5)).all()
    assert scales[2, 0] == 0 and (values[2, :group_size] == 0).all()
    assert values.abs().reshape(9, -1, group_size).amax(dim=2)[scales > 0].eq(7).all()


def test_reference_is_the_dequantized_linear():
    torch.manual_seed(0)
    linear = nn.Linear(64, 16)
    packed, scales = quantize_int4(linear.weight, 32)
    x = torch.randn(4, 64)
    expected = nn.functional.linear(x, dequantize_int4(packed, scales, 32), linear.bias)
    actual = int4_matmul_reference(x, packed, scales, 32, linear.bias)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("group_size", [0, 1, 6, 48, 256])
def test_quantize_rejects_a_group_size_that_does_not_divide_k(group_size):
    with pytest.raises(ValueError, match="group_size must be a power of two >= 2 dividing K=128"):
        quantize_int4(torch.randn(4, 128), group_size)


@pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1")
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a | {"x": a["x"][:, :63]}, "x has 63 features"),
        (lambda a: a | {"packed": a["packed"].to(torch.int8)}, "must be uint8"),
        (lambda a: a | {"group_size": 48}, "group_size must be a power of two >= 2 dividing K=64"),
        (lambda a: a | {"group_size": 16}, r"scales must be \(8, 4\)"),
        (lambda a: a | {"scales": a["scales"][:, :1]}, r"scales must be \(8, 2\)"),
        (lambda a: a | {"bias": torch.zeros(4)}, r"bias must be \(8,\)"),
        (lambda a: a | {"x": a["x"].to(torch.int64)}, "float16/bfloat16/float32"),
        (lambda a: a | {"x": a["x"].bfloat16()}, "bfloat16 x needs CUDA"),
        (lambda a: a | {"x": a["x"].to("meta")}, "must be on CUDA"),
        (lambda a: a | {"packed": a["packed"].to("meta")}, "weight on meta"),
    ],
    ids=[
        "features",
        "packed_dtype",
        "group_size",
        "scales_for_another_group",
        "scales_shape",
        "bias_shape",
        "x_dtype",
        "bf16_interpreted",
        "x_device",
        "packed_device",
    ],
)
def test_wrong_inputs_raise_one_line_value_errors(change, message):
    packed, scales = quantize_int4(torch.randn(8, 64), 32)
    args = {"x": torch.randn(2, 64), "packed": packed, "scales": scales, "group_size": 32}
    with pytest.raises(ValueError, match=message) as err:
        int4_matmul(**change(args | {"bias": None}))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("device", DEVICES)
def test_int4_linear_from_linear(device):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48).to(device)
    layer = Int4Linear.from_linear(linear, group_size=32)
    state = layer.state_dict()
    assert {name: t.dtype for name, t in state.items()} == {
        "qweight": torch.uint8,
        "scales": torch.float32,
        "bias": torch.float32,
    }
    assert state["qweight"].shape == (48, 32) and state["scales"].shape == (48, 2)
    assert layer.weight.dtype == torch.float16 and layer.weight.shape == (48, 64)

    x = torch.randn(2, 5, 64, device=device).half()
    with torch.no_grad():
        expected = linear(x.float())
    assert relative_error(layer(x), expected) < 0.15  # int4 rounding: about 7% per weight

    copy = Int4Linear(64, 48, group_size=32, device=device)
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy(x), layer(x))
    with pytest.raises(ValueError, match="dividing K=64"):
        Int4Linear(64, 8, group_size=128)
