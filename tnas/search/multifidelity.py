"""The multi-fidelity driver: every trial trains in rungs, and only the best go on (MO-ASHA).

`--fidelity steps --min-steps 100 --max-steps 2700 --eta 3` trains each new config to the first
rung (100 steps), reports its metrics there, and promotes it to the next rung (300, 900, 2700)
only while it ranks in the top 1/eta of the results its rung has seen so far, by non-dominated
sorting with ties broken by hypervolume contribution (`tnas.search.fidelity.AshaScheduler`).
Promotions come first, asynchronously: a free worker takes the best promotable trial, else
starts a new config, and never waits for a rung to fill. A promoted trial continues from its
rung checkpoint on any worker (`tnas.workers.backend.FidelityJob`), with the learning rate
schedule of the top rung, so a trial that reaches the top equals a full-budget trial.

One Optuna trial per config. It stays RUNNING while it trains or waits at a rung; its metrics
at each rung are stored in the trial attribute `rungs` (`{"100": {...}, "300": {...}}`) and the
rung it was last sent to in `rung_target`. A trial that reaches the top rung is told COMPLETE,
so the front and its hypervolume count top-rung trials only. When the search ends, trials
still waiting below the top are told PRUNED with their last rung's values (what Optuna's
single-objective pruners do), and their checkpoints deleted. The budget (`trials`) counts the
configs started.

A driver that is interrupted (Ctrl-C, SIGTERM, a timeout) leaves its trials RUNNING with their
checkpoints; `tnas search resume` adopts them: the scheduler is rebuilt from the stored rungs,
pending promotions are sent again to their rung, and the search goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tnas.search.driver import DRIVER_ATTR, SearchDriver
from tnas.search.fidelity import AshaScheduler, Record, Rungs
from tnas.search.reference import usable_metric

RUNGS_ATTR = "rungs"  # trial attribute: {str(steps): metrics} of each rung reached
TARGET_ATTR = "rung_target"  # trial attribute: the rung the trial was last sent to


def rung_key(number: int, rung: int) -> str:
    """The evaluator key of trial `number` at `rung`, as `FidelityJob` reads it: `"12@1"`."""
    return f"{number}@{rung}"


@dataclass
class FidelityDriver(SearchDriver):
    """A `SearchDriver` whose trials train in `rungs`; `discard(trial_key, config_hash)` deletes
    a stopped trial's checkpoint (the job's `discard`), and `live` holds the heartbeat ids of
    other live drivers, whose RUNNING trials are theirs, not this driver's to adopt."""

    rungs: Rungs | None = None
    discard: Callable[[str, str], object] | None = None
    live: set[str] = field(default_factory=set)

    def __post_init__(self):
        super().__post_init__()
        directions = [objective.direction for objective in self.objectives]
        self.scheduler = AshaScheduler(self.rungs, directions)
        self.waiting: dict[int, tuple[object, object]] = {}  # number -> (trial, config)
        self.resend: list[tuple[int, int]] = []  # adopted (number, rung) to send again
        self.started = 0  # configs started in the study, by any run
        self.pruned = 0
        self.stopped_configs: set[str] = set()
        self.used_up = False
        self.adopt()

    def adopt(self) -> None:
        """Rebuild the scheduler from the study's stored rungs; take over the RUNNING rung
        trials of drivers that are gone (a resume) and queue what they had pending."""
        from optuna.trial import Trial, TrialState

        from tnas.space import ArchConfig

        records, stopped = [], []
        for frozen in self.study.get_trials(deepcopy=False):
            attrs = frozen.user_attrs
            if TARGET_ATTR not in attrs:
                continue
            self.started += 1
            reached = -1
            for steps, metrics in (attrs.get(RUNGS_ATTR) or {}).items():
                rung = self.rungs.rung_of(int(steps))
                values = [metrics.get(o.name) for o in self.objectives]
                if all(usable_metric(v) for v in values):
                    records.append(Record(frozen.number, rung, [float(v) for v in values]))
                    reached = max(reached, rung)
            if frozen.state != TrialState.RUNNING:
                stopped.append(frozen.number)
                self.pruned += frozen.state == TrialState.PRUNED
                self.stopped_configs.add(attrs.get("config_hash"))
                continue
            if attrs.get(DRIVER_ATTR) in self.live:
                stopped.append(frozen.number)  # another live driver's: not ours to promote
                continue
            target = attrs[TARGET_ATTR]
            trial = Trial(self.study, frozen._trial_id)
            if self.driver_id:
                trial.set_user_attr(DRIVER_ATTR, self.driver_id)
            self.waiting[frozen.number] = (trial, ArchConfig.from_dict(attrs["config"]))
            if target > reached:  # sent, its result never came: send it again
                if target > 0:
                    records.append(Record(frozen.number, target, None))
                self.resend.append((frozen.number, target))
        self.scheduler = AshaScheduler.from_records(
            self.rungs, self.scheduler.directions, records, stopped
        )

    def send(self, number: int, rung: int) -> None:
        trial, config = self.waiting.pop(number)
        trial.set_user_attr(TARGET_ATTR, rung)
        key = rung_key(number, rung)
        self.evaluator.submit(key, config)
        self.in_flight[key] = (trial, config)

    def fill(self, deadline: float | None) -> None:
        """Send pending and promoted trials on first, best first; then start new configs
        while the budget of started configs allows."""
        wasted = 0
        while len(self.in_flight) < self.evaluator.slots and not self.interrupted.is_set():
            if self.resend:
                self.send(*self.resend.pop(0))
                continue
            promotion = self.scheduler.next_promotion()
            if promotion is not None:
                number = promotion[0]
                self.send(number, self.scheduler.promote(number))
                continue
            if self.started >= self.n_trials or self.used_up or not self.may_ask(deadline, wasted):
                return
            values, running, *_ = self.recorded()
            started = self.start_new(values, running | self.stopped_configs, key="{number}@0")
            if started is None:  # the pool is used up: promotions only from now on
                self.used_up = True
                return
            if started:
                self.in_flight[started][0].set_user_attr(TARGET_ATTR, 0)
                self.started += 1
            wasted = 0 if started else wasted + 1

    def record(self, report: dict) -> None:
        """A rung's result: stored in `rungs` and reported to the scheduler; at the top rung,
        or on a failure, the trial is told its outcome as any trial is."""
        number, _, rung_text = report["key"].partition("@")
        number, rung = int(number), int(rung_text)
        trial, config = self.in_flight[report["key"]]
        metrics = report.get("metrics") or {}
        values = [metrics.get(o.name) for o in self.objectives]
        usable = report["status"] == "ok" and all(usable_metric(v) for v in values)
        if usable:
            stored = dict(trial.user_attrs.get(RUNGS_ATTR) or {}) if rung else {}
            stored[str(report.get("steps", self.rungs.steps[rung]))] = metrics
            trial.set_user_attr(RUNGS_ATTR, stored)
            self.scheduler.report(number, rung, [float(v) for v in values])
        if usable and rung < self.rungs.top:
            self.in_flight.pop(report["key"])
            for name in ("metrics", "curve", "fingerprint", "timings", "attempts", "latency"):
                trial.set_user_attr(name, report.get(name))
            self.waiting[number] = (trial, config)
            return
        if not usable:
            self.scheduler.stop(number)
            self.discard_checkpoint(number, config)
        super().record(report)  # the top rung: COMPLETE; a failure: FAIL, with its reason

    def discard_checkpoint(self, number: int, config) -> None:
        if self.discard is not None:
            self.discard(str(number), config.hash)

    def fail_in_flight(self, reason: str) -> None:
        """Interrupted or out of time: trials in flight stay RUNNING with their checkpoints,
        for `resume` to send again; other reasons fail them as any driver does."""
        if reason in ("interrupted", "search_timeout"):
            self.in_flight.clear()
            return
        super().fail_in_flight(reason)

    def prune_paused(self) -> None:
        """The search is over: each trial waiting below the top rung is told PRUNED with its
        last rung's values, and its checkpoint deleted."""
        from optuna.trial import TrialState

        storage = self.study._storage
        for number in self.scheduler.paused():
            if number not in self.waiting:
                continue
            trial, config = self.waiting.pop(number)
            scheduler = self.scheduler
            values = list(scheduler.results[scheduler.rung_of(number)][number])
            frozen = storage.get_trial(trial._trial_id)
            self.study.sampler.after_trial(self.study, frozen, TrialState.PRUNED, values)
            storage.set_trial_state_values(trial._trial_id, TrialState.PRUNED, values)
            self.scheduler.stop(number)
            self.discard_checkpoint(number, config)
            self.pruned += 1

    def snapshot(self) -> None:
        super().snapshot()
        self.progress.finished = self.progress.finished + self.pruned
        self.progress.total = self.n_trials

    def run(self):
        """Search as `SearchDriver.run` does; when the search ends by itself (not interrupted,
        not out of time), the trials still waiting at a rung are pruned."""
        progress = super().run()
        if not self.interrupted.is_set() and "timeout" not in progress.stopped:
            self.prune_paused()
            self.snapshot()
            if self.on_update:
                self.on_update(self.progress)
            progress.stopped = (
                f"{self.started} configs started, {self.progress.front_size} on the top-rung "
                f"front; {self.scheduler.trained_steps():,} training steps"
            )
        return progress


def rung_rows(trials, rungs: Rungs, objectives, rung: int) -> list[dict]:
    """The trials that reached `rung` with their objective values there: what
    `tnas pareto --rung N` ranks."""
    steps = str(rungs.steps[rung])
    rows = []
    for trial in trials:
        metrics = (trial.user_attrs.get(RUNGS_ATTR) or {}).get(steps)
        if metrics is None:
            continue
        values = [metrics.get(o.name) for o in objectives]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            rows.append({"number": trial.number, "values": values})
    return rows
