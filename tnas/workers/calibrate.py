"""Fill a `LatencyTable` with real measurements: one quantized block at a time.

`measure_block` times one block of a config, quantized as `profile` quantizes it;
`measure_overhead` times the model minus its blocks; `calibrate` samples a design space,
measures each distinct block key once (and the overhead keys, and a few whole models for the
predictor's residual) within a budget of measurements.

>>> from tnas.space import ArchConfig, LayerConfig
>>> cfg = ArchConfig(d_model=32, n_layers=2, vocab_size=64, max_seq_len=16,
...                  layers=(LayerConfig(ffn_dim=64), LayerConfig(ffn_dim=64, bits=8)))
>>> measure_block(cfg, 1, seq_len=16, repeats=3) > 0
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.benchmark import Timer

from tnas.nn.model import build_model
from tnas.nn.quant import check_supported, quantize
from tnas.predictors.latency import LatencyTable, block_key, default_seq_len, overhead_key
from tnas.space import ArchConfig, DesignSpace
from tnas.workers.profile import _forwards_per_repeat, _num_threads, device_fingerprint, profile

WARMUP = 2
MAX_IDLE_SAMPLES = 500  # stop sampling after this many configs in a row bring no new key


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median over `repeats` of ms per `run()`, each repeat lasting about 20 ms (as `profile`)."""
    for _ in range(WARMUP):
        run()
    timer = Timer("run()", globals={"run": run}, num_threads=torch.get_num_threads())
    number = _forwards_per_repeat(timer.timeit(1).mean)
    return float(np.median([timer.timeit(number).mean for _ in range(repeats)]) * 1e3)


def measure_block(
    config: ArchConfig,
    layer_index: int,
    device: str = "cpu",
    batch: int = 1,
    seq_len: int = 128,
    repeats: int = 10,
    threads: int | None = 1,
) -> float:
    """Median ms of one forward of layer `layer_index`'s block, quantized to its `bits`, on a
    random (B, T, D) float32 input under `torch.inference_mode()`.

    The block is built as the only block of a 1-layer copy of `config` and quantized with
    `quantize`, so a precision with no kernel on `device` raises `UnsupportedQuantization`.
    """
    layer = config.layers[layer_index]
    single = config.replace(n_layers=1, layers=(layer,))
    with _num_threads(threads), torch.inference_mode():
        block = quantize(build_model(single), single, device).blocks[0]
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, seq_len, config.d_model, generator=generator).to(device)  # (B, T, D)
        causal = config.head == "lm"
        return _median_ms(lambda: block(x, causal), repeats)


def measure_overhead(
    config: ArchConfig,
    device: str = "cpu",
    batch: int = 1,
    seq_len: int = 128,
    repeats: int = 10,
    threads: int | None = 1,
) -> float:
    """Median ms of the model minus its blocks: embeddings, final norm and head (float32,
    as `quantize` leaves them), on random tokens."""
    single = config.replace(n_layers=1, layers=config.layers[:1])
    with _num_threads(threads), torch.inference_mode():
        model = build_model(single).to(device).eval()
        model.blocks = nn.ModuleList()
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator)
        tokens = tokens.to(device)
        return _median_ms(lambda: model(tokens), repeats)


def calibrate(
    space: DesignSpace,
    device: str = "cpu",
    budget: int = 200,
    batch: int = 1,
    seq_len: int | None = 128,
    seed: int = 0,
    repeats: int = 10,
    threads: int | None = 1,
    full_models: int | None = None,
) -> LatencyTable:
    """Measure a latency table for `space` on `device` with at most `budget` measurements.

    Configs are sampled with `np.random.default_rng(seed)`. The first `full_models` of them
    (default `clamp(budget // 10, 3, budget // 4)`) are timed whole with `profile` for the
    predictor's residual; then every new block key and overhead key of the sampled configs is
    measured once, until the budget is spent or `MAX_IDLE_SAMPLES` configs in a row bring no new
    key. `seq_len` is capped at each config's `max_seq_len`. A config with bits the device
    cannot run raises `UnsupportedQuantization` before anything of it is measured.
    """
    if budget < 2:
        raise ValueError(f"budget must be >= 2, got {budget}")
    if full_models is None:
        full_models = min(max(3, budget // 10), budget // 4)
    rng = np.random.default_rng(seed)
    fingerprint = device_fingerprint(device)
    table = LatencyTable(device_id=fingerprint["id"], fingerprint=fingerprint)

    def sample() -> ArchConfig:
        config = space.sample(rng)
        check_supported(config, device)
        return config

    profiled = [sample() for _ in range(full_models)]
    for config in profiled:
        length = default_seq_len(config, seq_len)
        result = profile(
            config, device, batch=batch, seq_len=length, repeats=repeats, threads=threads
        )
        table.full_models.append((config.to_json(), batch, length, result["latency_ms"]))

    def configs() -> Iterator[ArchConfig]:
        yield from profiled  # their blocks first, so the residual is fitted on table entries
        while True:
            yield sample()

    idle = 0
    for config in configs():
        if table.measurements >= budget or idle >= MAX_IDLE_SAMPLES:
            break
        length = default_seq_len(config, seq_len)
        idle += 1
        key = overhead_key(config, batch, length)
        if key not in table.overhead:
            table.overhead[key] = measure_overhead(config, device, batch, length, repeats, threads)
            idle = 0
        for i, layer in enumerate(config.layers):
            key = block_key(config, layer, batch, length)
            if key in table.entries or table.measurements >= budget:
                continue
            table.entries[key] = measure_block(config, i, device, batch, length, repeats, threads)
            idle = 0
    return table


__all__ = ["block_key", "calibrate", "measure_block", "measure_overhead"]
