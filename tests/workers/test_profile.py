from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from tnas.nn.model import build_model
from tnas.nn.quant import DynamicQuantizedLinear, UnsupportedQuantization
from tnas.nn.summary import summary
from tnas.space import ArchConfig, LayerConfig, count_params
from tnas.workers.profile import device_fingerprint, profile

FAST = dict(repeats=3, warmup=1)


def tiny_config(*bits: int, mixer: str = "attention") -> ArchConfig:
    layers = tuple(LayerConfig(mixer=mixer, n_heads=4, ffn_dim=128, bits=b) for b in bits)
    return ArchConfig(
        d_model=64, n_layers=len(layers), vocab_size=64, max_seq_len=32, layers=layers
    )


def test_profile_reports_sane_values():
    config = tiny_config(32, 8, 16)
    result = profile(config, batch=2, seq_len=16, threads=1, **FAST)
    assert json.loads(json.dumps(result)) == result  # a plain dict
    assert result["latency_ms"] > 0 and math.isfinite(result["latency_ms"])
    assert result["latency_iqr_ms"] >= 0 and math.isfinite(result["latency_iqr_ms"])
    assert result["latency_cv"] >= 0 and math.isfinite(result["latency_cv"])
    assert result["forwards_per_repeat"] >= 1 and result["repeats"] == 3
    assert result["params"] == count_params(config)
    assert result["flops"] == summary(config, batch=2, seq_len=16).flops > 0
    assert result["model_bytes"] < 4 * count_params(config)
    assert result["peak_mem_mb"] * 2**20 > result["model_bytes"]
    assert result["bits"] == [32, 8, 16]
    assert (result["device"], result["batch"], result["seq_len"]) == ("cpu", 2, 16)
    assert result["threads"] == 1
    assert result["fingerprint"] == device_fingerprint("cpu")


def test_int8_is_smaller_than_fp32():
    fp32 = profile(tiny_config(32, 32), seq_len=8, **FAST)
    int8 = profile(tiny_config(8, 8), seq_len=8, **FAST)
    assert int8["model_bytes"] < fp32["model_bytes"]
    assert int8["params"] == fp32["params"]


def test_threads_are_set_for_the_call_and_restored():
    before = torch.get_num_threads()
    result = profile(tiny_config(32), seq_len=8, threads=1, **FAST)
    assert result["threads"] == 1
    assert torch.get_num_threads() == before
    assert profile(tiny_config(32), seq_len=8, **FAST)["threads"] == before


def test_4bit_on_cpu_raises():
    with pytest.raises(UnsupportedQuantization, match="layer1"):
        profile(tiny_config(8, 4), seq_len=8, **FAST)


def test_seq_len_beyond_max_seq_len_is_a_clear_error():
    with pytest.raises(ValueError, match="seq_len 64 .*max_seq_len 32"):
        profile(tiny_config(32), seq_len=64, **FAST)


def test_default_seq_len_is_capped_by_max_seq_len():
    assert profile(tiny_config(32), **FAST)["seq_len"] == 32


def test_a_given_model_is_profiled_and_left_unchanged():
    config = tiny_config(8, mixer="gla")
    model = build_model(config).train()
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = profile(config, seq_len=8, model=model, **FAST)
    assert result["params"] == count_params(config)
    assert model.training
    assert not any(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
    assert sum(type(m) is nn.Linear for m in model.blocks[0].modules()) == 5  # 3 mixer, 2 FFN
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name]), name
    with pytest.raises(ValueError, match="another config"):
        profile(tiny_config(32), seq_len=8, model=model, **FAST)


def test_fingerprint_fields_and_stable_id():
    fingerprint = device_fingerprint("cpu")
    for field in ("cpu", "logical_cores", "torch", "triton", "quantized_engine", "id"):
        assert field in fingerprint
    assert fingerprint["logical_cores"] >= 1
    assert fingerprint["torch"] == torch.__version__
    assert fingerprint["quantized_engine"] in torch.backends.quantized.supported_engines
    assert len(fingerprint["id"]) == 12
    code = (
        "import json; from tnas.workers.profile import device_fingerprint; "
        "print(json.dumps(device_fingerprint('cpu')))"
    )
    fresh = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert fresh == fingerprint
