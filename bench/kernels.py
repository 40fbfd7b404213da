"""The Triton kernels of `tnas.kernels` against torch: GB/s (or TFLOP/s) and the speed-up.

    python bench/kernels.py [--kernels int8,int4,activation,dwconv] [--skip-tests]

1. Each kernel's test file in `tests/kernels/` runs first, on this machine's device; a kernel
   whose test fails is not reported ("faster but wrong is not an improvement").
2. The shapes: those of the presets' largest layers (d_model, FFN width, sequence length), and
   the issue's goal shapes (decode: batch 1-16 rows, K and N of 4096 and 14336).
3. The baseline, in the same run on the same inputs: torch in fp16 (`x @ w.T` with the float
   weight for the matmuls; the eager expression for the activations; `F.conv1d` as MDHA pads
   it for the dwconv).
4. Times are medians of `triton.testing.do_bench_cudagraph` (CUDA graphs take the launch
   overhead out of both sides) over inputs rotated through more than 256 MiB, so neither side
   reads its weights from L2. The peak is `triton.testing.get_dram_gbps()`, the spec bandwidth
   from the memory clock and bus width; a torch copy is printed beside it.

Without CUDA it runs the kernels under Triton's interpreter (`TRITON_INTERPRET=1`) on tiny
shapes: that checks the script and the kernels' agreement with torch, and its figures are not
speeds.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules are imported

import torch.nn.functional as F
import triton
import triton.testing

from tnas.kernels.activation import bias_act, glu_act
from tnas.kernels.dwconv import causal_dwconv, causal_dwconv_reference
from tnas.kernels.int4_matmul import int4_matmul, quantize_int4
from tnas.kernels.int8_matmul import int8_matmul, quantize_int8
from tnas.space import load_space

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ("int8", "int4", "activation", "dwconv")
TEST_FILES = {
    "int8": "tests/kernels/test_int8_matmul.py",
    "int4": "tests/kernels/test_int4_matmul.py",
    "activation": "tests/kernels/test_activation.py",
    "dwconv": "tests/kernels/test_dwconv.py",
}
ROTATE_BYTES = 256 * 2**20  # inputs cycled per timing: beyond the L2 of any current GPU
GOAL_WEIGHTS = ((4096, 4096), (4096, 14336), (14336, 4096))  # (K, N), as in 7-8B decoders
GOAL_MATMULS = [(m, k, n) for m in (1, 4, 16) for k, n in GOAL_WEIGHTS]


def preset_shapes() -> dict[str, int]:
    """The largest d_model, FFN width and sequence length over the presets' sampled configs."""
    sizes = {"d_model": 0, "ffn_dim": 0, "seq_len": 0}
    rng = np.random.default_rng(0)
    for name in ("primer", "mixers", "simq", "wide", "matformer"):
        space = load_space(name)
        for config in (space.sample(rng) for _ in range(64)):
            sizes["d_model"] = max(sizes["d_model"], config.d_model)
            sizes["seq_len"] = max(sizes["seq_len"], config.max_seq_len)
            sizes["ffn_dim"] = max(sizes["ffn_dim"], *(layer.ffn_dim for layer in config.layers))
    return sizes


def tests_pass(kernel: str, cuda: bool) -> bool:
    """Run the kernel's test file on this device (CUDA cases with a GPU, interpreter ones
    without); True when it passes."""
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-o", "addopts=", TEST_FILES[kernel]]
    command += ["-k", "cuda" if cuda else "not cuda"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"  {TEST_FILES[kernel]}: {last}")
    return done.returncode == 0


def timer(cuda: bool) -> Callable[[Callable[[], object]], float]:
    """Seconds per call of a function: CUDA-graph medians on GPU, wall-clock ones otherwise."""

    def on_gpu(fn):
        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") / 1e3

    def on_cpu(fn):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[1]

    return on_gpu if cuda else on_cpu


def rotated(make: Callable[[int], tuple], nbytes: int, cuda: bool) -> Callable[[], tuple]:
    """A function returning the next of enough input sets made by `make(i)` that together they
    exceed `ROTATE_BYTES` (one set without CUDA)."""
    count = max(1, math.ceil(ROTATE_BYTES / max(1, nbytes))) if cuda else 1
    sets = [make(i) for i in range(count)]
    state = {"i": -1}

    def next_set():
        state["i"] = (state["i"] + 1) % count
        return sets[state["i"]]

    return next_set


class Report:
    """Collects and prints rows: shape, kernel and torch time, throughput, speed-up, error."""

    def __init__(self, peak_gbps: float | None):
        self.peak = peak_gbps
        print(
            f"{'kernel':<12s} {'shape':<24s} {'triton us':>10s} {'torch us':>9s} "
            f"{'GB/s':>8s} {'% peak':>7s} {'TFLOP/s':>8s} {'speed-up':>9s} {'max err':>9s}"
        )

    def row(self, kernel, shape, ours, theirs, nbytes, flops, error):
        gbps = nbytes / ours / 1e9
        share = f"{100 * gbps / self.peak:6.1f}%" if self.peak else f"{'-':>7s}"
        tflops = f"{flops / ours / 1e12:8.2f}" if flops else f"{'-':>8s}"
        print(
            f"{kernel:<12s} {shape:<24s} {ours * 1e6:10.1f} {theirs * 1e6:9.1f} {gbps:8.1f} "
            f"{share} {tflops} {theirs / ours:8.2f}x {error:9.2e}"
        )


def bench_matmul(kernel: str, shapes, device, dtype, time_it, report) -> None:
    for m, k, n in shapes:
        if kernel == "int8":
            weight_bytes = n * k + 4 * n
        else:
            weight_bytes = n * k // 2 + 4 * n * (k // 128)
        nbytes = weight_bytes + 2 * (m * k + m * n)

        def make(i, m=m, k=k, n=n):
            gen = torch.Generator(device=device).manual_seed(i)
            w = torch.randn(n, k, device=device, generator=gen) / math.sqrt(k)
            x = torch.randn(m, k, device=device, generator=gen).to(dtype)
            quantized = quantize_int8(w) if kernel == "int8" else quantize_int4(w, 128)
            return x, quantized, w.to(dtype)

        ours_inputs = rotated(make, weight_bytes, device == "cuda")
        theirs_inputs = rotated(make, 2 * n * k, device == "cuda")

        def ours(ours_inputs=ours_inputs):
            x, quantized, _ = ours_inputs()
            if kernel == "int8":
                return int8_matmul(x, *quantized)
            return int4_matmul(x, *quantized, 128)

        def theirs(theirs_inputs=theirs_inputs):
            x, _, w = theirs_inputs()
            return x @ w.T

        x, quantized, w = make(0)
        got = int8_matmul(x, *quantized) if kernel == "int8" else int4_matmul(x, *quantized, 128)
        error = (got.float() - (x @ w.T).float()).abs().max().item()  # quantization included
        report.row(
            f"{kernel}_matmul", f"M{m} K{k} N{n}", time_it(ours), time_it(theirs), nbytes,
            2 * m * n * k, error,
        )  # fmt: skip


def bench_activation(shapes, device, dtype, time_it, report) -> None:
    for tokens, width in shapes:
        numel = tokens * width
        for name in ("squared_relu", "swiglu", "geglu"):
            glu = name != "squared_relu"
            nbytes = (3 if glu else 2) * numel * 2

            def make(i, tokens=tokens, width=width):
                gen = torch.Generator(device=device).manual_seed(i)
                a = torch.randn(tokens, width, device=device, generator=gen).to(dtype)
                b = torch.randn(tokens, width, device=device, generator=gen).to(dtype)
                return a, b, torch.randn(width, device=device, generator=gen).to(dtype)

            inputs = rotated(make, nbytes, device == "cuda")

            def ours(name=name, glu=glu, inputs=inputs):
                a, b, bias = inputs()
                if glu:
                    return glu_act(a, b, activation=name)
                return bias_act(a, bias, activation=name)

            def theirs(name=name, inputs=inputs):
                a, b, bias = inputs()
                if name == "squared_relu":
                    return torch.relu(a + bias).square()
                return (F.silu(a) if name == "swiglu" else F.gelu(a)) * b

            a, b, bias = make(0)
            with torch.no_grad():
                got = ours()
                want = theirs()
            error = (got.float() - want.float()).abs().max().item()
            with torch.no_grad():
                ours_s, theirs_s = time_it(ours), time_it(theirs)
            report.row(name, f"{tokens}x{width}", ours_s, theirs_s, nbytes, 0, error)


def backward_of(conv, inputs):
    """A function running `conv` forward and backward (x and weight) on the next inputs."""

    def run():
        x, weight = inputs()
        x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
        y = conv(x, weight)
        return torch.autograd.grad(y, (x, weight), torch.ones_like(y))

    return run


def bench_dwconv(shapes, device, dtype, time_it, report) -> None:
    for batch, steps, channels, taps in shapes:
        nbytes = 2 * batch * steps * channels * 2

        def make(i, batch=batch, steps=steps, channels=channels, taps=taps):
            gen = torch.Generator(device=device).manual_seed(i)
            x = torch.randn(batch, steps, channels, device=device, generator=gen).to(dtype)
            weight = torch.randn(channels, 1, taps, device=device, generator=gen).to(dtype)
            return x, weight

        inputs = rotated(make, nbytes, device == "cuda")
        shape = f"B{batch} T{steps} C{channels} K{taps}"
        with torch.no_grad():
            x, weight = make(0)
            error = (causal_dwconv(x, weight) - causal_dwconv_reference(x, weight)).abs().max()
            report.row(
                "dwconv", shape,
                time_it(lambda inputs=inputs: causal_dwconv(*inputs())),
                time_it(lambda inputs=inputs: causal_dwconv_reference(*inputs())),
                nbytes, 0, error.float().item(),
            )  # fmt: skip
        # forward and backward read x twice and dy, and write y and dx: at least 2 x nbytes
        report.row(
            "dwconv f+b", shape,
            time_it(backward_of(causal_dwconv, inputs)),
            time_it(backward_of(causal_dwconv_reference, inputs)),
            2 * nbytes, 0, 0.0,
        )  # fmt: skip


def copy_gbps(time_it) -> float:
    """Bandwidth of a torch copy of 1 GiB (read + write), for reference next to the peak."""
    source = torch.empty(2**29, dtype=torch.float16, device="cuda")
    target = torch.empty_like(source)
    return 2 * source.numel() * 2 / time_it(lambda: target.copy_(source)) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--skip-tests", action="store_true", help="report without the tests")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.kernels.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(KERNELS))
    if unknown:
        parser.error(f"unknown kernels {unknown}; choose from {', '.join(KERNELS)}")

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    time_it = timer(cuda)
    sizes = preset_shapes()
    d, ffn, seq = sizes["d_model"], sizes["ffn_dim"], sizes["seq_len"]
    if cuda:
        props = torch.cuda.get_device_properties(0)
        peak = triton.testing.get_dram_gbps()
        print(
            f"device: {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__},"
            f" triton {triton.__version__}; peak DRAM {peak:.0f} GB/s (spec), torch copy "
            f"{copy_gbps(time_it):.0f} GB/s"
        )
        dtype = torch.float16
        matmuls = [(16, d, ffn), (16, ffn, d), *GOAL_MATMULS]
        activations = [(8 * seq, ffn), (8192, 4096), (8192, 14336)]
        dwconvs = [(8, seq, 3 * d, 3), (8, 2048, 3 * 1024, 3), (4, 4096, 3 * 4096, 3)]
    else:
        print(
            "device: CPU, under TRITON_INTERPRET=1 on tiny shapes: checks the kernels against "
            "torch; the times are the interpreter's, not speeds"
        )
        peak, dtype = None, torch.float32
        matmuls = [(4, 256, 128)]
        activations = [(16, 64)]
        dwconvs = [(2, 16, 24, 3)]
    print(f"presets' largest layer: d_model {d}, FFN {ffn}, seq {seq}")

    passed = {name: args.skip_tests or tests_pass(name, cuda) for name in chosen}
    report = Report(peak)
    for name in chosen:
        if not passed[name]:
            print(f"{name}: its test failed, so its speed is not reported")
        elif name in ("int8", "int4"):
            bench_matmul(name, matmuls, device, dtype, time_it, report)
        elif name == "activation":
            bench_activation(activations, device, dtype, time_it, report)
        else:
            bench_dwconv(dwconvs, device, dtype, time_it, report)
    if not all(passed.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
