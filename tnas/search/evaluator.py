"""The small protocol through which the search talks to whatever evaluates configs.

`tnas.workers` implements it three ways (a Ray pool, a direct call, a replay table); the search
never imports them. A report is a plain dict; the keys the driver reads are `key`, `status`
("ok" or "failed"), `reason`, `error`, `metrics`, and it stores `curve`, `fingerprint`,
`timings` and `attempts` with the trial.
"""

from __future__ import annotations

from typing import Protocol

from tnas.space.config import ArchConfig


class Evaluator(Protocol):
    slots: int  # trials it runs at once

    def submit(self, key: str, config: ArchConfig) -> None: ...

    def collect(self, timeout: float | None = None) -> list[dict]: ...

    def close(self) -> None: ...
