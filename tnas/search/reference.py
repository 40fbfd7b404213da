"""The hypervolume reference point of a study: fixed once, so that its hypervolumes compare.

A hypervolume only means something against a reference point, and only compares with another
measured against the same point. A study's reference point is therefore chosen once and
frozen: the progress bar, the stored front snapshots, `tnas studies`, `tnas pareto --history`
and the plots all measure against it, so they agree to the last digit.

Where it is stored: the Optuna study user attribute `"tnas_reference"` (`ATTR`), a list of
floats, one per objective, in the objectives' own units and directions (natural units: for
`accuracy:max, latency_ms:min`, `[0.5, 40.0]` counts what is more accurate than 0.5 and faster
than 40 ms), as `--ref-point` takes it. Front snapshots keep their own copy of the point they
were measured against (`tnas_front_snapshots.reference_point`) in minimisation form, the
maximised objectives negated, as `tnas.search.pareto` computes.

Where it comes from, in order:

1. the run's `ref_point` (`--ref-point`), stored with the run settings when the study is
   created and frozen by the driver before its first trial;
2. otherwise `derive_reference` over the study's first completed batch, the first snapshot
   with at least `max(2, slots)` completed trials (or, once the budget is spent with nothing
   in flight, all there are), then frozen. Until then the driver measures against a
   provisional point derived from the trials so far, and stores that in its snapshots.

A study created before reference points were stored has no `"tnas_reference"`: readers use its
latest snapshot's reference point (`reference_of`), and the driver, on its next snapshot with
a completed batch, derives one from all the study's completed trials and freezes it.

Points worse than the reference in some objective add nothing to the hypervolume (they are
outside the box it bounds), and metric values that are not finite or exceed 1e30 in magnitude
(`usable_metric`) never reach it: the driver fails such a trial as `bad_metric`.

>>> reference = derive_reference([[0.75, 12.0], [0.5, 8.0]], ["max", "min"])
>>> reference
[0.475, 12.4]
>>> measure([[0.75, 12.0], [0.5, 8.0]], [0.25, 16.0], ["max", "min"])
3.0
>>> describe_reference(reference, ["accuracy:max", "latency_ms:min"], "given")
'reference point: accuracy=0.475, latency_ms=12.4 (given)'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tnas.search.pareto import hypervolume, reference_point, to_minimization
from tnas.search.settings import ATTR as SETTINGS_ATTR
from tnas.search.settings import Objective

ATTR = "tnas_reference"  # the study user attribute holding the frozen reference point
MARGIN = 0.1  # a derived reference lies this fraction of each objective's range past the worst
METRIC_LIMIT = 1e30  # a metric value of larger magnitude is refused (`bad_metric`)
SOURCES = ("given", "stored", "latest snapshot", "worst of stored", "derived", "none")


def usable_metric(value: Any) -> bool:
    """Whether `value` can be an objective value: a finite real number, |value| <= 1e30.

    >>> [usable_metric(v) for v in (0.5, 1e308, float("inf"), float("nan"), None)]
    [True, False, False, False, False]
    """
    return (
        isinstance(value, numbers.Real)
        and math.isfinite(value)
        and abs(float(value)) <= METRIC_LIMIT
    )


def parse_reference(texts: Sequence[str]) -> list[float]:
    """The values of `--ref-point` options, each one value or several joined by commas.

    >>> parse_reference(["0.5", "50"]), parse_reference(["0.5,50"])
    ([0.5, 50.0], [0.5, 50.0])
    >>> parse_reference(["0.5,fast"])
    Traceback (most recent call last):
    ...
    ValueError: --ref-point: 'fast' is not a number; give one value per objective, ...
    """
    values = []
    for text in texts:
        for part in str(text).split(","):
            try:
                values.append(float(part.strip()))
            except ValueError:
                raise ValueError(
                    f"--ref-point: {part.strip()!r} is not a number; give one value per "
                    "objective, e.g. --ref-point 0.5,50"
                ) from None
    return values


def check_reference(ref_point: Sequence[float], objectives: Sequence[Any]) -> list[float]:
    """`ref_point` as floats, if it has one finite value (|v| <= 1e30) per objective; else a
    one-line `ValueError`. `objectives` are `Objective`s, `"name:dir"` texts or
    `{"name", "direction"}` dicts.

    >>> check_reference([0.5, 50], ["accuracy:max", "latency_ms:min"])
    [0.5, 50.0]
    >>> check_reference([0.5], ["accuracy:max", "latency_ms:min"])
    Traceback (most recent call last):
    ...
    ValueError: reference point [0.5] has 1 value for 2 objectives (accuracy:max, ...
    """
    parsed = _objectives(objectives)
    if isinstance(ref_point, str | bytes) or not isinstance(ref_point, Sequence):
        raise ValueError(f"reference point must be a list of numbers, got {ref_point!r}")
    texts = ", ".join(objective.text for objective in parsed)
    if len(ref_point) != len(parsed):
        shown = "[" + ", ".join(_number_text(v) for v in ref_point) + "]"
        plural = "" if len(ref_point) == 1 else "s"
        raise ValueError(
            f"reference point {shown} has {len(ref_point)} value{plural} for {len(parsed)} "
            f"objectives ({texts}); give one per objective, in that order"
        )
    bad = [value for value in ref_point if not usable_metric(value)]
    if bad:
        raise ValueError(
            f"reference point {list(ref_point)!r} for {texts}: {bad[0]!r} is not a finite "
            f"number of magnitude <= {METRIC_LIMIT:g}"
        )
    return [float(value) for value in ref_point]


def derive_reference(
    values: Sequence[Sequence[float]] | np.ndarray,
    directions: Sequence[str],
    margin: float = MARGIN,
) -> list[float]:
    """A reference point just worse than every usable row of `values` (natural units, one
    column per objective), in natural units: per objective the worst value moved past it by
    `margin` (10%) of the objective's range, or of the worst value's magnitude when the range
    is 0, or by `margin` itself when that is 0 too. Rows holding a value that is not
    `usable_metric` are ignored; none usable is a `ValueError`.

    >>> derive_reference([[0.75, 12.0], [0.5, 8.0]], ["max", "min"])
    [0.475, 12.4]
    >>> derive_reference([[0.5, 10.0]], ["max", "min"])
    [0.45, 11.0]
    """
    points = _usable_rows(to_minimization(_as_rows(values, len(directions)), directions))
    if len(points) == 0:
        raise ValueError("a reference point needs at least one row of finite values")
    return [float(x) for x in to_minimization(reference_point(points, margin), directions)]


def study_reference(study_or_user_attrs: Any) -> list[float] | None:
    """The frozen reference point (natural units) of a study, an Optuna `Study` or
    `FrozenStudy` or its user attributes; None if it has none (not frozen yet, or created
    before reference points were stored: see `reference_of`).

    >>> study_reference({"tnas_reference": [0.5, 40]}), study_reference({})
    ([0.5, 40.0], None)
    """
    attrs = getattr(study_or_user_attrs, "user_attrs", study_or_user_attrs)
    stored = attrs.get(ATTR) if isinstance(attrs, Mapping) else None
    if not isinstance(stored, list) or not stored or not all(map(usable_metric, stored)):
        return None
    return [float(value) for value in stored]


def freeze_reference(study: Any, reference: Sequence[float]) -> list[float]:
    """Store `reference` (natural units) as the study's reference point unless one with as
    many values is stored already; return the one stored, which the first freeze fixed.

    Two drivers freezing one study at the same moment may both write; each reads the stored
    point back, and every later snapshot reads it again, so they agree from then on.
    """
    stored = study_reference(study)
    if stored is not None and len(stored) == len(reference):
        return stored
    study.set_user_attr(ATTR, [float(value) for value in reference])
    return study_reference(study) or [float(value) for value in reference]


def settle_reference(
    study: Any,
    objectives: Sequence[Objective],
    values: Sequence[Sequence[float]] | np.ndarray,
    first_batch_in: bool,
) -> tuple[list[float] | None, bool]:
    """The study's frozen reference point, freezing one now if it can, and whether it was
    frozen by this call: what the search driver calls at each snapshot.

    A stored point is returned as it is. Otherwise the run's `ref_point` (in the run settings
    stored with the study) is checked (`check_reference`'s `ValueError`) and frozen; else,
    when `first_batch_in`, one derived from `values` (the study's completed trials, natural
    units). (None, False) while there is none to freeze.
    """
    attrs = study.user_attrs
    stored = study_reference(attrs)
    if stored is not None and len(stored) == len(objectives):
        return stored, False
    settings = attrs.get(SETTINGS_ATTR)
    run = settings.get("run") if isinstance(settings, Mapping) else None
    given = run.get("ref_point") if isinstance(run, Mapping) else None
    if given is not None:
        return freeze_reference(study, check_reference(given, objectives)), True
    directions = [objective.direction for objective in objectives]
    if first_batch_in and len(_usable_rows(_as_rows(values, len(objectives)))):
        return freeze_reference(study, derive_reference(values, directions)), True
    return None, False


def reference_of(
    user_attrs: Mapping[str, Any], directions: Sequence[str], snapshot: Mapping | None = None
) -> tuple[list[float] | None, str]:
    """The reference point a reader measures a study against, in natural units, and where it
    came from: the frozen one ("stored"), else that of the study's latest snapshot
    (`snapshot`, as `Database.latest_snapshot` gives it: a study created before reference
    points were stored, or one whose first batch is not complete yet) ("latest snapshot"),
    else (None, "none").

    >>> reference_of({}, ["max", "min"], {"reference_point": [-0.5, 40.0]})
    ([0.5, 40.0], 'latest snapshot')
    """
    stored = study_reference(user_attrs)
    if stored is not None and len(stored) == len(directions):
        return stored, "stored"
    if snapshot is not None:
        point = [float(x) for x in snapshot.get("reference_point") or []]
        if len(point) == len(directions) and all(map(usable_metric, point)):
            return [float(x) for x in to_minimization(point, directions)], "latest snapshot"
    return None, "none"


def worst_reference(
    references: Sequence[Sequence[float]], directions: Sequence[str]
) -> list[float]:
    """Per objective, the worst of `references` (natural units): a point every one of them is
    at least as good as, for comparing studies on one hypervolume.

    >>> worst_reference([[0.5, 40.0], [0.6, 55.0]], ["max", "min"])
    [0.5, 55.0]
    """
    if not references:
        raise ValueError("worst_reference needs at least one reference point")
    points = to_minimization(np.asarray(references, dtype=float), directions)
    return [float(x) for x in to_minimization(points.max(axis=0), directions)]


def measure(
    values: Sequence[Sequence[float]] | np.ndarray,
    reference: Sequence[float],
    directions: Sequence[str],
) -> float:
    """The hypervolume of `values` (natural units, rows of trials) against `reference`
    (natural units). Rows worse than the reference in some objective add nothing; rows with a
    value that is not `usable_metric` are left out.

    >>> measure([[0.9, 10.0], [0.4, 5.0]], [0.5, 20.0], ["max", "min"])
    4.0
    """
    points = _usable_rows(to_minimization(_as_rows(values, len(directions)), directions))
    bound = to_minimization(np.asarray(reference, dtype=float), directions)
    if len(points) == 0:
        return 0.0
    return hypervolume(points, bound)


def snapshot_hypervolume(
    snapshot: Mapping[str, Any], reference: Sequence[float], directions: Sequence[str]
) -> float:
    """The hypervolume of a stored front snapshot against `reference` (natural units): the
    snapshot's stored figure when it was measured against that very point (so every reader
    shows exactly what the driver computed), else measured again from its members.

    >>> snapshot = {"reference_point": [-0.5, 20.0], "hypervolume": 4.0,
    ...             "members": [{"values": [0.9, 10.0]}, {"values": [0.4, 5.0]}]}
    >>> snapshot_hypervolume(snapshot, [0.5, 20.0], ["max", "min"])
    4.0
    >>> snapshot_hypervolume(snapshot, [0.0, 20.0], ["max", "min"])
    11.0
    """
    bound = [float(x) for x in to_minimization(np.asarray(reference, dtype=float), directions)]
    if [float(x) for x in snapshot.get("reference_point") or []] == bound:
        return float(snapshot["hypervolume"])
    rows = [member["values"] for member in snapshot.get("members") or []]
    return measure(rows, reference, directions)


def describe_reference(
    reference: Sequence[float] | None, objectives: Sequence[Any], source: str
) -> str:
    """The line that says which reference point a comparison used.

    >>> describe_reference([0.5, 40], ["accuracy:max", "latency_ms:min"], "worst of stored")
    'reference point: accuracy=0.5, latency_ms=40 (worst of stored)'
    """
    if reference is None:
        return "reference point: none (no study has a front yet)"
    names = [objective.name for objective in _objectives(objectives)]
    values = ", ".join(
        f"{name}={_number_text(value)}" for name, value in zip(names, reference, strict=True)
    )
    return f"reference point: {values} ({source})"


def _objectives(objectives: Sequence[Any]) -> list[Objective]:
    parsed = []
    for objective in objectives:
        if isinstance(objective, Objective):
            parsed.append(objective)
        elif isinstance(objective, str):
            parsed.append(Objective.parse(objective))
        else:
            parsed.append(Objective.from_dict(objective))
    return parsed


def _as_rows(values: Sequence[Sequence[float]] | np.ndarray, m: int) -> np.ndarray:
    rows = np.asarray(values, dtype=float)
    return rows.reshape(len(rows), m) if rows.size == 0 else rows


def _usable_rows(points: np.ndarray) -> np.ndarray:
    usable = np.isfinite(points).all(axis=1) & (np.abs(points) <= METRIC_LIMIT).all(axis=1)
    return points[usable]


def _number_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, numbers.Real) else repr(value)


__all__ = [
    "ATTR",
    "METRIC_LIMIT",
    "check_reference",
    "derive_reference",
    "describe_reference",
    "freeze_reference",
    "measure",
    "parse_reference",
    "reference_of",
    "settle_reference",
    "snapshot_hypervolume",
    "study_reference",
    "usable_metric",
    "worst_reference",
]
