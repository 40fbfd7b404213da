"""What a study is, read in one place: its objectives, the run settings stored with it, and
which failed trials count as evaluated.

tnas stores a study's settings as one Optuna study user attribute, `"tnas"`: the objectives
(`[{"name", "direction"}]`), the space, task and sampler, under `"run"` the whole `RunSpec`
(passwords redacted), which is what `tnas search resume` starts again from, and under
`"identity"` the settings fixed when the study was created (`tnas.search.run.identity`).
`StudySettings.of` is the only reader of that attribute; a study that tnas did not make gets
objectives named `value0`, `value1`, ... from its Optuna directions.

>>> settings = StudySettings.of({"tnas": {"objectives": [
...     {"name": "accuracy", "direction": "max"}], "task": "digits"}}, ["MAXIMIZE"])
>>> settings.objective_names, settings.task, settings.made_by_tnas
(['accuracy'], 'digits', True)
>>> StudySettings.of({}, ["MINIMIZE", "MINIMIZE"]).objective_names
['value0', 'value1']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ATTR = "tnas"  # the study user attribute holding the settings
DIRECTIONS = {"max": "max", "maximize": "max", "min": "min", "minimize": "min"}
# Reasons a failed trial was never evaluated, so it does not count against the budget and a
# sampler may propose its config again.
NOT_EVALUATED = frozenset(
    {
        "infeasible",
        "duplicate_in_flight",
        "orphaned",
        "interrupted",
        "search_timeout",
        "other_device",
    }
)
# Reasons whose config `tnas search resume` queues again: the trial was cut, not judged; or
# trained but not profiled, its target device gone (`profile_failed` counts against the
# budget, so that a search whose device stays gone ends; a resume tries its configs again).
RERUN = frozenset({"orphaned", "interrupted", "profile_failed"})


def direction_of(text: object) -> str:
    """ "max" or "min" for max/maximize/min/minimize in any case, or an Optuna
    `StudyDirection`; else a one-line `ValueError`."""
    key = getattr(text, "name", text)
    try:
        return DIRECTIONS[str(key).lower()]
    except KeyError:
        raise ValueError(f"unknown objective direction {text!r}; valid: max, min") from None


@dataclass(frozen=True)
class Objective:
    """A metric and its direction, written `name:max` or `name:min` on the command line.

    >>> Objective.parse("accuracy:max")
    Objective(name='accuracy', direction='max')
    >>> Objective.from_dict({"name": "latency_ms", "direction": "minimize"}).text
    'latency_ms:min'
    """

    name: str
    direction: str

    @classmethod
    def parse(cls, text: str) -> Objective:
        name, _, direction = text.partition(":")
        if not name or direction not in ("max", "min"):
            raise ValueError(f"objective {text!r} must be NAME:max or NAME:min")
        return cls(name.strip(), direction)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        """From `{"name", "direction"}` as stored; a one-line `ValueError` if it is not one."""
        if not isinstance(data, Mapping) or not data.get("name"):
            raise ValueError(f"objective {data!r} needs a name and a direction, min or max")
        return cls(str(data["name"]), direction_of(data.get("direction", "")))

    @property
    def optuna_direction(self) -> str:
        return "maximize" if self.direction == "max" else "minimize"

    @property
    def text(self) -> str:
        return f"{self.name}:{self.direction}"

    def to_dict(self) -> dict:
        return {"name": self.name, "direction": self.direction}


@dataclass(frozen=True)
class StudySettings:
    """A study's settings as tnas stored them when it created the study."""

    objectives: tuple[Objective, ...]
    space: str | None = None
    task: str | None = None
    sampler: str | None = None
    run: dict = field(default_factory=dict)  # the RunSpec, as `RunSpec.stored()` wrote it
    identity: dict = field(default_factory=dict)  # what may not change (`tnas.search.run`)
    made_by_tnas: bool = False

    @classmethod
    def of(cls, user_attrs: Mapping[str, Any], directions: Sequence[Any]) -> StudySettings:
        """The settings in a study's user attributes; `directions` (Optuna's, or "max"/"min")
        name the objectives of a study tnas did not make."""
        stored = user_attrs.get(ATTR)
        if not isinstance(stored, Mapping):
            stored = {}
        objectives = stored.get("objectives")
        if objectives and len(objectives) == len(directions):
            parsed = tuple(Objective.from_dict(objective) for objective in objectives)
        else:
            parsed = tuple(
                Objective(f"value{i}", direction_of(d)) for i, d in enumerate(directions)
            )
        run = stored.get("run")
        identity = stored.get("identity")
        return cls(
            objectives=parsed,
            space=stored.get("space"),
            task=stored.get("task"),
            sampler=stored.get("sampler"),
            run=dict(run) if isinstance(run, Mapping) else {},
            identity=dict(identity) if isinstance(identity, Mapping) else {},
            made_by_tnas=bool(stored),
        )

    @classmethod
    def of_study(cls, study) -> StudySettings:
        """The settings of a loaded `optuna.Study`."""
        return cls.of(study.user_attrs, study.directions)

    @property
    def objective_names(self) -> list[str]:
        return [objective.name for objective in self.objectives]

    def to_attr(self) -> dict:
        """The `"tnas"` user attribute that stores these settings."""
        return {
            "objectives": [objective.to_dict() for objective in self.objectives],
            "space": self.space,
            "task": self.task,
            "sampler": self.sampler,
            "run": self.run,
            "identity": self.identity,
        }
