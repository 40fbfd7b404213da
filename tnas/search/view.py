"""The search driver's view of its study, kept up to date incrementally.

At every ask the driver needs to know which configs the study has evaluated (by any driver),
which are in flight, which trial holds which config, the completed trials and their front, and
how many trials were evaluated or failed. Reading all of that from every trial at every ask
costs time in proportion to the study. `StudyView.refresh` instead looks only at the trials
that are new since its last refresh and at those that were unfinished then (RUNNING or
WAITING): Optuna refuses to change a finished trial, so nothing else can have changed. The
front of the completed trials is kept the same way: the front of all trials is the front of the
previous front and the new trials.

Optuna's RDB storage sits behind its `_CachedStorage` (`Database.optuna_storage`), which
reads finished trials from the database once; what each refresh still pays for is that
storage's own list of the trials (an index scan and a sort in Optuna, about 1 ms per 3,000
trials on SQLite), not a pass of ours over every trial.

>>> import optuna
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study(directions=["maximize", "minimize"])
>>> view = StudyView(study)
>>> trial = study.ask()
>>> trial.set_user_attr("config_hash", "ab12")
>>> view.refresh()
>>> view.running_hashes(), view.claimed_by("ab12")
({'ab12'}, {0})
>>> _ = study.tell(trial, [0.5, 3.0])
>>> view.refresh()
>>> view.values, view.evaluated, [m.number for m in view.front(["max", "min"])]
({'ab12': [0.5, 3.0]}, 1, [0])
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from tnas.search.pareto import pareto_front, to_minimization
from tnas.search.reference import usable_metric
from tnas.search.settings import NOT_EVALUATED, RERUN


@dataclass
class Member:
    """A completed, evaluated trial: a candidate for the front."""

    number: int
    config_hash: str
    config: dict
    values: list[float]


class StudyView:
    """What the driver knows of a study's trials, read incrementally (`refresh`).

    After `refresh`, as of that moment and counting every driver's trials:
    - `values`: the values of each evaluated config, by config hash (completed trials that
      are not duplicates; of two with one hash, the later-numbered);
    - `running`: the config hash of each RUNNING trial that has one, by trial number;
    - `members`: the completed evaluated trials in trial-number order; `usable`: those whose
      values are all usable (`usable_metric`), and `usable_values()` their values as an array;
    - `evaluated` and `failed`: the counts of evaluated trials (completed, or failed other than
      for a reason in `NOT_EVALUATED`) and of failed ones among them;
    - `failed_configs`: the hashes of the configs whose evaluation failed, but for a reason
      in `RERUN` (a config not profiled, its target device gone, may be tried again).

    The containers are the view's own, updated in place by `refresh`: read them, do not
    change them.
    """

    def __init__(self, study) -> None:
        self.study = study  # optuna.Study
        self.seen = 0  # every trial numbered below this has been read
        self.unfinished: set[int] = set()  # numbers read RUNNING or WAITING: read again
        self.values: dict[str, list[float]] = {}
        self.value_numbers: dict[str, int] = {}  # the trial each entry of `values` came from
        self.running: dict[int, str] = {}
        self.claims: dict[str, set[int]] = {}  # hash -> RUNNING or COMPLETE non-duplicates
        self.open_claims: dict[int, str] = {}  # RUNNING claims: dropped when read again
        self.members: list[Member] = []
        self.usable: list[Member] = []
        self.evaluated = 0
        self.failed = 0
        self.failed_configs: set[str] = set()
        self._usable_values = np.zeros((0, 0))  # rows [0, len(usable)) hold `usable`'s values
        self._front: list[Member] = []
        self._front_directions: list[str] | None = None
        self._pending: list[Member] = []  # usable members not yet weighed for the front

    def refresh(self) -> None:
        """Read the trials that are new or were unfinished at the last refresh."""
        trials = self.study.get_trials(deepcopy=False)  # in trial-number order
        if trials and trials[-1].number == len(trials) - 1:  # numbered 0..n-1, as Optuna does
            by_number = trials
            new = trials[self.seen :]
        else:
            by_number = {trial.number: trial for trial in trials}
            new = [trial for trial in trials if trial.number >= self.seen]
        again = [by_number[number] for number in sorted(self.unfinished)]
        for trial in again + new:
            self._read(trial)
        if trials:
            self.seen = max(self.seen, trials[-1].number + 1)

    def _read(self, trial) -> None:
        from optuna.trial import TrialState

        number, state, attrs = trial.number, trial.state, trial.user_attrs
        self.running.pop(number, None)
        claimed = self.open_claims.pop(number, None)
        if claimed is not None:
            self.claims[claimed].discard(number)
        digest = attrs.get("config_hash")
        duplicate = "duplicate_of" in attrs
        if state in (TrialState.RUNNING, TrialState.WAITING):
            self.unfinished.add(number)
            if state == TrialState.RUNNING and digest:
                self.running[number] = digest
                if not duplicate:
                    self.claims.setdefault(digest, set()).add(number)
                    self.open_claims[number] = digest
            return
        self.unfinished.discard(number)
        if state == TrialState.COMPLETE and not duplicate:
            self.evaluated += 1
            values = list(trial.values)
            if number >= self.value_numbers.get(digest, -1):
                self.values[digest] = values
                self.value_numbers[digest] = number
            member = Member(number, digest, attrs.get("config", {}), values)
            bisect.insort(self.members, member, key=_number)
            if digest:
                self.claims.setdefault(digest, set()).add(number)
            if all(map(usable_metric, values)):
                self._add_usable(member)
        elif state == TrialState.FAIL and attrs.get("reason") not in NOT_EVALUATED:
            self.evaluated += 1
            self.failed += 1
            if attrs.get("reason") not in RERUN:  # a resume tries those configs again
                self.failed_configs.add(digest)

    def _add_usable(self, member: Member) -> None:
        at = bisect.bisect(self.usable, member.number, key=_number)
        self.usable.insert(at, member)
        n = len(self.usable)
        if n > len(self._usable_values):  # grown by doubling: appending stays O(1)
            grown = np.zeros((max(16, 2 * n), len(member.values)))
            if n > 1:
                grown[: n - 1] = self._usable_values[: n - 1]
            self._usable_values = grown
        rows = self._usable_values
        rows[at + 1 : n] = rows[at : n - 1].copy()  # usually none: trials complete in order
        rows[at] = member.values
        self._pending.append(member)

    def usable_values(self) -> np.ndarray:
        """The values of `usable`, one row per member in the same order: (len(usable), m)."""
        return self._usable_values[: len(self.usable)]

    def running_hashes(self) -> set[str]:
        """The config hashes of the RUNNING trials."""
        return set(self.running.values())

    def claimed_by(self, config_hash: str) -> set[int]:
        """The numbers of the RUNNING or COMPLETE trials (not duplicates) holding a config."""
        return self.claims.get(config_hash, set())

    def front(self, directions: list[str]) -> list[Member]:
        """The non-dominated members of `usable`, in trial-number order: what
        `pareto_front` of all of them gives, computed from the previous front and the
        members added since."""
        if directions != self._front_directions:
            self._front, self._front_directions = [], list(directions)
            self._pending = list(self.usable)
        if self._pending:
            candidates = sorted(self._front + self._pending, key=_number)
            self._pending = []
            points = to_minimization(np.array([m.values for m in candidates]), directions)
            self._front = [candidates[i] for i in pareto_front(points)]
        return self._front


def _number(member: Member) -> int:
    return member.number
