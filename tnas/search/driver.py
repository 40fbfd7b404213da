"""The search driver: Optuna's ask/tell over an evaluator, with the Pareto front in the database.

As many trials are in flight as the evaluator has slots. A config already evaluated in the
study (same hash, by any driver) is not evaluated again: the trial is told the recorded values
and marked `duplicate_of`. Constraints over derived quantities (`params <= 2e6`) are checked
before anything is trained: an infeasible suggestion is told failed (`infeasible`) and does not
count against the budget; every trial also hands its constraint values to the sampler through
`Trial.set_constraint`. Each time the front changes, a snapshot is stored.

The database calls ride out a PostgreSQL restart (the `Database` retries them); a database
that stays unusable (gone past the retry time, a read-only or full SQLite file) ends the run
with a one-line `StorageError`, leaving the study as the last successful write left it, so
`tnas search resume` continues it once the database is back.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tnas.predictors import encode
from tnas.search.db import StorageError
from tnas.search.evaluator import Evaluator
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.search.settings import NOT_EVALUATED, Objective
from tnas.space import ArchConfig, DesignSpace
from tnas.space.constraints import Constraint

# Consecutive suggestions that are infeasible or already evaluated before the driver gives up.
MAX_WASTED_ASKS = 200


@dataclass
class Progress:
    """What the progress bar shows: the study, its budget, and how far it has come."""

    study: str = ""
    total: int = 0  # the trial budget
    requeued: int | None = None  # orphaned trials re-queued, when this run is a resume
    finished: int = 0  # evaluated trials, completed or failed
    failed: int = 0
    duplicates: int = 0
    infeasible: int = 0
    in_flight: int = 0
    front_size: int = 0
    hypervolume: float = 0.0
    stopped: str = ""  # why the loop ended


@dataclass
class Member:
    number: int
    config_hash: str
    config: dict
    values: list[float]


@dataclass
class SearchDriver:
    """Runs one study to `n_trials` evaluated trials (counting earlier runs of the study)."""

    study: object  # optuna.Study
    space: DesignSpace
    evaluator: Evaluator
    objectives: list[Objective]
    db: object  # tnas.search.db.Database
    n_trials: int
    timeout: float | None = None
    constraints: list[Constraint] = field(default_factory=list)  # over derived quantities
    pool: list[ArchConfig] | None = None
    on_update: Callable[[Progress], None] | None = None
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self):
        self.in_flight: dict[str, tuple[object, ArchConfig]] = {}
        self.interrupted = threading.Event()
        self.front_numbers: frozenset[int] = frozenset()
        self.progress.study, self.progress.total = self.study.study_name, self.n_trials

    def feasible(self, config: ArchConfig) -> bool:
        quantities = config.derived()
        return self.space.feasible(config) and all(c.holds(quantities) for c in self.constraints)

    def constraint_values(self, config: ArchConfig) -> dict[str, float]:
        """The space's and the run's constraints by text, Optuna's convention (<= 0 feasible)."""
        quantities = config.derived()
        space = zip(self.space.constraints, self.space.constraint_values(config), strict=True)
        return {text: float(value) for text, value in space} | {
            c.text: float(c.value(quantities)) for c in self.constraints
        }

    def recorded(self) -> tuple[dict[str, list[float]], set[str], list[Member], int, int]:
        """From storage: values by config hash, hashes in flight anywhere, the completed
        evaluated trials, and the counts of evaluated and failed trials."""
        from optuna.trial import TrialState

        values: dict[str, list[float]] = {}
        running: set[str] = set()
        members: list[Member] = []
        evaluated = failed = 0
        for trial in self.study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            digest = attrs.get("config_hash")
            if trial.state == TrialState.RUNNING and digest:
                running.add(digest)
            elif trial.state == TrialState.COMPLETE and "duplicate_of" not in attrs:
                evaluated += 1
                values[digest] = list(trial.values)
                members.append(
                    Member(trial.number, digest, attrs.get("config", {}), list(trial.values))
                )
            elif trial.state == TrialState.FAIL and attrs.get("reason") not in NOT_EVALUATED:
                evaluated += 1
                failed += 1
        return values, running, members, evaluated, failed

    def claimed_elsewhere(self, config_hash: str, number: int) -> bool:
        """Whether another trial holds the same config, running or done. Each driver writes its
        claim before it reads the others', so of two drivers that pick one config at once at
        least one sees the other and yields; never both go on."""
        from optuna.trial import TrialState

        return any(
            trial.number != number
            and trial.user_attrs.get("config_hash") == config_hash
            and "duplicate_of" not in trial.user_attrs
            and trial.state in (TrialState.RUNNING, TrialState.COMPLETE)
            for trial in self.study.get_trials(deepcopy=False)
        )

    def nearest_unevaluated(self, config: ArchConfig, taken: set[str]) -> ArchConfig | None:
        """The pool member closest to `config` in the space's encoding, not yet evaluated."""
        candidates = [c for c in self.pool if c.hash not in taken]
        if not candidates:
            return None
        target = encode(self.space, config)
        distances = [float(np.sum((encode(self.space, c) - target) ** 2)) for c in candidates]
        return candidates[int(np.argmin(distances))]

    def fill(self, deadline: float | None) -> None:
        """Ask for trials until every slot is busy, the budget is met, or time is up."""
        from optuna.trial import TrialState

        wasted = 0
        while len(self.in_flight) < self.evaluator.slots and not self.interrupted.is_set():
            values, running, _, evaluated, _ = self.recorded()
            if evaluated + len(self.in_flight) >= self.n_trials:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if wasted >= MAX_WASTED_ASKS:
                self.progress.stopped = (
                    f"{MAX_WASTED_ASKS} suggestions in a row were infeasible or already evaluated"
                )
                return
            trial = self.study.ask()
            config = self.space.suggest(trial)
            if self.pool is not None:
                mapped = self.nearest_unevaluated(config, set(values) | running)
                if mapped is None:
                    self.study.tell(trial, state=TrialState.FAIL)
                    self.progress.stopped = "every config of the pool has been evaluated"
                    return
                config = mapped
            trial.set_user_attr("config", config.to_dict())
            trial.set_user_attr("config_hash", config.hash)
            for name, value in self.constraint_values(config).items():
                trial.set_constraint(name, value)
            if not self.feasible(config):
                trial.set_user_attr("reason", "infeasible")
                self.study.tell(trial, state=TrialState.FAIL)
                self.progress.infeasible += 1
                wasted += 1
            elif config.hash in values:
                trial.set_user_attr("duplicate_of", config.hash)
                self.study.tell(trial, values[config.hash])
                self.progress.duplicates += 1
                wasted += 1
            elif config.hash in running or self.claimed_elsewhere(config.hash, trial.number):
                trial.set_user_attr("reason", "duplicate_in_flight")
                trial.set_user_attr("duplicate_of", config.hash)
                self.study.tell(trial, state=TrialState.FAIL)
                self.progress.duplicates += 1
                wasted += 1
            else:
                self.evaluator.submit(str(trial.number), config)
                self.in_flight[str(trial.number)] = (trial, config)
                wasted = 0

    def record(self, report: dict) -> None:
        """Store a report with its trial and tell Optuna the outcome."""
        from optuna.trial import TrialState

        trial, _ = self.in_flight.pop(report["key"])
        metrics = report.get("metrics") or {}
        for name in ("metrics", "curve", "fingerprint", "timings", "attempts", "reason", "error"):
            trial.set_user_attr(name, report.get(name))
        if report.get("node_ip"):
            trial.set_user_attr("node_ip", report["node_ip"])
        values = [metrics.get(o.name) for o in self.objectives]
        usable = all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        if report["status"] == "ok" and not usable:
            missing = [o.name for o, v in zip(self.objectives, values, strict=True) if v is None]
            trial.set_user_attr("reason", "missing_metric")
            trial.set_user_attr("error", f"the evaluator reported no {', '.join(missing)}")
        if report["status"] == "ok" and usable:
            self.study.tell(trial, [float(v) for v in values])
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def snapshot(self) -> None:
        """Store the front if its membership changed; update the progress figures."""
        _, _, members, evaluated, failed = self.recorded()
        self.progress.finished, self.progress.failed = evaluated, failed
        self.progress.in_flight = len(self.in_flight)
        if not members:
            return
        directions = [o.direction for o in self.objectives]
        points = to_minimization(np.array([m.values for m in members], dtype=float), directions)
        front = [members[i] for i in pareto_front(points)]
        numbers = frozenset(m.number for m in front)
        reference = reference_point(points)
        volume = hypervolume(points[pareto_front(points)], reference)
        self.progress.front_size, self.progress.hypervolume = len(front), volume
        if numbers == self.front_numbers:
            return
        self.front_numbers = numbers
        self.db.save_snapshot(
            self.study.study_name,
            [o.to_dict() for o in self.objectives],
            len(members),
            volume,
            [float(x) for x in reference],
            [
                {
                    "trial_number": m.number,
                    "config_hash": m.config_hash,
                    "config": m.config,
                    "values": m.values,
                }
                for m in front
            ],
        )

    def fail_in_flight(self, reason: str) -> None:
        from optuna.trial import TrialState

        for trial, _ in self.in_flight.values():
            trial.set_user_attr("reason", reason)
            self.study.tell(trial, state=TrialState.FAIL)
        self.in_flight.clear()

    def run(self) -> Progress:
        """Search until the budget, the timeout, or nothing new to try.

        Ctrl-C (SIGINT) stops cleanly: the signal only sets a flag, checked between Optuna
        calls, so no trial is left half-written; in-flight trials are marked failed
        (`interrupted`), `progress.stopped` says "interrupted", and the study can be resumed.
        A `StorageError` is raised as it is, with no last write attempted.
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda *_: self.interrupted.set())
        storage_failed = False
        try:
            self.snapshot()
            while not self.interrupted.is_set():
                self.fill(deadline)
                if not self.in_flight:
                    break
                for report in self.evaluator.collect(timeout=1.0):
                    self.record(report)
                self.snapshot()
                if self.on_update:
                    self.on_update(self.progress)
                if deadline is not None and time.monotonic() >= deadline:
                    self.fail_in_flight("search_timeout")
                    self.progress.stopped = f"the {self.timeout:g} s search timeout passed"
                    break
            if self.interrupted.is_set():
                self.fail_in_flight("interrupted")
                self.progress.stopped = "interrupted"
        except StorageError:
            storage_failed = True  # the database is unusable: another write would fail too
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if not storage_failed:
                self.snapshot()
                if self.on_update:
                    self.on_update(self.progress)
        if not self.progress.stopped:
            self.progress.stopped = f"{self.progress.finished} trials evaluated"
        return self.progress
