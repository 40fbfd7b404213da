"""Fill a `LatencyTable` with real measurements: one quantized block at a time.

`measure_block` times one block of a config, quantized as `profile` quantizes it;
`measure_overhead` times the model minus its blocks; `calibrate` samples a design space,
measures each distinct block key once (and the overhead keys, and a few whole models for the
predictor's residual) within a budget of measurements, and records its protocol, space and
time in the table.

Where the model is deployed (`tnas.workers.target`): `calibrate_on` calibrates on a target, in
this process or as a Ray task on the node that offers a custom resource; `adapt_table` moves a
table to a target from a few whole models measured there, and `check_table` scores a table's
predictions against fresh configs measured on a target, both under the table's protocol.

>>> from tnas.space import ArchConfig, LayerConfig
>>> cfg = ArchConfig(d_model=32, n_layers=2, vocab_size=64, max_seq_len=16,
...                  layers=(LayerConfig(ffn_dim=64), LayerConfig(ffn_dim=64, bits=8)))
>>> measure_block(cfg, 1, seq_len=16, repeats=3) > 0
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn
from torch.utils.benchmark import Timer

from tnas.nn.model import build_model
from tnas.nn.quant import check_supported, quantize
from tnas.predictors.latency import (
    DEFAULT_SEQ_LEN,
    LatencyPredictor,
    LatencyTable,
    block_key,
    default_seq_len,
    overhead_key,
)
from tnas.predictors.selection import mape
from tnas.space import ArchConfig, DesignSpace
from tnas.space.errors import one_line
from tnas.workers.backend import ProfileSettings
from tnas.workers.profile import _forwards_per_repeat, _num_threads, device_fingerprint, profile
from tnas.workers.target import Target, TargetError, check_target, measure, wait_for

WARMUP = ProfileSettings.warmup  # untimed runs before timing, as a study's protocol
MAX_IDLE_SAMPLES = 500  # stop sampling after this many configs in a row bring no new key
MAX_WHOLE_MODELS = 100  # budget left over times whole models up to this many in all
SAMPLE_TRIES = 100  # fresh configs: give up after this many samples per config wanted


def _median_ms(run: Callable[[], object], repeats: int, warmup: int = WARMUP) -> float:
    """Median over `repeats` of ms per `run()`, each repeat lasting about 20 ms (as `profile`),
    after `warmup` untimed runs."""
    for _ in range(warmup):
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
    warmup: int = WARMUP,
) -> float:
    """Median ms of one forward of layer `layer_index`'s block, quantized to its `bits`, on a
    random (B, T, D) float32 input under `torch.inference_mode()`, after `warmup` forwards.

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
        return _median_ms(lambda: block(x, causal), repeats, warmup)


def measure_overhead(
    config: ArchConfig,
    device: str = "cpu",
    batch: int = 1,
    seq_len: int = 128,
    repeats: int = 10,
    threads: int | None = 1,
    warmup: int = WARMUP,
) -> float:
    """Median ms of the model minus its blocks: embeddings, final norm and head (float32,
    as `quantize` leaves them), on random tokens, after `warmup` forwards."""
    single = config.replace(n_layers=1, layers=config.layers[:1])
    with _num_threads(threads), torch.inference_mode():
        model = build_model(single).to(device).eval()
        model.blocks = nn.ModuleList()
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator)
        tokens = tokens.to(device)
        return _median_ms(lambda: model(tokens), repeats, warmup)


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
    warmup: int = WARMUP,
    task: str | None = None,
) -> LatencyTable:
    """Measure a latency table for `space` on `device` with at most `budget` measurements.

    Configs are sampled with `np.random.default_rng(seed)`. Every new block key and overhead key
    of the sampled configs is measured once. The first `full_models` configs (default
    `clamp(budget // 10, 3, budget // 4)`) are also timed whole with `profile`, each right after
    its own keys, for the predictor's residual: on a machine whose speed drifts during the
    calibration, a whole model and its blocks are then measured at the same speed. Sampling
    stops when `MAX_IDLE_SAMPLES` configs in a row bring no new key; what is left of the budget
    then times more configs whole, up to `MAX_WHOLE_MODELS` in all (a two-term residual fit
    has no use for more). `seq_len` is capped at each config's `max_seq_len`. A config
    with bits the device cannot run raises `UnsupportedQuantization` before anything of it is
    measured.

    Every measurement runs `warmup` untimed forwards, then `repeats` timed ones, on `threads`
    torch threads (None: torch's current number); the table records that protocol, the space's
    name and digest and the time (`protocol`, `space`, `calibrated`). With `task` (a task spec),
    each sampled config is first adapted to the task (its vocabulary, sequence length, head),
    as a search's trials are, and the table records it (`task`).
    """
    if budget < 2:
        raise ValueError(f"budget must be >= 2, got {budget}")
    if full_models is None:
        full_models = min(max(3, budget // 10), budget // 4)
    rng = np.random.default_rng(seed)
    fingerprint = device_fingerprint(device)
    protocol = {
        "batch": batch,
        "seq_len": DEFAULT_SEQ_LEN if seq_len is None else seq_len,
        "repeats": repeats,
        "warmup": warmup,
        "threads": torch.get_num_threads() if threads is None else threads,
    }
    table = LatencyTable(
        device_id=fingerprint["id"],
        fingerprint=fingerprint,
        protocol=protocol,
        space={"name": space.name, "digest": space.digest},
        task=task,
        calibrated=_now(),
    )
    adapt = task_adapter(task)

    def sample() -> ArchConfig:
        config = adapt(space.sample(rng))
        check_supported(config, device)
        return config

    def time_whole(config: ArchConfig) -> None:
        length = default_seq_len(config, seq_len)
        result = profile(
            config,
            device,
            batch=batch,
            seq_len=length,
            repeats=repeats,
            warmup=warmup,
            threads=threads,
        )
        table.full_models.append((config.to_json(), batch, length, result["latency_ms"]))

    def measure_keys(config: ArchConfig, reserve: int = 0) -> bool:
        """Measure the config's keys the table lacks, leaving `reserve` of the budget; whether
        any was new."""
        length = default_seq_len(config, seq_len)
        limit = budget - reserve
        new = False
        key = overhead_key(config, batch, length)
        if key not in table.overhead and table.measurements < limit:
            table.overhead[key] = measure_overhead(
                config, device, batch, length, repeats, threads, warmup
            )
            new = True
        for i, layer in enumerate(config.layers):
            key = block_key(config, layer, batch, length)
            if key in table.entries or table.measurements >= limit:
                continue
            table.entries[key] = measure_block(
                config, i, device, batch, length, repeats, threads, warmup
            )
            new = True
        return new

    for done in range(full_models):
        config = sample()
        measure_keys(config, reserve=full_models - done)
        time_whole(config)
    idle = 0
    while table.measurements < budget and idle < MAX_IDLE_SAMPLES:
        idle = 0 if measure_keys(sample()) else idle + 1
    while table.measurements < budget and len(table.full_models) < MAX_WHOLE_MODELS:
        time_whole(sample())
    return table


def _now() -> str:
    """This moment in UTC, ISO 8601 to the second: a table's `calibrated`."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def calibrate_on(
    target: Target, space: DesignSpace, address: str | None = None, **options
) -> LatencyTable:
    """`calibrate(space, **options)` on `target`: in this process when it is local, else as a
    Ray task on a node that offers its resource (one unit of it, `threads` CPUs), joining Ray
    at `address` (else `RAY_ADDRESS`, else a local Ray). The table records the node's IP
    (`node_ip`). A node that cannot calibrate (no such resource, a device it lacks, a node
    lost) is a one-line `TargetError`.
    """
    if target.resource is None:
        return calibrate(space, **options)
    import ray

    with joined(target, address):
        task = ray.remote(_calibrate_on_node).options(
            resources={target.resource: 1}, num_cpus=options.get("threads") or 1, max_retries=3
        )
        answer = wait_for(task.remote(space, options), target)
    if "error" in answer:
        raise TargetError(f"calibrating on {target.text} failed: {answer['error']}")
    return LatencyTable.from_json(answer["table"])


@contextmanager
def joined(target: Target, address: str | None = None) -> Iterator[None]:
    """For a node target: Ray joined (`address`, else `RAY_ADDRESS`, else a local Ray) and a
    node offering the target's resource checked (`check_target`) for the block; a Ray this
    started is shut down after it. A cluster it cannot join is a one-line `TargetError`."""
    if target.resource is None:
        yield
        return
    import ray

    started = not ray.is_initialized()
    try:
        try:
            check_target(target, address)
        except (ConnectionError, RuntimeError) as err:
            from tnas.workers.pool import cluster_address

            cluster = cluster_address(address)
            where = f"join Ray at {cluster}" if cluster else "start a local Ray"
            raise TargetError(f"cannot {where}: {one_line(err, first=True)}") from None
        yield
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def _calibrate_on_node(space: DesignSpace, options: dict) -> dict:
    """On the node: `{"table": JSON}` of `calibrate`, or `{"error": one line}`."""
    import ray

    from tnas.workers.profile import check_device

    try:
        check_device(options.get("device", "cpu"))
        table = calibrate(space, **options)
    except Exception as err:  # the caller's one line, not a remote traceback
        return {"error": one_line(f"{type(err).__name__}: {err}", first=True)}
    table.node_ip = ray.util.get_node_ip_address()
    return {"table": table.to_json()}


def protocol_settings(table: LatencyTable, device: str | None = None) -> ProfileSettings:
    """The `ProfileSettings` `table` was measured with, on `device` (default: the table's own
    device type); a one-line `ValueError` for a table older than protocols."""
    if table.protocol is None:
        table.check_protocol({})  # raises: the table predates protocols
    if device is None:
        device = (table.fingerprint or {}).get("device", "cpu")
    return ProfileSettings(device=device, **table.protocol)


def task_adapter(task: str | None) -> Callable[[ArchConfig], ArchConfig]:
    """A function that adapts a config to `task` (a task spec) as a trial's is: its
    vocabulary, sequence length and head; the identity for None."""
    if task is None:
        return lambda config: config
    from tnas.workers.tasks import parse_task

    return parse_task(task).adapt


def fresh_configs(
    space: DesignSpace, count: int, seed: int, table: LatencyTable, device: str
) -> list[ArchConfig]:
    """`count` distinct configs of `space` (sampled with `seed`, adapted to the table's task)
    that `table` has not measured whole, each checked to run on `device`; a one-line
    `ValueError` if the space has too few."""
    rng = np.random.default_rng(seed)
    seen = {ArchConfig.from_json(text).hash for text, *_ in table.full_models}
    adapt = task_adapter(table.task)
    configs: list[ArchConfig] = []
    for _ in range(SAMPLE_TRIES * count):
        if len(configs) == count:
            break
        config = adapt(space.sample(rng))
        if config.hash not in seen:
            seen.add(config.hash)
            check_supported(config, device)
            configs.append(config)
    if len(configs) < count:
        raise ValueError(
            f"space {space.name} gave only {len(configs)} configs that {table.name} has not "
            f"measured in {SAMPLE_TRIES * count} samples; ask for fewer than {count}"
        )
    return configs


def _measured(
    target: Target, configs: list[ArchConfig], settings: ProfileSettings
) -> tuple[list[float], dict, str | None]:
    """Whole-model ms of `configs` on `target`, the device's fingerprint and the node's IP;
    a one-line `TargetError` if any of them could not be measured."""
    results = measure(target, configs, settings)
    failed = [result["error"] for result in results if "error" in result]
    if failed:
        raise TargetError(
            f"{len(failed)} of {len(configs)} measurements on {target.text} failed; the first: "
            f"{failed[0]}"
        )
    ids = {result["fingerprint"]["id"] for result in results}
    if len(ids) > 1:
        raise TargetError(f"the measurements on {target.text} came from {len(ids)} devices")
    latencies = [float(result["metrics"]["latency_ms"]) for result in results]
    return latencies, results[0]["fingerprint"], results[0]["node_ip"]


def _predicted(predictor: LatencyPredictor, configs: list[ArchConfig], batch: int, seq_len: int):
    try:
        return [predictor.predict(c, batch, seq_len) for c in configs]
    except KeyError as err:  # no entry of a config's mixer and bits to interpolate from
        raise ValueError(f"{predictor.table.name} cannot predict a config: {err.args[0]}") from None


def adapt_table(
    table: LatencyTable,
    target: Target,
    space: DesignSpace,
    measurements: int = 10,
    seed: int = 2,
    device: str | None = None,
    address: str | None = None,
) -> tuple[LatencyTable, dict]:
    """`table` moved to `target`: `measurements` fresh configs of `space` measured whole there
    under the table's protocol (on `device`, default the table's device type), fitted with
    `LatencyPredictor.adapt`. The new table keeps the protocol and space, takes the target's
    fingerprint and node, the time of adaptation, and the measurements as its `full_models`
    (so its residual is fitted on them). Returns it and a summary: `device_id`, `node_ip`,
    `measurements`, `mape_before`/`mape_after` (fractions, on those measurements). A node
    target is reached through Ray at `address` (as `calibrate_on`).
    """
    table.check_space(space.name, space.digest)
    settings = protocol_settings(table, device)
    configs = fresh_configs(space, measurements, seed, table, settings.device)
    with joined(target, address):
        latencies, fingerprint, node_ip = _measured(target, configs, settings)
    old = LatencyPredictor(table)
    before = _predicted(old, configs, settings.batch, settings.seq_len)
    pairs = list(zip(configs, latencies, strict=True))
    moved = old.adapt(pairs, settings.batch, settings.seq_len, fingerprint["id"]).table
    moved.fingerprint, moved.node_ip, moved.calibrated = fingerprint, node_ip, _now()
    moved.full_models = [
        (c.to_json(), settings.batch, default_seq_len(c, settings.seq_len), ms) for c, ms in pairs
    ]
    after = _predicted(LatencyPredictor(moved), configs, settings.batch, settings.seq_len)
    summary = {
        "device_id": fingerprint["id"],
        "node_ip": node_ip,
        "measurements": len(configs),
        "mape_before": mape(latencies, before),
        "mape_after": mape(latencies, after),
    }
    return moved, summary


def check_table(
    table: LatencyTable,
    target: Target,
    space: DesignSpace,
    configs: int = 20,
    seed: int = 1,
    address: str | None = None,
) -> dict:
    """How well `table` predicts `target`: `configs` fresh configs of `space` (sampled with
    `seed`, none the table measured whole) measured there under the table's protocol and
    device type, against the table's predictions. Returns `mape` (a fraction),
    `within_10pct`, `kendall_tau` (`LatencyPredictor.report`), the target's `device_id` and
    `node_ip`, the table's `table_device_id`, and `measured_ms`/`predicted_ms` per config. A
    node target is reached through Ray at `address` (as `calibrate_on`).
    """
    table.check_space(space.name, space.digest)
    settings = protocol_settings(table)
    sampled = fresh_configs(space, configs, seed, table, settings.device)
    with joined(target, address):
        latencies, fingerprint, node_ip = _measured(target, sampled, settings)
    predictor = LatencyPredictor(table)
    predicted = _predicted(predictor, sampled, settings.batch, settings.seq_len)
    report = predictor.report(sampled, latencies, settings.batch, settings.seq_len)
    return {
        "table": table.source,
        "target": target.text,
        "device_id": fingerprint["id"],
        "table_device_id": table.device_id,
        "node_ip": node_ip,
        "configs": len(sampled),
        "seed": seed,
        **report,
        "measured_ms": latencies,
        "predicted_ms": predicted,
    }


__all__ = [
    "adapt_table",
    "block_key",
    "calibrate",
    "calibrate_on",
    "check_table",
    "fresh_configs",
    "joined",
    "measure_block",
    "measure_overhead",
    "task_adapter",
    "protocol_settings",
]
