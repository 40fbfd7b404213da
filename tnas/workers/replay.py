"""The replay evaluator: answers trials from a recorded table instead of training anything.

A table is JSONL, one `{"config": ..., "metrics": {...}}` per line (optionally `"status":
"failed"` and `"reason"`), or CSV with a `config` column of JSON, or with one column per knob
of a design space and the rest metrics. `config` is a full `ArchConfig` (it has `layers`) or a
flat dict of knob values (`{"d_model": 256, "layer0.mixer": "gla", ...}`, needs `space`).
A JSONL row may also record its learning curve, `"rungs": {"18": {...}, "54": {...}}` (the
metrics after that many training steps), which a multi-fidelity search replays.
Lookup is exact, by config hash. Optional multiplicative noise is seeded per config and call;
an optional `delay` simulates the seconds a trial takes. A row that is not an object, or whose
metrics are not an object of numbers, is refused with one line naming `file:line`.

>>> import json, tempfile
>>> from tnas.space import ArchConfig
>>> config = ArchConfig(n_layers=1)
>>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
...     _ = f.write(json.dumps({"config": config.to_dict(), "metrics": {"accuracy": 0.9}}))
>>> replay = ReplayEvaluator(f.name)
>>> replay.submit("t0", config)
>>> replay.collect()[0]["metrics"]
{'accuracy': 0.9}

A search on a table that records only part of its space picks from the configs it records
(`search_pool`), so that the sampler never proposes one the table cannot answer:

>>> from tnas.space import load_space
>>> space = load_space("primer")
>>> recorded = space.sample(np.random.default_rng(0))
>>> with open(f.name, "w") as table:
...     _ = table.write(json.dumps({"config": recorded.to_dict(), "metrics": {"accuracy": 0.8}}))
>>> [c.hash for c in ReplayEvaluator(f.name).search_pool(space)] == [recorded.hash]
True
>>> ReplayEvaluator(f.name).search_pool(space, [ArchConfig(n_layers=2)])
Traceback (most recent call last):
...
tnas.workers.replay.ReplayError: the replay table answers none of the 1 configs of the pool; ...
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from tnas.space import ArchConfig, ConfigError, DesignSpace
from tnas.space.errors import one_line, shown
from tnas.space.reader import ConfigReader, bulk
from tnas.workers.reports import failed, ok_report


class ReplayError(ValueError):
    """A table that cannot be read; the message names the file and line."""


def _config_of(value, reader: ConfigReader, where: str) -> ArchConfig:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ReplayError(f"{where}: config must be an object, got {type(value).__name__}")
    if "layers" in value:
        return reader.read_full(value)
    if reader.space is None:
        raise ReplayError(f"{where}: a flat config needs the design space (--space)")
    return reader.read_flat(value)


def _number(value) -> float:
    return float(value)


def load_table(path: str | Path, space: DesignSpace | None = None) -> dict[str, dict]:
    """Rows of a recorded table keyed by config hash: {"config", "metrics", "status",
    "reason"}, in the order of the table's first row of each config. A row that is not an
    object, metrics that are not an object of numbers, and a status other than ok or failed
    are a `ReplayError` naming `file:line`. The table is read in one pass, its configs by a
    `ConfigReader` (100,000 rows of flat configs in a few seconds)."""
    with bulk():
        return _load_table(Path(path), ConfigReader(space))


def _load_table(path: Path, reader: ConfigReader) -> dict[str, dict]:
    space = reader.space
    if not path.is_file():
        raise ReplayError(f"{path}: no such replay table")
    rows: dict[str, dict] = {}
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            records = list(enumerate(csv.DictReader(handle), start=2))
        described = space.describe() if space else []
        knobs = {name for name, scope, _ in described if scope in ("global", "shared")}
        parsed = []
        for line, record in records:
            if "config" in record:
                config, metrics = record.pop("config"), record
            else:
                config = {k: _flat_value(v) for k, v in record.items() if _is_knob(k, knobs)}
                metrics = {k: v for k, v in record.items() if not _is_knob(k, knobs)}
            parsed.append((line, {"config": config, "metrics": metrics}))
    else:
        parsed = []
        for line, text in enumerate(path.read_text().splitlines(), start=1):
            if text.strip():
                try:
                    parsed.append((line, json.loads(text)))
                except (json.JSONDecodeError, RecursionError) as err:
                    raise ReplayError(f"{path}:{line}: not JSON: {one_line(err)}") from None
    for line, record in parsed:
        where = f"{path}:{line}"
        if not isinstance(record, dict):
            raise ReplayError(
                f'{where}: a row must be an object {{"config": ..., "metrics": {{...}}}}, '
                f"got {_kind(record)}"
            )
        try:
            config = _config_of(record["config"], reader, where)
            metrics = _metrics_of(record.get("metrics", {}), where)
            curves = _rungs_of(record.get("rungs"), where)
            status, reason = record.get("status", "ok"), record.get("reason")
        except ReplayError:
            raise  # already names the row
        except KeyError as err:
            raise ReplayError(f"{where}: missing {err}") from None
        except (ConfigError, ValueError, TypeError, AttributeError) as err:
            raise ReplayError(f"{where}: {one_line(err)}") from None
        if status not in ("ok", "failed"):
            raise ReplayError(f"{where}: status must be 'ok' or 'failed', got {shown(status)}")
        if reason is not None and not isinstance(reason, str):
            raise ReplayError(f"{where}: reason must be a string, got {_kind(reason)}")
        rows[config.hash] = {
            "config": config,
            "metrics": metrics,
            "status": status,
            "reason": reason,
            "rungs": curves,
        }
    return rows


def _rungs_of(value, where: str) -> dict[int, dict[str, float]]:
    """A row's learning curve: `{"18": {metrics}, "54": {...}}`, the metrics after that many
    training steps; a key that is not a positive step count is a `ReplayError`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ReplayError(f"{where}: rungs must be an object of step counts, got {_kind(value)}")
    curves = {}
    for steps, metrics in value.items():
        if not str(steps).isdigit() or int(steps) < 1:
            raise ReplayError(f"{where}: rungs key {shown(steps)} must be a positive step count")
        curves[int(steps)] = _metrics_of(metrics, f"{where}: rungs[{steps}]")
    return curves


def _kind(value) -> str:
    """'a list', 'a string', ... for a message about a JSON value of the wrong type."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "null")


def _metrics_of(value, where: str) -> dict[str, float]:
    """A row's metrics: an object from names to numbers (an empty cell or null is left out);
    anything else is a `ReplayError` naming the row and the metric."""
    if not isinstance(value, dict):
        raise ReplayError(f"{where}: metrics must be an object of numbers, got {_kind(value)}")
    metrics = {}
    for name, number in value.items():
        if number in ("", None):
            continue
        if isinstance(number, bool) or not isinstance(number, int | float | str):
            raise ReplayError(
                f"{where}: metric {shown(name)} must be a number, got {_kind(number)}"
            )
        try:
            metrics[str(name)] = _number(number)
        except (ValueError, OverflowError):
            raise ReplayError(
                f"{where}: metric {shown(name)} must be a number, got {shown(number)}"
            ) from None
    return metrics


def _is_knob(column: str, knobs: set[str]) -> bool:
    return column in knobs or column.startswith("layer") and "." in column


def _flat_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


class ReplayEvaluator:
    """Answers each submitted config from a recorded table; same API as `RayPool`.

    After `follow_rungs(steps)` it answers a multi-fidelity search: a key `"12@1"` (trial 12,
    rung 1) gets the metrics the table records after `steps[1]` training steps (a row's
    `"rungs"`: its learning curve), with the report's `rung` and `steps` set as
    `FidelityJob`'s are."""

    def __init__(
        self,
        table: str | Path,
        space: DesignSpace | None = None,
        noise: float = 0.0,
        seed: int = 0,
        slots: int = 1,
        delay: float = 0.0,
    ):
        self.table = Path(table)
        self.rows = load_table(table, space)
        self.noise = noise
        self.seed = seed
        self.slots = slots
        self.delay = delay  # simulated seconds per trial, so drivers can be tested mid-search
        self.calls = 0
        self.done: list[tuple[float, dict]] = []
        self.rungs: tuple[int, ...] | None = None

    def follow_rungs(self, steps: tuple[int, ...]) -> None:
        """Answer rung keys from learning curves recorded at `steps`. Only the rows that
        record every one of them are kept (a search then picks among those); a table with
        none is refused with one line."""
        kept = {h: row for h, row in self.rows.items() if all(s in row["rungs"] for s in steps)}
        if not kept:
            recorded = sorted({s for row in self.rows.values() for s in row["rungs"]})
            have = f"it records curves at {recorded} steps" if recorded else "it has no curves"
            raise ReplayError(
                f"{self.table}: a multi-fidelity replay needs each row's metrics at the rungs "
                f'{list(steps)} steps ("rungs" of a row); {have}'
            )
        self.rows, self.rungs = kept, tuple(steps)

    def configs(self) -> list[ArchConfig]:
        """The configs the table records, in the order of their first rows: the pool of a
        search whose pool file is this table, without reading it again."""
        return [row["config"] for row in self.rows.values()]

    def search_pool(
        self, space: DesignSpace, pool: list[ArchConfig] | None = None
    ) -> list[ArchConfig] | None:
        """The configs a search of `space` on this table picks from (None: any of the space).

        With `pool`, the pool; refused (`ReplayError`) if the table records none of it. Without
        one, None when the table records every config of the space (a benchmark's full table,
        NAS-Bench-201's: the sampler stays free, as a comparison of samplers needs); else the
        recorded configs that are points of the space, so that the sampler never proposes a
        config the table cannot answer (every trial would fail `not_recorded`); refused if
        there are none.
        """
        if pool is not None:
            if not any(config.hash in self.rows for config in pool):
                raise ReplayError(
                    f"the replay table answers none of the {len(pool)} configs of the pool; "
                    "give a pool drawn from the table, or no --pool to search the table's configs"
                )
            return pool
        recorded = [row["config"] for row in self.rows.values() if space.contains(row["config"])]
        if not recorded:
            raise ReplayError(
                f"the replay table records none of the configs of space {space.name!r} "
                f"({len(self.rows)} rows); give the space it was recorded on (--space)"
            )
        return None if len(recorded) >= space.size() else recorded

    def answer(self, key: str, config: ArchConfig) -> dict:
        row = self.rows.get(config.hash)
        if row is None:
            message = f"config {config.short_hash} is not in the replay table"
            return failed(key, config, "not_recorded", message)
        rung = None
        if self.rungs is not None:
            rung = int(key.rpartition("@")[2])
            metrics = dict(row["rungs"][self.rungs[rung]])
        else:
            metrics = dict(row["metrics"])
        if self.noise:
            self.calls += 1
            digest = hashlib.sha256(f"{self.seed}:{config.hash}:{self.calls}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            metrics = {k: v * (1 + self.noise * rng.standard_normal()) for k, v in metrics.items()}
        if row["status"] != "ok":
            message = f"recorded as failed: {row['reason']}"
            report = failed(key, config, row["reason"] or "error", message)
        else:
            report = ok_report(key, config, metrics)
        if rung is not None:
            report |= {"rung": rung, "steps": self.rungs[rung]}
        return report

    def submit(self, key: str, config: ArchConfig) -> None:
        self.done.append((time.monotonic() + self.delay, self.answer(key, config)))

    def pending(self) -> int:
        return len(self.done)

    def collect(self, timeout: float | None = None) -> list[dict]:
        """Reports whose simulated time is up, waiting for the first up to `timeout`."""
        if self.done:
            first = min(ready for ready, _ in self.done)
            wait = first - time.monotonic()
            if timeout is not None:
                wait = min(wait, timeout)
            if wait > 0:
                time.sleep(wait)
        now = time.monotonic()
        reports = [report for ready, report in self.done if ready <= now]
        self.done = [(ready, report) for ready, report in self.done if ready > now]
        return reports

    def close(self) -> None:
        self.done = []


def write_table(path: str | Path, rows: list[tuple[ArchConfig, dict]]) -> None:
    """Write (config, report) pairs as a JSONL replay table; a report's `rungs` (metrics by
    training steps) becomes the row's learning curve."""
    with Path(path).open("w") as handle:
        for config, report in rows:
            record = {
                "config": config.to_dict(),
                "metrics": report["metrics"],
                "status": report["status"],
                "reason": report["reason"],
            }
            if report.get("rungs"):
                record["rungs"] = {str(steps): m for steps, m in report["rungs"].items()}
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def parse_replay(spec: str, space: DesignSpace | None = None, **defaults) -> ReplayEvaluator:
    """`replay:TABLE[,noise=0.01][,delay=0.2][,slots=2]` as the CLI's `--evaluator` takes it."""
    kind, _, rest = spec.partition(":")
    table, *options = rest.split(",")
    if kind != "replay" or not table:
        raise ReplayError(f"evaluator {spec!r} must be replay:TABLE[,noise=X][,delay=S]")
    settings = dict(defaults)
    for option in options:
        name, _, value = option.partition("=")
        if name not in ("noise", "delay", "slots", "seed") or not value:
            raise ReplayError(f"evaluator option {option!r}: valid are noise, delay, slots, seed")
        try:
            number = int(value) if name in ("slots", "seed") else float(value)
        except ValueError:
            number = None
        least = 1 if name == "slots" else 0
        if number is None or not math.isfinite(number) or number < least:
            kind = "an integer" if name in ("slots", "seed") else "a finite number"
            raise ReplayError(
                f"evaluator option {option!r}: {name} must be {kind} of at least {least}"
            )
        settings[name] = number
    return ReplayEvaluator(table, space, **settings)
