"""Where a study's latency comes from: `--latency [NAME=]measured|node:RESOURCE|table:FILE`.

- `measured` (the default, named `local`): profiled on the worker that trained the trial.
- `node:RESOURCE` (named RESOURCE): training runs on any worker; the trained weights go through
  Ray's object store to a node that offers the custom resource RESOURCE (a device joined to
  the cluster with `ray start --resources '{"rpi5": 1}'`), which profiles the model
  (`tnas.workers.target`).
- `table:FILE` (named after the file): predicted from a calibrated latency table
  (`tnas predictors calibrate`), for a device that cannot join the cluster. Its values are
  stored as predictions, with the table's device and calibration date.

Each source reports `latency_ms@NAME`; the first source also reports plain `latency_ms` (and,
when it is measured, the profile's other metrics: `peak_mem_mb`, `model_bytes`, ...), so a
study searches one device's latency with `latency_ms:min`, or several at once with
`latency_ms@local:min latency_ms@rpi5:min`. Every source measures under the study's one
protocol (profile batch, sequence length, repeats, warm-up, threads); a table calibrated under
another is refused.

>>> [s.metric for s in parse_sources(["measured", "rpi5=node:rpi5", "table:edge.json"])]
['latency_ms@local', 'latency_ms@rpi5', 'latency_ms@edge']
>>> parse_sources(["node:"])
Traceback (most recent call last):
...
ValueError: --latency 'node:' must be [NAME=]measured, node:RESOURCE or table:FILE
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

KINDS = ("measured", "node", "table")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
METRIC = "latency_ms"


@dataclass(frozen=True)
class LatencySource:
    """One latency source: its `name` (the `@NAME` of its metric), `kind` (measured, node or
    table) and `target` (the Ray resource of a node, the file of a table)."""

    name: str
    kind: str
    target: str | None = None

    @property
    def metric(self) -> str:
        return f"{METRIC}@{self.name}"

    @property
    def text(self) -> str:
        spec = self.kind if self.target is None else f"{self.kind}:{self.target}"
        return f"{self.name}={spec}"

    @property
    def predicted(self) -> bool:
        return self.kind == "table"


def parse_source(text: str) -> LatencySource:
    """One `--latency` value; a one-line `ValueError` for anything else."""
    text = str(text).strip()
    name, equals, spec = text.partition("=")
    if not equals:
        name, spec = "", text
    kind, _, target = spec.partition(":")
    bad = ValueError(f"--latency {text!r} must be [NAME=]measured, node:RESOURCE or table:FILE")
    if kind == "measured" and not target:
        source = LatencySource(name or "local", "measured")
    elif kind == "node" and NAME.fullmatch(target):
        source = LatencySource(name or target, "node", target)
    elif kind == "table" and target:
        source = LatencySource(name or Path(target).stem, "table", target)
    else:
        raise bad
    if not NAME.fullmatch(source.name):
        raise ValueError(
            f"--latency {text!r}: the name {source.name!r} must be letters, digits, _ . - "
            "(give one: NAME=" + spec + ")"
        )
    return source


def parse_sources(texts: Sequence[str]) -> list[LatencySource]:
    """The sources of a run, in order (the first is plain `latency_ms`'s); two with one name
    are refused."""
    sources = [parse_source(text) for text in texts] or [LatencySource("local", "measured")]
    seen: dict[str, str] = {}
    for source, text in zip(sources, texts or ["measured"], strict=True):
        if source.name in seen:
            raise ValueError(
                f"--latency {seen[source.name]!r} and {text!r} have one name, {source.name!r}; "
                "name them apart: NAME=..."
            )
        seen[source.name] = text
    return sources


def metric_names(sources: Sequence[LatencySource]) -> set[str]:
    """The latency metrics the sources report: `latency_ms@NAME` each, and `latency_ms`."""
    return {source.metric for source in sources} | {METRIC}


def predicted_metrics(sources: Sequence[LatencySource]) -> dict[str, LatencySource]:
    """The metrics whose values are predictions, with their table source."""
    predicted = {s.metric: s for s in sources if s.predicted}
    if sources and sources[0].predicted:
        predicted[METRIC] = sources[0]
    return predicted


__all__ = [
    "LatencySource",
    "metric_names",
    "parse_source",
    "parse_sources",
    "predicted_metrics",
]
