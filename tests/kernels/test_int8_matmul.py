from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.kernels.devices import DEVICES, relative_error
from tnas.kernels.common import INTERPRET
from tnas.kernels.int8_matmul import (
    DECODE_CONFIGS,
    PREFILL_CONFIGS,
    Int8Linear,
    _int8_matmul_decode,
    _int8_matmul_prefill,
    dequantize_int8,
    drop_idle_splits,
    int8_matmul,
    int8_matmul_reference,
    quantize_int8,
)

# bfloat16 only on CUDA: the interpreter's bfloat16 dot is wrong (the wrapper refuses it there)
DTYPES = {
    "cpu": (torch.float32, torch.float16),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
}
# relative error against the fp32 reference: output rounding, and tf32 dots for fp32 on CUDA
TOLERANCE = {torch.float32: 2e-3, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# (M, N, K): decode-sized M, odd M and N off the block sizes (masking), K over two K-tiles
SHAPES = [(1, 64, 128), (5, 100, 96), (16, 130, 200), (17, 48, 64)]


def cases():
    for device in DEVICES:
        for dtype in DTYPES[device.values[0]]:
            name = str(dtype).removeprefix("torch.")
            yield pytest.param(
                device.values[0], dtype, marks=device.marks, id=f"{device.values[0]}-{name}"
            )


@pytest.mark.parametrize("device, dtype", list(cases()))
@pytest.mark.parametrize("M, N, K", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_kernel_matches_reference(device, dtype, M, N, K, bias):
    torch.manual_seed(0)
    w_int8, scales = quantize_int8(torch.randn(N, K, device=device))
    b = torch.randn(N, device=device) if bias else None
    x = torch.randn(M, K, device=device).to(dtype)
    y = int8_matmul(x, w_int8, scales, b)
    assert y.shape == (M, N) and y.dtype == dtype
    assert relative_error(y, int8_matmul_reference(x, w_int8, scales, b)) < TOLERANCE[dtype]


@pytest.mark.parametrize("device, dtype", list(cases()))
def test_leading_dims_and_strided_input(device, dtype):
    torch.manual_seed(0)
    w_int8, scales = quantize_int8(torch.randn(40, 64, device=device))
    x = torch.randn(2, 3, 64, device=device).to(dtype)
    y = int8_matmul(x, w_int8, scales)
    assert y.shape == (2, 3, 40)
    assert relative_error(y, int8_matmul_reference(x, w_int8, scales)) < TOLERANCE[dtype]

    strided = torch.randn(64, 6, device=device).to(dtype).T  # (6, 64), not contiguous
    expected = int8_matmul_reference(strided, w_int8, scales)
    assert relative_error(int8_matmul(strided, w_int8, scales), expected) < TOLERANCE[dtype]
    assert int8_matmul(x[:, :0], w_int8, scales).shape == (2, 0, 40)


def config_id(config) -> str:
    return "{BLOCK_M}x{BLOCK_N}x{BLOCK_K}-split{SPLIT_K}".format(**config.kwargs)


# (autotuner, M, config): decode configs at a decode M, prefill configs past DECODE_MAX_M
TUNED = [
    *(pytest.param(_int8_matmul_decode, 5, c, id=f"decode-{config_id(c)}") for c in DECODE_CONFIGS),
    *(
        pytest.param(_int8_matmul_prefill, 20, c, id=f"prefill-{config_id(c)}")
        for c in PREFILL_CONFIGS
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel, M, config", TUNED)
def test_every_tuning_config_matches_reference(device, kernel, M, config, monkeypatch):
    # the interpreter would run the first config only, and on CUDA tuning may pick any;
    # K = 300 is 3, 2 or 1 K-tiles: splits with a partial tile, and splits with none
    monkeypatch.setattr(kernel, "configs", [config])
    torch.manual_seed(0)
    w_int8, scales = quantize_int8(torch.randn(130, 300, device=device))
    bias = torch.randn(130, device=device)
    x = torch.randn(M, 300, device=device).half()
    expected = int8_matmul_reference(x, w_int8, scales, bias)
    actual = int8_matmul(x, w_int8, scales, bias)
    assert actual.dtype == torch.float16
    assert relative_error(actual, expected) < TOLERANCE[torch.float16]


@pytest.mark.parametrize("device, dtype", list(cases()))
@pytest.mark.parametrize("split_k", [2, 16])
def test_split_k_adds_bias_once_in_every_dtype(device, dtype, split_k, monkeypatch):
    config = next(c for c in DECODE_CONFIGS if c.kwargs["SPLIT_K"] == split_k)
    monkeypatch.setattr(_int8_matmul_decode, "configs", [config])
    torch.manual_seed(0)
    w_int8, scales = quantize_int8(torch.randn(72, 1000, device=device))
    bias = torch.randn(72, device=device) * 10
    x = torch.randn(2, 8, 1000, device=device).to(dtype)  # M = 16
    actual = int8_matmul(x, w_int8, scales, bias)
    assert actual.shape == (2, 8, 72) and actual.dtype == dtype
    expected = int8_matmul_reference(x, w_int8, scales, bias)
    assert relative_error(actual, expected) < TOLERANCE[dtype]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_tuning_call_leaves_the_split_k_buffer_zeroed():
    # the first call of a shape runs every config into the buffer before its own launch
    torch.manual_seed(0)
    w_int8, scales = quantize_int8(torch.randn(384, 2048, device="cuda"))
    x = torch.randn(3, 2048, device="cuda").half()
    expected = int8_matmul_reference(x, w_int8, scales)
    for _ in range(2):
        assert relative_error(int8_matmul(x, w_int8, scales), expected) < TOLERANCE[torch.float16]


def test_drop_idle_splits_keeps_a_k_tile_per_split():
    kept = drop_idle_splits(DECODE_CONFIGS, {"K": 300})
    assert all(c.kwargs["SPLIT_K"] <= -(-300 // c.kwargs["BLOCK_K"]) for c in kept)
    assert {config_id(c) for c in DECODE_CONFIGS if c.kwargs["SPLIT_K"] == 1} <= {
        config_id(c) for c in kept
    }
    assert len(drop_idle_splits(DECODE_CONFIGS, {"K": 8192})) == len(DECODE_CONFIGS)


def test_quantize_round_trip_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(33, 70) * torch.logspace(-3, 1, 33)[:, None]
    weight[5] = 0.0
    w_int8, scales = quantize_int8(weight)
    assert w_int8.dtype == torch.int8 and w_int8.shape == (33, 70)
    assert scales.dtype == torch.float32 and scales.shape == (33,)
    error = (dequantize_int8(w_int8, scales) - weight).abs()
    assert (error <= scales[:, None] / 2 * (1 + 1e-5)).all()
    assert w_int8.abs().amax(dim=1)[torch.arange(33) != 5].eq(127).all()  # full range used
    assert scales[5] == 0 and (w_int8[5] == 0).all()


def test_reference_is_the_dequantized_linear():
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    w_int8, scales = quantize_int8(linear.weight)
    x = torch.randn(4, 32)
    expected = nn.functional.linear(x, dequantize_int8(w_int8, scales), linear.bias)
    torch.testing.assert_close(int8_matmul_reference(x, w_int8, scales, linear.bias), expected)


@pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1")
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a | {"x": a["x"][:, :31]}, "x has 31 features"),
        (lambda a: a | {"w_int8": a["w_int8"].float()}, "must be int8"),
        (lambda a: a | {"w_int8": a["w_int8"][0]}, "2-D"),
        (lambda a: a | {"scales": a["scales"][:7]}, r"scales must be \(8,\)"),
        (lambda a: a | {"scales": a["scales"].to(torch.int32)}, "floating point"),
        (lambda a: a | {"bias": torch.zeros(9)}, r"bias must be \(8,\)"),
        (lambda a: a | {"x": a["x"].to(torch.int32)}, "float16/bfloat16/float32"),
        (lambda a: a | {"x": a["x"].bfloat16()}, "bfloat16 x needs CUDA"),
        (lambda a: a | {"x": a["x"].to("meta")}, "must be on CUDA"),
        (lambda a: a | {"scales": a["scales"].to("meta")}, "scales on meta"),
    ],
    ids=[
        "features",
        "weight_dtype",
        "weight_rank",
        "scales_shape",
        "scales_dtype",
        "bias_shape",
        "x_dtype",
        "bf16_interpreted",
        "x_device",
        "scales_device",
    ],
)
def test_wrong_inputs_raise_one_line_value_errors(change, message):
    w_int8, scales = quantize_int8(torch.randn(8, 32))
    args = change({"x": torch.randn(2, 32), "w_int8": w_int8, "scales": scales, "bias": None})
    with pytest.raises(ValueError, match=message) as err:
        int8_matmul(**args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("device", DEVICES)
def test_int8_linear_from_linear(device):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48).to(device)
    layer = Int8Linear.from_linear(linear)
    assert {name: t.dtype for name, t in layer.state_dict().items()} == {
        "qweight": torch.int8,
        "scales": torch.float32,
        "bias": torch.float32,
    }
    assert layer.weight.dtype == torch.float16 and layer.weight.shape == (48, 64)
    torch.testing.assert_close(layer.weight.float(), linear.weight, atol=2e-3, rtol=0)

    x = torch.randn(2, 5, 64, device=device).half()
    with torch.no_grad():
        expected = linear(x.float())
    assert relative_error(layer(x), expected) < 0.01

    copy = Int8Linear(64, 48, device=device)
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy(x), layer(x))
    assert Int8Linear.from_linear(nn.Linear(64, 8, bias=False).to(device)).bias is None
