"""The search driver: Optuna's ask/tell over an evaluator, with the Pareto front in the database.

As many trials are in flight as the evaluator has slots. A config already evaluated in the
study (same hash, by any driver) is not evaluated again: the trial is told the recorded values
and marked `duplicate_of`. Constraints over derived quantities (`params <= 2e6`) are checked
before anything is trained: an infeasible suggestion is told failed (`infeasible`) and does not
count against the budget; every trial also hands its constraint values to the sampler through
`Trial.set_constraint`. Each time the front changes, a snapshot is stored.

A trial's attributes are written in one transaction when it starts (its config, hash, driver
and constraint values: the claim) and one when its report comes (`store`), then it is told:
three commits per trial, where one per attribute was made before (`bench/driver.py`).

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
from tnas.search.db.session import set_trial_user_attrs
from tnas.search.evaluator import Evaluator
from tnas.search.nearest import PoolIndex
from tnas.search.pareto import hypervolume, pareto_front, reference_point, to_minimization
from tnas.search.settings import Objective
from tnas.search.view import Member, StudyView
from tnas.space import ArchConfig, DesignSpace
from tnas.space.constraints import Constraint
from tnas.space.errors import OneLineError

DEVICE_ATTR = "tnas_device"  # the study user attribute: the device its latencies come from
DRIVER_ATTR = "driver"  # the trial user attribute: the heartbeat id of the driver running it
# Consecutive suggestions that are infeasible or already evaluated before the driver gives up.
MAX_WASTED_ASKS = 200
# A read of the study this recent, with no write of the driver since, is not made again.
VIEW_REUSE_S = 0.1


class RunError(OneLineError):
    """A run that cannot start or go on; one line, naming the problem."""


def device_text(fingerprint: dict) -> str:
    """A device fingerprint in a few words: `cpu (Intel Xeon ..., id 3f2a...)`."""
    model = fingerprint.get("gpu") or fingerprint.get("cpu") or "unknown"
    return f"{fingerprint.get('device', '?')} ({model}, id {fingerprint.get('id')})"


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
    allow_mixed_devices: bool = False
    driver_id: str = ""  # this driver's heartbeat id, recorded with each trial it runs

    def __post_init__(self):
        self.in_flight: dict[str, tuple[object, ArchConfig]] = {}
        self.view = StudyView(self.study)  # the study's trials, read incrementally
        # When `recorded` or `claimed_elsewhere` last read the study; None once this driver
        # writes to it (`store`, `start_new`, `record`, `fail_in_flight`).
        self.view_read_at: float | None = None
        self.failed_configs: set[str] = self.view.failed_configs
        self.pool_index: PoolIndex | None = None  # the pool encoded, made at its first use
        self.interrupted = threading.Event()
        self.refusal = ""  # why the study refuses to go on (a trial measured elsewhere)
        self.device: dict | None = self.study.user_attrs.get(DEVICE_ATTR)
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

    def store(self, trial, attrs: dict, constraints: dict[str, float] | None = None) -> None:
        """Set a running trial's user attributes, and its constraint values as
        `Trial.set_constraint` does, in one transaction (`set_trial_user_attrs`): one commit
        where one per attribute was made before. `trial.user_attrs` shows them, as after
        `set_user_attr`."""
        from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

        system_attrs = {}
        for name, value in (constraints or {}).items():
            if math.isnan(value):  # as `set_constraint` refuses it
                raise ValueError(f"constraint {name!r} is NaN: not allowed")
            system_attrs[f"{_CONSTRAINTS_KEY}:{name}"] = float(value)
        self.view_read_at = None
        set_trial_user_attrs(self.study._storage, trial._trial_id, attrs, system_attrs)
        trial._cached_frozen_trial.user_attrs.update(attrs)
        trial._cached_frozen_trial.system_attrs.update(system_attrs)

    def recorded(self) -> tuple[dict[str, list[float]], set[str], list[Member], int, int]:
        """From storage: values by config hash, hashes in flight anywhere, the completed
        evaluated trials, and the counts of evaluated and failed trials. The hashes of configs
        whose evaluation failed are kept in `failed_configs`: a pool search does not pick them
        again. Only the trials new or unfinished since the last call are read (`StudyView`);
        the values and members are the view's own: not to be changed.

        The study is not read again when this driver read it less than `VIEW_REUSE_S` ago and
        has written nothing since (`fill` right after `snapshot`): that read would only add
        what other drivers wrote in between, as a read a moment later misses what they write
        next. What a driver must see, another's claim, `claimed_elsewhere` always reads."""
        view = self.view
        now = time.monotonic()
        if self.view_read_at is None or now - self.view_read_at >= VIEW_REUSE_S:
            view.refresh()
            self.view_read_at = now
        return view.values, view.running_hashes(), view.members, view.evaluated, view.failed

    def claimed_elsewhere(self, config_hash: str, number: int) -> bool:
        """Whether another trial holds the same config, running or done. Each driver writes its
        claim before it reads the others', so of two drivers that pick one config at once at
        least one sees the other and yields; never both go on. The read is a `refresh` of the
        view, which reads every trial unfinished or new since the last one: a claim written
        before it is seen."""
        now = time.monotonic()
        self.view.refresh()
        self.view_read_at = now
        return bool(self.view.claimed_by(config_hash) - {number})

    def nearest_unevaluated(self, config: ArchConfig, taken: set[str]) -> ArchConfig | None:
        """The pool member closest to `config` in the space's encoding, not yet evaluated:
        the first in pool order of those at the least distance. The pool is encoded once, at
        the first call (`PoolIndex`)."""
        if self.pool_index is None:
            self.pool_index = PoolIndex(self.space, self.pool)
        return self.pool_index.nearest(encode(self.space, config), taken)

    def fill(self, deadline: float | None) -> None:
        """Ask for trials until every slot is busy, the budget is met, or time is up."""
        wasted = 0
        while len(self.in_flight) < self.evaluator.slots and not self.interrupted.is_set():
            values, running, _, evaluated, _ = self.recorded()
            if evaluated + len(self.in_flight) >= self.n_trials:
                return
            if not self.may_ask(deadline, wasted):
                return
            started = self.start_new(values, running)
            if started is None:
                return
            wasted = 0 if started else wasted + 1

    def may_ask(self, deadline: float | None, wasted: int) -> bool:
        """Whether time is left and the sampler has not wasted too many asks in a row (if it
        has, `progress.stopped` says so)."""
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if wasted >= MAX_WASTED_ASKS:
            self.progress.stopped = (
                f"{MAX_WASTED_ASKS} suggestions in a row were infeasible or already evaluated"
            )
            return False
        return True

    def start_new(self, values: dict, running: set[str], key: str = "{number}") -> str | None:
        """Ask the sampler for one config and submit it under `key` (formatted with the trial's
        number), unless it is infeasible, evaluated or in flight already (then the trial is
        told so at once): the key if submitted, "" if wasted, None if the pool is used up."""
        from optuna.trial import TrialState

        self.view_read_at = None  # a write: the new trial
        trial = self.study.ask()
        config = self.space.suggest(trial)
        if self.pool is not None:
            taken = set(values) | running | self.failed_configs
            mapped = self.nearest_unevaluated(config, taken)
            if mapped is None:
                self.study.tell(trial, state=TrialState.FAIL)
                self.progress.stopped = "every config of the pool has been evaluated"
                return None
            config = mapped
        attrs = {"config": config.to_dict()}
        if self.driver_id:
            attrs[DRIVER_ATTR] = self.driver_id
        attrs["config_hash"] = config.hash
        feasible = self.feasible(config)
        if not feasible:
            attrs["reason"] = "infeasible"
        elif config.hash in values:
            attrs["duplicate_of"] = config.hash
        self.store(trial, attrs, self.constraint_values(config))
        if not feasible:
            self.study.tell(trial, state=TrialState.FAIL)
            self.progress.infeasible += 1
            return ""
        if config.hash in values:
            self.study.tell(trial, values[config.hash])
            self.progress.duplicates += 1
            return ""
        if config.hash in running or self.claimed_elsewhere(config.hash, trial.number):
            self.store(trial, {"reason": "duplicate_in_flight", "duplicate_of": config.hash})
            self.study.tell(trial, state=TrialState.FAIL)
            self.progress.duplicates += 1
            return ""
        key = key.format(number=trial.number)
        self.evaluator.submit(key, config)
        self.in_flight[key] = (trial, config)
        return key

    def record(self, report: dict) -> None:
        """Store a report with its trial and tell Optuna the outcome. An objective the report
        lacks fails the trial as `missing_metric`; one that is NaN, infinite or beyond 1e30 in
        magnitude as `bad_metric` (an evaluated failure), its `error` naming the metric and
        value, so that no such value reaches the front or its hypervolume."""
        from optuna.trial import TrialState

        from tnas.search.reference import METRIC_LIMIT

        self.view_read_at = None  # a write
        trial, _ = self.in_flight.pop(report["key"])
        metrics = report.get("metrics") or {}
        names = (
            "metrics",
            "curve",
            "fingerprint",
            "timings",
            "attempts",
            "reason",
            "error",
            "latency",
        )
        attrs = {name: report.get(name) for name in names}
        if report.get("node_ip"):
            attrs["node_ip"] = report["node_ip"]
        values = [metrics.get(o.name) for o in self.objectives]
        named = list(zip(self.objectives, values, strict=True))
        missing = [o.name for o, v in named if v is None]
        bad = [
            f"{o.name}={v!r}"
            for o, v in named
            if v is not None
            and not (isinstance(v, int | float) and math.isfinite(v) and abs(v) <= METRIC_LIMIT)
        ]
        usable = not missing and not bad
        if report["status"] == "ok" and missing:
            attrs["reason"] = "missing_metric"
            attrs["error"] = f"the evaluator reported no {', '.join(missing)}"
        elif report["status"] == "ok" and bad:
            attrs["reason"] = "bad_metric"
            attrs["error"] = (
                f"unusable objective value {', '.join(bad)}: each must be a finite number "
                f"of magnitude <= {METRIC_LIMIT:g}"
            )
        self.store(trial, attrs)
        if report["status"] == "ok" and usable:
            self.study.tell(trial, [float(v) for v in values])
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def snapshot(self) -> None:
        """Store the front if its membership or its reference point changed; update the
        progress figures.

        The hypervolume is measured against the study's frozen reference point
        (`tnas.search.reference`): the run's `ref_point`, frozen before the first trial, else
        one derived from the first completed batch (at least `max(2, slots)` completed trials,
        or all there are once the budget is spent with nothing in flight) and frozen then. Until
        then a provisional point derived from the trials so far is used, and a snapshot is
        stored whenever it moves, so the progress bar and the latest snapshot always agree. A
        study made before reference points were stored gets one frozen here the same way.
        Completed trials with values that are not usable (NaN, infinite, beyond 1e30: recorded
        before `record` refused them) stay off the front. Once the point is frozen, the front
        is the view's (`StudyView.front`): the last front weighed with the trials since.
        """
        from tnas.search.reference import settle_reference

        _, _, _, evaluated, failed = self.recorded()
        self.progress.finished, self.progress.failed = evaluated, failed
        self.progress.in_flight = len(self.in_flight)
        members = self.view.usable  # the completed trials with usable values
        directions = [o.direction for o in self.objectives]
        values = self.view.usable_values()
        first_batch_in = len(members) >= max(2, self.evaluator.slots) or bool(
            members and evaluated >= self.n_trials and not self.in_flight
        )
        try:
            frozen, frozen_now = settle_reference(
                self.study, self.objectives, values, first_batch_in
            )
        except ValueError as err:  # the run's ref_point does not fit the objectives
            raise RunError(str(err)) from None
        if not members:
            return
        if frozen is None:  # provisional: the first batch is not in yet
            points = to_minimization(values, directions)
            reference = reference_point(points)
            front = [members[i] for i in pareto_front(points)]
        else:
            reference = to_minimization(np.asarray(frozen, dtype=float), directions)
            front = self.view.front(directions)  # the last front and the trials since
        numbers = frozenset(m.number for m in front)
        on_front = np.array([m.values for m in front], dtype=float)
        volume = hypervolume(to_minimization(on_front, directions), reference)
        self.progress.front_size, self.progress.hypervolume = len(front), volume
        reference = [float(x) for x in reference]
        if numbers == self.front_numbers:
            if frozen is not None and not frozen_now:
                return  # frozen before this call: this driver's last snapshot used it
            latest = self.db.latest_snapshot(self.study.study_name)
            if latest is not None and list(latest["reference_point"]) == reference:
                return
        self.front_numbers = numbers
        self.db.save_snapshot(
            self.study.study_name,
            [o.to_dict() for o in self.objectives],
            len(members),
            volume,
            reference,
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

    def check_device(self, report: dict) -> None:
        """Keep the study on one measuring device: the first measured trial's device
        fingerprint is stored with the study; a trial measured on another device is failed
        (`other_device`, not counted, so resume can re-run it) and the search stops, unless
        the study allows mixed devices."""
        fingerprint = report.get("fingerprint")
        if report["status"] != "ok" or not isinstance(fingerprint, dict) or "id" not in fingerprint:
            return
        if self.device is None:
            self.device = {key: fingerprint.get(key) for key in ("id", "device", "cpu", "gpu")}
            self.study.set_user_attr(DEVICE_ATTR, self.device)
        elif fingerprint["id"] != self.device["id"] and not self.allow_mixed_devices:
            here = device_text(fingerprint)
            message = (
                f"trial {report['key']} was measured on {here}, but study "
                f"{self.study.study_name!r} measures on {device_text(self.device)}; run its "
                "workers on that device, or launch with --allow-mixed-devices"
            )
            report.update(status="failed", reason="other_device", error=message)
            self.refusal = message
            self.interrupted.set()

    def interrupt(self, *_) -> None:
        """Stop soon (SIGINT, SIGTERM): no new trial; a trial running in this process is cut
        at its next training step if the evaluator can (`interrupt()`)."""
        self.interrupted.set()
        interrupt = getattr(self.evaluator, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def fail_in_flight(self, reason: str) -> None:
        from optuna.trial import TrialState

        self.view_read_at = None  # a write
        for trial, _ in self.in_flight.values():
            self.store(trial, {"reason": reason})
            self.study.tell(trial, state=TrialState.FAIL)
        self.in_flight.clear()

    def run(self) -> Progress:
        """Search until the budget, the timeout, or nothing new to try.

        Ctrl-C (SIGINT) and SIGTERM stop cleanly: the signal sets a flag, checked between
        Optuna calls, so no trial is left half-written, and asks the evaluator to cut a trial
        it runs in this process at its next training step; in-flight trials are marked failed
        (`interrupted`), `progress.stopped` says "interrupted", and `resume` re-runs them.
        A `StorageError` is raised as it is, with no last write attempted; a trial measured on
        another device raises `RunError` once the study is consistent (`check_device`).
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                previous[number] = signal.signal(number, self.interrupt)
        storage_failed = False
        try:
            self.snapshot()
            while not self.interrupted.is_set():
                self.fill(deadline)
                if not self.in_flight:
                    break
                for report in self.evaluator.collect(timeout=1.0):
                    self.check_device(report)
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
            for number, handler in previous.items():
                signal.signal(number, handler)
            if not storage_failed:
                self.snapshot()
                if self.on_update:
                    self.on_update(self.progress)
        if self.refusal:
            raise RunError(self.refusal)
        if not self.progress.stopped:
            self.progress.stopped = f"{self.progress.finished} trials evaluated"
        return self.progress
