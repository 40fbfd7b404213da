"""Questions asked of a search database, answered as plain rows (lists of dicts) for the CLI.

`pareto_rows` and `front_history` read only tnas's snapshot tables, so they answer in well
under a second however many trials a study has; `list_studies` counts trial states with one
aggregate query; `list_trials` reads the study's trials from Optuna. Nothing here imports torch,
and Optuna is imported only by the functions that need it. Timestamps are ISO-8601 strings in
UTC, directions "max" or "min".

>>> import io
>>> rows = [{"number": 3, "accuracy": 0.9, "config": {"d_model": 128}}]
>>> write_rows(rows, "csv", stream := io.StringIO())
>>> stream.getvalue().splitlines()
['number,accuracy', '3,0.9']
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tnas.search.settings import Objective, StudySettings
from tnas.space.errors import shown

if TYPE_CHECKING:
    from tnas.search.db import Database

FORMATS = ("json", "csv")
TRIAL_STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")
SHORT_HASH = 12


def list_studies(db: Database, ref_point: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """One row per study: trial counts by state, the latest front's size and hypervolume.

    Keys: name, objectives (e.g. "accuracy:max, latency_ms:min"), n_trials, n_complete,
    n_failed, n_running, front_size and hypervolume (None before the first snapshot) and
    datetime_start (the first trial's start, None without trials).

    The hypervolume is measured against each study's own frozen reference point
    (`tnas.search.reference`; a study made before reference points were stored: its latest
    snapshot's), exactly the figure the search's progress showed last. With `ref_point`
    (natural units, one value per objective) every study is measured against that one point,
    so the figures compare; the studies must then share their objectives, else a one-line
    `ValueError`, as for a `ref_point` of the wrong length.
    """
    from sqlalchemy import column, func, select, table

    from tnas.search.reference import check_reference, reference_of, snapshot_hypervolume

    storage = db.optuna_storage()
    studies = storage.get_all_studies()
    # Optuna's study summaries load every trial of every study to count them; one GROUP BY over
    # its `trials` table gives the same counts in milliseconds on a 10,000-trial study.
    trials = table("trials", column("study_id"), column("state"), column("datetime_start"))
    names = table("studies", column("study_id"), column("study_name"))
    counts_query = (
        select(
            names.c.study_name,
            trials.c.state,
            func.count().label("n"),
            func.min(trials.c.datetime_start).label("first_start"),
        )
        .join(names, names.c.study_id == trials.c.study_id)
        .group_by(names.c.study_name, trials.c.state)
    )
    counts: dict[str, dict[str, int]] = {}
    first_start: dict[str, datetime] = {}
    with db.session() as session:
        for name, state, n, start in session.execute(counts_query):
            counts.setdefault(name, {})[str(state).upper()] = n
            if start is not None:
                start = _as_datetime(start)
                first_start[name] = min(start, first_start.get(name, start))
    objectives_of = {s.study_name: _study_objectives(s.user_attrs, s.directions) for s in studies}
    given = None
    if ref_point is not None and studies:
        _same_objectives(objectives_of, "one reference point")
        given = check_reference(ref_point, objectives_of[studies[0].study_name])
    rows = []
    for study in studies:
        by_state = counts.get(study.study_name, {})
        snapshot = db.latest_snapshot(study.study_name)
        objectives = objectives_of[study.study_name]
        started = first_start.get(study.study_name)
        volume = None
        if snapshot is not None:
            directions = [objective["direction"] for objective in objectives]
            reference = given or reference_of(study.user_attrs, directions, snapshot)[0]
            volume = snapshot["hypervolume"]
            if reference is not None:
                volume = snapshot_hypervolume(snapshot, reference, directions)
        rows.append(
            {
                "name": study.study_name,
                "objectives": objectives_text(objectives),
                "n_trials": sum(by_state.values()),
                "n_complete": by_state.get("COMPLETE", 0),
                "n_failed": by_state.get("FAIL", 0),
                "n_running": by_state.get("RUNNING", 0),
                "front_size": None if snapshot is None else len(snapshot["members"]),
                "hypervolume": volume,
                "datetime_start": None if started is None else _iso(started),
            }
        )
    return rows


def list_trials(
    db: Database, study_name: str, states: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per trial of the study, in trial order, optionally only those in `states`.

    Keys: number, state, in a multi-fidelity study `steps` (the training steps of the highest
    rung the trial reached), one per objective (None unless complete, or pruned with its last
    rung's values), device (`device_of` its
    fingerprint: "cpu 1a2b3c4d5e6f"; None when the evaluator measured nothing), config_hash
    (in full), reason, duration_s (None until finished), attempts and config (the ArchConfig
    dict; None before the driver gave the trial one), and with latency sources other than the
    training worker `latency` (`{NAME: {"kind", "node_ip", "device", ...}}`, where each
    `latency_ms@NAME` came from). `states` are Optuna's trial state names
    in any case ("complete", "FAIL", ...; `check_states`). An unknown study raises
    `LookupError` naming the studies present.
    """
    from optuna.trial import TrialState

    wanted = None
    if states is not None:
        wanted = tuple(TrialState[state] for state in check_states(states))
    storage = db.optuna_storage()
    study_id = _study_id(db, study_name)
    objectives = _study_objectives(
        storage.get_study_user_attrs(study_id), storage.get_study_directions(study_id)
    )
    rows = []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=wanted):
        attrs = trial.user_attrs
        valued = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        values = trial.values if valued and trial.values else None
        duration = None
        if trial.datetime_start is not None and trial.datetime_complete is not None:
            duration = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)
        digest = attrs.get("config_hash")
        config = attrs.get("config")
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                **{
                    objective["name"]: None if values is None else values[position]
                    for position, objective in enumerate(objectives)
                },
                "device": device_of(attrs.get("fingerprint")),
                "config_hash": digest if isinstance(digest, str) else None,
                "reason": attrs.get("reason"),
                "duration_s": duration,
                "attempts": attrs.get("attempts"),
                "config": config if isinstance(config, Mapping) else None,
            }
        )
        rungs = attrs.get("rungs")
        if isinstance(rungs, Mapping) and rungs:
            rows[-1]["steps"] = max(int(steps) for steps in rungs)
        if isinstance(attrs.get("latency"), Mapping):  # where each latency_ms@NAME came from
            rows[-1]["latency"] = dict(attrs["latency"])
    if any("steps" in row for row in rows):  # a multi-fidelity study: each trial's rung
        rows = [
            {"number": r["number"], "state": r["state"], "steps": r.pop("steps", None)} | r
            for r in rows
        ]
    return rows


def rung_front(db: Database, study_name: str, rung: int) -> list[dict[str, Any]]:
    """The Pareto front of rung `rung` of a multi-fidelity study (`tnas pareto --rung N`): the
    trials that reached it, by their objective values there, in trial order. A one-line
    `LookupError` if the study has no such rung."""
    import numpy as np

    from tnas.search.fidelity import Rungs
    from tnas.search.multifidelity import rung_rows
    from tnas.search.pareto import pareto_front, to_minimization

    settings = study_settings(db, study_name)
    run = settings.run
    if not run.get("fidelity"):
        raise LookupError(f"study {study_name!r} was not searched with --fidelity; no rungs")
    rungs = Rungs(run["min_steps"], run.get("max_steps") or run["steps"], run["eta"])
    if not 0 <= rung <= rungs.top:
        raise LookupError(f"study {study_name!r} has rungs 0..{rungs.top}, not {rung}")
    storage = db.optuna_storage()
    trials = storage.get_all_trials(_study_id(db, study_name), deepcopy=False)
    rows = rung_rows(trials, rungs, settings.objectives, rung)
    if not rows:
        return []
    directions = [objective.direction for objective in settings.objectives]
    points = to_minimization(np.array([row["values"] for row in rows], dtype=float), directions)
    names = [objective.name for objective in settings.objectives]
    return [
        {"number": rows[i]["number"], "steps": rungs.steps[rung]}
        | dict(zip(names, rows[i]["values"], strict=True))
        for i in sorted(pareto_front(points))
    ]


def check_states(states: Iterable[str]) -> list[str]:
    """Trial state names in upper case, as `TrialState` spells them; a one-line `ValueError`
    naming the first unknown one and the valid ones.

    >>> check_states(["complete", "FAIL"])
    ['COMPLETE', 'FAIL']
    >>> check_states(["DONE"])
    Traceback (most recent call last):
    ...
    ValueError: unknown state 'DONE'; valid: running, complete, pruned, fail, waiting
    """
    checked = []
    for state in states:
        name = str(state).upper()
        if name not in TRIAL_STATES:
            valid = ", ".join(known.lower() for known in TRIAL_STATES)
            raise ValueError(f"unknown state {shown(state)}; valid: {valid}")
        checked.append(name)
    return checked


def device_of(fingerprint: Any) -> str | None:
    """The device a trial was measured on, from its `fingerprint` user attribute
    (`tnas.workers.profile.device_fingerprint`): its kind and its short id; None if unknown.

    >>> device_of({"device": "cuda", "id": "1a2b3c4d5e6f", "gpu": "NVIDIA H100"})
    'cuda 1a2b3c4d5e6f'
    >>> device_of({}) is None
    True
    """
    if not isinstance(fingerprint, Mapping):
        return None
    parts = [str(fingerprint[key]) for key in ("device", "id") if fingerprint.get(key)]
    return " ".join(parts) or None


def pareto_rows(db: Database, study_name: str) -> list[dict[str, Any]]:
    """The members of the study's latest front, best first on the first objective.

    Keys: number, one per objective, config_hash (in full: the key of caches and checkpoints)
    and config (the ArchConfig dict). Reads only the snapshot tables, never the trials. A study
    with no snapshot yet (no completed trial) gives []; an unknown one raises `LookupError`.
    """
    # Snapshots of a study Optuna no longer has (deleted outside tnas) are not shown.
    snapshot = db.latest_snapshot(study_name) if db.study_exists(study_name) else None
    if snapshot is None:
        _study_id(db, study_name)  # raises LookupError for an unknown study
        return []
    objectives = [Objective.from_dict(o).to_dict() for o in snapshot["objectives"]]
    rows = [
        {
            "number": member["trial_number"],
            **{
                objective["name"]: value
                for objective, value in zip(objectives, member["values"], strict=True)
            },
            "config_hash": member["config_hash"],
            "config": member["config"],
        }
        for member in snapshot["members"]
    ]
    first = objectives[0]
    sign = -1.0 if first["direction"] == "max" else 1.0
    return sorted(rows, key=lambda row: (sign * row[first["name"]], row["number"]))


def front_history(
    db: Database, study_name: str, ref_point: Sequence[float] | None = None
) -> list[dict[str, Any]]:
    """Every snapshot of the study's front, oldest first: how the front grew.

    Keys: id, created_at, n_trials (completed trials it was computed from), hypervolume and
    front_size. Every hypervolume is measured against one point, so the column shows growth:
    `ref_point` (natural units, one value per objective) if given, else the study's frozen
    reference point (a study made before reference points were stored: its latest
    snapshot's). A snapshot stored against another point (before the point was frozen) is
    measured again from its members; the others, the last among them, show the figure the
    search stored. An unknown study raises `LookupError`.
    """
    from tnas.search.reference import check_reference, reference_of, snapshot_hypervolume

    history = db.snapshot_history(study_name)
    study_id = _study_id(db, study_name)
    if not history:
        return []
    storage = db.optuna_storage()
    attrs = storage.get_study_user_attrs(study_id)
    objectives = _study_objectives(attrs, storage.get_study_directions(study_id))
    directions = [objective["direction"] for objective in objectives]
    if ref_point is not None:
        reference = check_reference(ref_point, objectives)
    else:
        reference = reference_of(attrs, directions, db.latest_snapshot(study_name))[0]
    volumes = {row["id"]: row["hypervolume"] for row in history}
    if reference is not None:
        for snapshot in _snapshots_measured_elsewhere(db, study_name, reference, directions):
            volumes[snapshot["id"]] = snapshot_hypervolume(snapshot, reference, directions)
    return [
        {
            "id": row["id"],
            "created_at": _iso(row["created_at"]),
            "n_trials": row["n_trials"],
            "hypervolume": volumes[row["id"]],
            "front_size": row["front_size"],
        }
        for row in history
    ]


def compare_fronts(
    db: Database, study_names: Sequence[str], ref_point: Sequence[float] | None = None
) -> tuple[list[dict[str, Any]], list[float] | None, str]:
    """The latest fronts of several studies measured against one reference point, so that
    their hypervolumes compare: `(rows, reference, source)`.

    Rows, one per study in the order given: study, n_trials (completed trials of its latest
    snapshot), front_size and hypervolume (None for a study with no snapshot yet). The
    reference (natural units) is `ref_point` if given (source "given"), else per objective the
    worst of the studies' own reference points (`tnas.search.reference.reference_of`;
    "worst of stored"), else None ("none": no study has a front yet). Studies with different
    objectives cannot share a hypervolume: a one-line `ValueError` says so; an unknown study
    is a `LookupError`.
    """
    from tnas.search.reference import (
        check_reference,
        reference_of,
        snapshot_hypervolume,
        worst_reference,
    )

    if not study_names:
        raise ValueError("compare_fronts needs at least one study name")
    storage = db.optuna_storage()
    objectives_of, attrs_of, snapshots = {}, {}, {}
    for name in study_names:
        study_id = _study_id(db, name)
        attrs_of[name] = storage.get_study_user_attrs(study_id)
        objectives_of[name] = _study_objectives(
            attrs_of[name], storage.get_study_directions(study_id)
        )
        snapshots[name] = db.latest_snapshot(name)
    _same_objectives(objectives_of, "one hypervolume")
    objectives = objectives_of[study_names[0]]
    directions = [objective["direction"] for objective in objectives]
    if ref_point is not None:
        reference, source = check_reference(ref_point, objectives), "given"
    else:
        own = [reference_of(attrs_of[n], directions, snapshots[n])[0] for n in study_names]
        own = [point for point in own if point is not None]
        reference = worst_reference(own, directions) if own else None
        source = "worst of stored" if own else "none"
    rows = []
    for name in study_names:
        snapshot = snapshots[name]
        volume = None
        if snapshot is not None and reference is not None:
            volume = snapshot_hypervolume(snapshot, reference, directions)
        rows.append(
            {
                "study": name,
                "n_trials": None if snapshot is None else snapshot["n_trials"],
                "front_size": None if snapshot is None else len(snapshot["members"]),
                "hypervolume": volume,
            }
        )
    return rows, reference, source


def predictor_report(db: Database, study_name: str) -> list[dict[str, Any]]:
    """The quality of a predictor-guided study's predictors, one row per round and objective:
    the family picked by cross-validation (and its CV Kendall tau), and the previous round's
    predictor scored on the trials evaluated since (Kendall tau, Spearman, MAPE on `n_test`
    held-out trials; empty in round 1). An unknown study raises `LookupError`.
    """
    rows = db.predictor_rounds(study_name) if db.study_exists(study_name) else []
    if not rows:
        _study_id(db, study_name)
    return [row | {"created_at": _iso(row["created_at"])} for row in rows]


def write_rows(rows: Iterable[Mapping[str, Any]], fmt: str, stream: TextIO) -> None:
    """Write rows as a JSON list (nested values kept) or as CSV.

    CSV is flat: dict values (such as "config") are dropped, lists are JSON-encoded, None is an
    empty cell; the columns are the rows' keys in order of first appearance.

    >>> import io
    >>> rows = [{"number": 1, "curve": [[0, 2.5]], "reason": None, "config": {"d_model": 64}}]
    >>> write_rows(rows, "json", stream := io.StringIO())
    >>> json.loads(stream.getvalue())[0]["config"]
    {'d_model': 64}
    >>> write_rows(rows, "csv", stream := io.StringIO())
    >>> print(stream.getvalue(), end="")
    number,curve,reason
    1,"[[0, 2.5]]",
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    rows = list(rows)
    if fmt == "json":
        json.dump(rows, stream, indent=2, default=_json_default)
        stream.write("\n")
        return
    # A key dropped as a dict in one row is dropped in all (a trial's config may be None).
    nested = {key for row in rows for key, value in row.items() if isinstance(value, Mapping)}
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in nested:
                columns.setdefault(key)
    writer = csv.DictWriter(
        stream, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_cell(row.get(key)) for key in columns})


def dashboard_command(url: str, host: str = "127.0.0.1", port: int = 8080) -> list[str]:
    """The argv that starts optuna-dashboard on the storage at `url`, bound to `host`:`port`,
    loopback by default: the dashboard has no login, so only this machine should reach it.

    `url` is anything `--storage` accepts (a .db path, sqlite:///, postgresql://); the argv
    holds the resolved URL, password included, so print it only through `redact_url`. The
    program is the optuna-dashboard beside this Python if there is one, else the first on PATH,
    else the bare name (executing it then fails with FileNotFoundError).

    >>> dashboard_command("runs/search.db")[1:]
    ['sqlite:///runs/search.db', '--host', '127.0.0.1', '--port', '8080']
    """
    from tnas.search.db import resolve_url

    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    if not isinstance(host, str) or not host or host.startswith("-") or len(host.split()) != 1:
        raise ValueError(f"host must be an address or a host name, got {host!r}")
    program = "optuna-dashboard"
    beside_python = Path(sys.executable).with_name(program)
    found = str(beside_python) if beside_python.is_file() else shutil.which(program)
    return [found or program, resolve_url(url), "--host", host, "--port", str(port)]


def objectives_text(objectives: Sequence[Mapping[str, str]]) -> str:
    """'accuracy:max, latency_ms:min' for a list of {"name", "direction"}.

    >>> objectives_text([{"name": "accuracy", "direction": "maximize"}])
    'accuracy:max'
    """
    return ", ".join(Objective.from_dict(objective).text for objective in objectives)


def study_objectives(db: Database, study_name: str) -> list[dict[str, str]]:
    """The study's objectives as {"name", "direction": "max"|"min"}, from its "tnas" user attr.

    A study not made by tnas gets names value0, value1, ... from its Optuna directions.
    """
    storage = db.optuna_storage()
    study_id = _study_id(db, study_name)
    return _study_objectives(
        storage.get_study_user_attrs(study_id), storage.get_study_directions(study_id)
    )


def study_settings(db: Database, study_name: str) -> StudySettings:
    """The settings tnas stored with a study (`StudySettings`); `LookupError` naming the
    studies present if there is no such study, or if tnas search did not make it."""
    storage = db.optuna_storage()
    study_id = _study_id(db, study_name)
    settings = StudySettings.of(
        storage.get_study_user_attrs(study_id), storage.get_study_directions(study_id)
    )
    if not settings.made_by_tnas:
        raise LookupError(f"study {study_name!r} was not made by tnas search")
    return settings


def predicted_objectives(db: Database, study_name: str) -> dict[str, dict[str, Any]]:
    """The objectives of a study whose values are predictions (a `table:` latency source,
    `tnas.search.latency`), each with where they come from: `{"source", "table", "device",
    "calibrated"}` (device and date as the trials recorded them). {} for a study that
    predicts nothing or that tnas did not make; `LookupError` for an unknown study."""
    from tnas.search.latency import parse_sources, predicted_metrics

    storage = db.optuna_storage()
    study_id = _study_id(db, study_name)
    settings = StudySettings.of(
        storage.get_study_user_attrs(study_id), storage.get_study_directions(study_id)
    )
    try:
        predicted = predicted_metrics(parse_sources(settings.run.get("latency") or []))
    except ValueError:
        return {}
    wanted = {
        name: source for name, source in predicted.items() if name in settings.objective_names
    }
    if not wanted:
        return {}
    recorded: dict[str, dict] = {}
    for trial in reversed(storage.get_all_trials(study_id, deepcopy=False)):
        latency = trial.user_attrs.get("latency")
        if isinstance(latency, Mapping):
            recorded = dict(latency)
            break
    found = {}
    for name, source in wanted.items():
        where = recorded.get(source.name) if isinstance(recorded.get(source.name), Mapping) else {}
        found[name] = {
            "source": source.name,
            "table": source.target,
            "device": where.get("device"),
            "calibrated": where.get("calibrated"),
        }
    return found


def study_trial(db: Database, study_name: str, number: int):
    """Trial `number` of a study (an Optuna `FrozenTrial`); `LookupError` saying which trial
    numbers exist if there is none."""
    storage = db.optuna_storage()
    study_id = _study_id(db, study_name)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    found = [trial for trial in trials if trial.number == number]
    if not found:
        span = f"trials 0..{len(trials) - 1}" if trials else "no trials"
        raise LookupError(f"study {study_name!r} has no trial {number} ({span})")
    return found[0]


def _study_id(db: Database, study_name: str) -> int:
    storage = db.optuna_storage()
    try:
        return storage.get_study_id_from_name(study_name)
    except KeyError:
        pass
    from tnas.safety import redact_url

    names = [study.study_name for study in storage.get_all_studies()]
    where = redact_url(db.url)
    if not names:
        raise LookupError(f"unknown study {study_name!r}: no studies in {where}")
    raise LookupError(f"unknown study {study_name!r}; studies in {where}: {', '.join(names)}")


def _study_objectives(user_attrs: Mapping[str, Any], directions: Sequence[Any]) -> list[dict]:
    return [o.to_dict() for o in StudySettings.of(user_attrs, directions).objectives]


def _same_objectives(objectives_of: Mapping[str, list[dict]], what: str) -> None:
    """A one-line `ValueError` unless every study (name -> objectives) has the same ones."""
    if len({objectives_text(objectives) for objectives in objectives_of.values()}) > 1:
        described = "; ".join(f"{n} ({objectives_text(o)})" for n, o in objectives_of.items())
        raise ValueError(f"cannot compare studies with different objectives on {what}: {described}")


def _snapshots_measured_elsewhere(
    db: Database, study_name: str, reference: Sequence[float], directions: Sequence[str]
) -> list[dict[str, Any]]:
    """The study's snapshots stored against another reference point than `reference`
    (natural units), each {"id", "reference_point", "hypervolume", "members": [{"values"}]}."""
    from sqlalchemy import select

    from tnas.search.db.models import FrontMember, FrontSnapshot
    from tnas.search.pareto import to_minimization

    bound = [float(x) for x in to_minimization(list(reference), directions)]
    points = select(FrontSnapshot.id, FrontSnapshot.reference_point, FrontSnapshot.hypervolume)
    points = points.where(FrontSnapshot.study_name == study_name)

    def read(session) -> list[dict[str, Any]]:
        elsewhere = {
            row.id: {
                "id": row.id,
                "reference_point": row.reference_point,
                "hypervolume": row.hypervolume,
                "members": [],
            }
            for row in session.execute(points)
            if [float(x) for x in row.reference_point] != bound
        }
        if not elsewhere:
            return []
        members = select(FrontMember.snapshot_id, FrontMember.values).join(FrontSnapshot)
        members = members.where(FrontSnapshot.study_name == study_name)
        if len(elsewhere) <= 500:  # else every member of the study: one query either way
            members = members.where(FrontMember.snapshot_id.in_(list(elsewhere)))
        for row in session.execute(members):
            if row.snapshot_id in elsewhere:
                elsewhere[row.snapshot_id]["members"].append({"values": row.values})
        return list(elsewhere.values())

    return db.transaction(read)


def _as_datetime(value: datetime | str) -> datetime:
    """A timestamp from Optuna's `trials` table (naive UTC) as an aware UTC datetime."""
    if isinstance(value, str):  # SQLite through a bare column() comes back as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return _as_datetime(value).isoformat(timespec="seconds")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON: {value!r}")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, list | tuple):
        return json.dumps(value, default=_json_default)
    return value
