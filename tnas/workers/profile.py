"""Real-kernel inference latency of a config: `profile(config)`, and the machine it ran on.

The model runs with each layer at its `bits` through `tnas.nn.quant.quantize` (on CPU int8
dynamic linears and bf16 blocks; on CUDA fp16 blocks and tnas's Triton int8/int4 weight-only
matmuls, with the fused activation and dconv kernels), so a precision without a real kernel
raises `UnsupportedQuantization` instead of reporting a latency it did not measure.

>>> from tnas.space import ArchConfig, LayerConfig
>>> cfg = ArchConfig(d_model=32, n_layers=2, vocab_size=64, max_seq_len=16,
...                  layers=(LayerConfig(ffn_dim=64, bits=8), LayerConfig(ffn_dim=64)))
>>> result = profile(cfg, batch=1, seq_len=16, repeats=3, warmup=1)
>>> result["latency_ms"] > 0, result["bits"], result["seq_len"]
(True, [8, 32], 16)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity
from torch.utils.benchmark import Timer

from tnas.nn.model import build_model
from tnas.nn.quant import UnsupportedQuantization, model_bytes, quantize, quantized_engine
from tnas.nn.summary import count_flops
from tnas.space.config import ArchConfig

DEFAULT_SEQ_LEN = 128
MIN_REPEAT_S = 0.02  # a repeat runs enough forwards to last this long, so timer noise is small
DEVICES = ("cpu", "cuda")  # the device types tnas trains and profiles on
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd")


def profile(
    config: ArchConfig,
    device: str = "cpu",
    batch: int = 1,
    seq_len: int | None = None,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    model: nn.Module | None = None,
) -> dict:
    """Time inference of `config` (or of a trained `model` built from it) on `device`.

    The model is quantized per layer (`quantize`), put in eval mode and run under
    `torch.inference_mode()` on `batch` sequences of `seq_len` random tokens (default 128, or
    `max_seq_len` if smaller; a larger explicit `seq_len` is an error). After `warmup` forwards,
    each of `repeats` repeats times `forwards_per_repeat` back-to-back forwards, enough to last
    20 ms, with `torch.utils.benchmark.Timer` on CPU (which also runs two untimed forwards
    before each repeat) or CUDA events on GPU.

    Returns a plain dict:
    - `latency_ms`: median over repeats of the time per forward; `latency_iqr_ms` its
      interquartile range; `latency_cv` the std/mean over repeats.
    - `peak_mem_mb` (MiB): `model_bytes` plus the peak, during one forward, of the bytes held
      by torch's allocator above what it held before the forward: activations and workspace.
      On CPU that peak comes from `torch.profiler`'s memory events, so buffers a kernel
      library allocates outside torch (fbgemm's, oneDNN's) are not seen; on CUDA from
      `torch.cuda.max_memory_allocated`.
    - `params`, and `flops` of one float32 forward at this batch and seq_len
      (`torch.utils.flop_counter`; matmuls, convolutions and attention only).
    - `model_bytes` after quantization, `bits` per layer, `device`, `batch`, `seq_len`,
      `threads` (torch intra-op threads used), `repeats`, `warmup`, `forwards_per_repeat`
      and `fingerprint` (`device_fingerprint`).

    `threads` sets `torch.set_num_threads` for the call and restores it afterwards (None keeps
    the process's; a search and `tnas profile` use `ProfileSettings`' protocol, 1 thread).
    `device` is checked by `check_device` first.
    """
    torch_device = check_device(device)
    if seq_len is None:
        seq_len = min(DEFAULT_SEQ_LEN, config.max_seq_len)
    if not 1 <= seq_len <= config.max_seq_len:
        raise ValueError(
            f"seq_len {seq_len} is outside 1..max_seq_len {config.max_seq_len} "
            f"of config {config.short_hash}"
        )
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"need batch >= 1, repeats >= 1, warmup >= 0; got {batch}, {repeats}, {warmup}"
        )
    if model is None:
        model = build_model(config)
    elif getattr(model, "config", config) != config:
        raise ValueError(f"the model was built from another config than {config.short_hash}")

    with _num_threads(threads), torch.inference_mode():
        params = sum(p.numel() for p in model.parameters())
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator)
        flops, _ = count_flops(model, tokens.to(next(model.parameters()).device))
        qmodel = quantize(model, config, torch_device)  # an eval-mode copy
        tokens = tokens.to(torch_device)
        for _ in range(warmup):
            qmodel(tokens)
        if torch_device.type == "cuda":
            times, number = _time_cuda(qmodel, tokens, repeats)
            peak_bytes = model_bytes(qmodel) + _peak_cuda_allocated(qmodel, tokens)
        else:
            times, number = _time_cpu(qmodel, tokens, repeats)
            peak_bytes = model_bytes(qmodel) + _peak_cpu_allocated(qmodel, tokens)
        used_threads = torch.get_num_threads()

    times_ms = np.asarray(times) * 1e3
    q25, q75 = np.percentile(times_ms, [25, 75])
    mean = float(times_ms.mean())
    return {
        "latency_ms": float(np.median(times_ms)),
        "latency_iqr_ms": float(q75 - q25),
        "latency_cv": float(times_ms.std(ddof=1) / mean) if len(times) > 1 else 0.0,
        "peak_mem_mb": peak_bytes / 2**20,
        "params": params,
        "flops": flops,
        "model_bytes": model_bytes(qmodel),
        "bits": [layer.bits for layer in config.layers],
        "device": str(torch_device),
        "batch": batch,
        "seq_len": seq_len,
        "threads": used_threads,
        "repeats": repeats,
        "warmup": warmup,
        "forwards_per_repeat": number,
        "fingerprint": device_fingerprint(device),
    }


def check_device(name: str) -> torch.device:
    """The torch device `name` names, if tnas can run on it here: `cpu`, or `cuda` (`cuda:N`)
    with CUDA available. Otherwise a one-line `ValueError`, before any work is done.

    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: unknown device 'tpu'; valid: cpu, cuda
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but there are {torch.cuda.device_count()} CUDA devices"
            )
    return device


@contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _forwards_per_repeat(seconds_per_forward: float) -> int:
    return max(1, math.ceil(MIN_REPEAT_S / max(seconds_per_forward, 1e-9)))


def _time_cpu(model: nn.Module, tokens: torch.Tensor, repeats: int) -> tuple[list[float], int]:
    """Seconds per forward, one value per repeat, and the forwards timed in each repeat."""
    timer = Timer(
        "model(tokens)",
        globals={"model": model, "tokens": tokens},
        num_threads=torch.get_num_threads(),  # Timer's default is 1 thread
    )
    number = _forwards_per_repeat(timer.timeit(1).mean)
    return [timer.timeit(number).mean for _ in range(repeats)], number


def _time_cuda(model: nn.Module, tokens: torch.Tensor, repeats: int) -> tuple[list[float], int]:
    def run(number: int) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(tokens.device)
        start.record()
        for _ in range(number):
            model(tokens)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / number

    number = _forwards_per_repeat(run(1))
    return [run(number) for _ in range(repeats)], number


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Drop what C++ code writes to fd 2 (kineto logs profiler_start/stop lines there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_cpu_allocated(model: nn.Module, tokens: torch.Tensor) -> int:
    """Peak bytes held by torch's CPU allocator during one forward, above the start."""
    with (
        _stderr_silenced(),
        torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        model(tokens)
    events = [
        event
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _peak_cuda_allocated(model: nn.Module, tokens: torch.Tensor) -> int:
    """Peak bytes held by torch's CUDA allocator during one forward, above the start."""
    torch.cuda.synchronize(tokens.device)
    torch.cuda.reset_peak_memory_stats(tokens.device)
    start = torch.cuda.memory_allocated(tokens.device)
    model(tokens)
    torch.cuda.synchronize(tokens.device)
    return torch.cuda.max_memory_allocated(tokens.device) - start


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Model name", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The instruction sets that decide which bf16/int8 kernels run, as /proc/cpuinfo lists."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def _engine_name() -> str | None:
    try:
        return quantized_engine()
    except UnsupportedQuantization:
        return None


def device_fingerprint(device: str = "cpu") -> dict:
    """What a latency depends on besides the model: CPU, core count, torch, triton, the
    quantized engine, and on CUDA the GPU, its capability and driver. `id` is a short hash of
    the rest, stable across processes.

    >>> fp = device_fingerprint("cpu")
    >>> fp["id"] == device_fingerprint("cpu")["id"], len(fp["id"]), fp["logical_cores"] > 0
    (True, 12, True)
    """
    torch_device = torch.device(device)
    triton_version = None
    if importlib.util.find_spec("triton") is not None:
        import triton

        triton_version = triton.__version__
    fingerprint = {
        "device": torch_device.type,
        "cpu": _cpu_model_name(),
        "machine": platform.machine(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "torch": torch.__version__,
        "triton": triton_version,
        "quantized_engine": _engine_name(),
    }
    if torch_device.type == "cuda":
        index = (
            torch_device.index if torch_device.index is not None else torch.cuda.current_device()
        )
        major, minor = torch.cuda.get_device_capability(index)
        fingerprint |= {
            "gpu": torch.cuda.get_device_name(index),
            "capability": f"{major}.{minor}",
            "cuda": torch.version.cuda,
            "driver": _driver_version(),
        }
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    fingerprint["id"] = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return fingerprint


__all__ = ["DEVICES", "check_device", "device_fingerprint", "profile"]
