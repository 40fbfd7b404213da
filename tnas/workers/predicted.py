"""Latency predicted from a calibrated table, for a device that cannot join the cluster.

`PredictedLatency` wraps any evaluator (the Ray pool, a trial in this process, a replay table,
a supernet): each successful report gets `latency_ms@NAME` from the `LatencyPredictor` of each
`table:` source, the plain `latency_ms` too when that source is the run's first, and under
`latency` where the value came from: `{"kind": "predicted", "table", "device",
"calibrated"}`, so that queries mark it as a prediction. The table is checked when it is
opened (`open_table`): it must exist, be a latency table, have been calibrated under the
study's measurement protocol and for its design space; each problem is one line.

>>> from tnas.predictors.latency import LatencyTable
>>> class Answers:  # an evaluator that reports accuracy only
...     slots = 1
...     def __init__(self): self.done = []
...     def submit(self, key, config):
...         self.done.append({"key": key, "status": "ok", "metrics": {"accuracy": 0.9}})
...     def collect(self, timeout=None):
...         done, self.done = self.done, []
...         return done
>>> from tnas.space import ArchConfig
>>> config = ArchConfig(n_layers=1)
>>> from tnas.predictors.latency import block_key, overhead_key
>>> table = LatencyTable(device_id="phone")
>>> table.entries[block_key(config, config.layers[0], batch=1, seq_len=128)] = 2.0
>>> table.overhead[overhead_key(config, batch=1, seq_len=128)] = 0.5
>>> wrapped = PredictedLatency(Answers(), {"phone": ("phone.json", table)}, primary="phone",
...                            batch=1, seq_len=128)
>>> wrapped.submit("t0", config)
>>> [report] = wrapped.collect()
>>> sorted(report["metrics"]), report["latency"]["phone"]["kind"]
(['accuracy', 'latency_ms', 'latency_ms@phone'], 'predicted')
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tnas.predictors.latency import LatencyPredictor, LatencyTable
from tnas.space.config import ArchConfig


def open_table(
    path: str, protocol: dict, space_name: str, space_digest: str, task: str | None
) -> LatencyTable:
    """The latency table at `path`, checked: readable, calibrated under `protocol` (batch,
    seq_len, repeats, warmup, threads), for the space (`space_name`, `space_digest`) and for
    configs adapted to `task`. A one-line `ValueError` names the file and the problem."""
    if not Path(path).is_file():
        raise ValueError(f"latency table {path}: no such file")
    table = LatencyTable.load(path)  # its messages name the file
    table.check_protocol(protocol)
    table.check_space(space_name, space_digest)
    table.check_task(task)
    return table


class PredictedLatency:
    """`evaluator` with `latency_ms@NAME` predicted from each table of `tables`
    (`{NAME: (path, LatencyTable)}`) at `batch` and `seq_len` (cut to a config's
    `max_seq_len`) for each config as `adapt` makes it for the task (as the tables were
    calibrated); `primary` names the table that gives plain `latency_ms`, if any. For an
    evaluator that reports one plain `latency_ms` (a replay table, a supernet), each name of
    `measured` gets it as `latency_ms@NAME`."""

    def __init__(
        self,
        evaluator,
        tables: dict[str, tuple[str, LatencyTable]],
        primary: str | None,
        batch: int,
        seq_len: int,
        measured: tuple[str, ...] = (),
        adapt: Callable[[ArchConfig], ArchConfig] | None = None,
    ):
        self.evaluator = evaluator
        self.tables = {
            name: (path, table, LatencyPredictor(table)) for name, (path, table) in tables.items()
        }
        self.primary = primary
        self.measured = measured
        self.adapt = adapt or (lambda config: config)
        self.batch, self.seq_len = batch, seq_len
        self.configs: dict[str, ArchConfig] = {}

    def __getattr__(self, name):  # slots, job, pending, ...: the wrapped evaluator's
        return getattr(self.evaluator, name)

    def submit(self, key: str, config: ArchConfig) -> None:
        self.configs[key] = config
        self.evaluator.submit(key, config)

    def collect(self, timeout: float | None = None) -> list[dict]:
        reports = self.evaluator.collect(timeout)
        for report in reports:
            config = self.configs.pop(report["key"], None)
            if config is not None and report["status"] == "ok":
                self.predict_into(report, config)
        return reports

    def predict_into(self, report: dict, config: ArchConfig) -> None:
        metrics = dict(report["metrics"])
        latency = dict(report.get("latency") or {})
        for name in self.measured:  # a replay table's or a supernet's own latency_ms
            if f"latency_ms@{name}" not in metrics and "latency_ms" in metrics:
                metrics[f"latency_ms@{name}"] = metrics["latency_ms"]
        config = self.adapt(config)  # the model a trial deploys: the task's sequence length
        seq_len = min(self.seq_len, config.max_seq_len)
        for name, (path, table, predictor) in self.tables.items():
            ms = float(predictor.predict(config, batch=self.batch, seq_len=seq_len))
            metrics[f"latency_ms@{name}"] = ms
            if name == self.primary:
                metrics["latency_ms"] = ms
            latency[name] = {
                "kind": "predicted",
                "table": str(path),
                "device": table.device_id,
                "calibrated": getattr(table, "calibrated", None),
            }
        report["metrics"], report["latency"] = metrics, latency

    def close(self) -> None:
        self.evaluator.close()


__all__ = ["PredictedLatency", "open_table"]
