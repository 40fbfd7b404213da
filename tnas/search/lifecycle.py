"""Deleting, renaming, copying and exporting studies, tnas's own tables kept in step.

A study lives in two places: Optuna's tables (the study, its trials and attributes, by study
id) and tnas's (front snapshots with their members, predictor rounds, driver heartbeats, by
study name). Optuna's `delete-study` and `copy_study` know only the first; each function here
does both, through `Database` methods for tnas's rows:

- `delete_study`: Optuna's `delete_study`, then tnas's rows, each in one transaction. If the
  second failed, the leftovers would stay invisible: the readers ignore the rows of a study
  that Optuna no longer has, and a study created under that name clears them first.
- `rename_study`: one transaction that sets Optuna's `studies.study_name` (trials and
  attributes hang on the study id, so they follow) and renames tnas's rows: it happens
  entirely or not at all. Optuna has no rename; copying then deleting would take time in
  proportion to the trials and leave a window with two studies.
- `copy_study`: `optuna.copy_study` (any storage to any other: SQLite to PostgreSQL, say, or
  within one database under a new name), then the snapshots and predictor rounds, their
  timestamps kept. Trial numbers are kept, so the snapshots' members still name their trials.
  A copy that fails half way is deleted again.
- `export_study`: the latest front's configs, one folder per member holding `config.json`
  (the canonical ArchConfig JSON), with `front.json` and `front.csv` as the index.

Delete and rename refuse a study with a live driver (`tnas.search.liveness`) unless forced:
the driver would go on writing under the old name. Every refusal (no such study, a taken or
bad new name, a live driver, an export folder that is not empty) is a one-line `LookupError`
or `ValueError`, raised before anything changes.

>>> import tempfile
>>> from tnas.search.db import Database
>>> folder = tempfile.TemporaryDirectory()
>>> db = Database(f"{folder.name}/search.db")
>>> delete_study(db, "nothing-here")
Traceback (most recent call last):
...
LookupError: unknown study 'nothing-here': no studies in sqlite:///...
>>> clear_stale_records(db, "nothing-here")
{'driver_heartbeats': 0, 'front_snapshots': 0, 'predictor_rounds': 0}
>>> db.close()
>>> folder.cleanup()
"""

from __future__ import annotations

import csv
import json
import os
from typing import TYPE_CHECKING, Any

from tnas.safety import output_path, redact_url, safe_name
from tnas.search.settings import ATTR, Objective
from tnas.space import ArchConfig, ConfigError
from tnas.space.errors import OneLineError, one_line, shown

if TYPE_CHECKING:
    from tnas.search.db import Database

FRONT_JSON = "front.json"
FRONT_CSV = "front.csv"
CONFIG_FILE = "config.json"


class StudyError(OneLineError):
    """A lifecycle command refused before it changed anything: one line saying why."""


def delete_study(db: Database, name: str, *, force: bool = False) -> dict[str, int]:
    """Delete study `name`: its trials (Optuna) and every row tnas keeps for it. Returns how
    many went: `{"trials": 40, "driver_heartbeats": 0, "front_snapshots": 22, ...}`.

    `LookupError` if there is no such study; `StudyError` if a driver is searching it now,
    unless `force`.

    >>> delete_study(db, "primer-digits-nsga2-s0")  # doctest: +SKIP
    {'trials': 40, 'driver_heartbeats': 0, 'front_snapshots': 22, 'predictor_rounds': 0}
    """
    study_id = _study_id(db, name)
    if not force:
        _refuse_live(db, name, "delete")
    storage = db.optuna_storage()
    n_trials = storage.get_n_trials(study_id)
    storage.delete_study(study_id)
    return {"trials": n_trials, **db.delete_study_records(name)}


def rename_study(db: Database, name: str, new_name: str, *, force: bool = False) -> dict[str, int]:
    """Rename study `name` to `new_name` in one transaction, Optuna's row and tnas's rows
    together (see the module docstring). Returns the rows renamed per tnas table.

    `LookupError` if there is no study `name`; `StudyError` if `new_name` is taken or not a
    valid name (`tnas.safety.safe_name`), or if a driver is searching the study now, unless
    `force`. The stored run settings' `study` follows the new name.

    >>> rename_study(db, "primer-digits-nsga2-s0", "primer-baseline")  # doctest: +SKIP
    {'driver_heartbeats': 0, 'front_snapshots': 22, 'predictor_rounds': 0}
    """
    new_name = _new_name(new_name)
    _study_id(db, name)
    if new_name == name:
        raise StudyError(f"study {name!r} already has that name")
    _refuse_taken(db, new_name)
    if not force:
        _refuse_live(db, name, "rename")
    try:
        renamed = db.rename_study(name, new_name)
    except ValueError as err:  # taken since the check above
        raise StudyError(str(err)) from None
    _retitle(db, name, new_name)
    return renamed


def copy_study(
    src_db: Database, name: str, dst_db: Database, new_name: str | None = None
) -> dict[str, int]:
    """Copy study `name` of `src_db` into `dst_db` as `new_name` (default: the same name):
    directions, attributes, every trial (numbers kept) with `optuna.copy_study`, then tnas's
    front snapshots and predictor rounds. The databases may differ in kind (SQLite to
    PostgreSQL) or be one database (then `new_name` must differ). Returns the rows copied:
    `{"trials": 40, "front_snapshots": 22, "predictor_rounds": 0}`.

    `LookupError` if `src_db` has no study `name`; `StudyError` if `dst_db` has a study
    `new_name` or the name is not valid. A copy that fails part way is deleted again.
    A study being searched is copied as it stands (its running trials as RUNNING).

    >>> copy_study(Database("runs.db"), "baseline", Database("postgresql://tnas@db/tnas"))
    ... # doctest: +SKIP
    {'trials': 40, 'front_snapshots': 22, 'predictor_rounds': 0}
    """
    import optuna

    new_name = name if new_name is None else _new_name(new_name)
    source_id = _study_id(src_db, name)
    _refuse_taken(dst_db, new_name)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created ..."
    try:
        optuna.copy_study(
            from_study_name=name,
            from_storage=src_db.optuna_storage(),
            to_storage=dst_db.optuna_storage(),
            to_study_name=new_name,
        )
    except optuna.exceptions.DuplicatedStudyError:  # made since the check above: not ours
        raise StudyError(_taken_message(dst_db, new_name)) from None
    except BaseException:
        _remove_copy(dst_db, new_name)
        raise
    finally:
        optuna.logging.set_verbosity(verbosity)
    try:
        _retitle(dst_db, name, new_name)
        copied = src_db.copy_study_records(name, dst_db, new_name)
    except BaseException:
        _remove_copy(dst_db, new_name)
        raise
    return {"trials": src_db.optuna_storage().get_n_trials(source_id), **copied}


def export_study(db: Database, name: str, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the latest Pareto front of study `name` under `out_dir`: a folder per member,
    `trial-NNNN/config.json` (the ArchConfig JSON: `ArchConfig.from_json` reads it, its hash
    is the member's `config_hash`), and the index `front.json` (study, objectives, snapshot,
    members with folder, trial number, config hash and objective values) and `front.csv` (a
    row per member). Returns what `front.json` holds.

    `out_dir` must pass `tnas.safety.output_path` and be new or empty. `LookupError` if there
    is no such study or it has no front yet; `StudyError` if a stored config is not an
    ArchConfig. Nothing is written before every check passes.

    >>> index = export_study(db, "primer-baseline", "exports/baseline")  # doctest: +SKIP
    >>> [member["folder"] for member in index["members"]]  # doctest: +SKIP
    ['trial-0012', 'trial-0003', 'trial-0027']
    """
    _study_id(db, name)
    out = output_path(out_dir, "--out", inside=(FRONT_JSON, FRONT_CSV))
    if out.is_dir() and any(out.iterdir()):
        raise StudyError(f"--out {shown(str(out))} is not empty; give a new or empty directory")
    snapshot = db.latest_snapshot(name)
    if snapshot is None or not snapshot["members"]:
        raise LookupError(f"study {name!r} has no Pareto front yet (no completed trial)")
    objectives = [Objective.from_dict(objective).to_dict() for objective in snapshot["objectives"]]
    members, configs = [], []
    for member in snapshot["members"]:
        number = member["trial_number"]
        try:
            configs.append(ArchConfig.from_dict(member["config"]))
        except (ConfigError, TypeError, KeyError, ValueError) as err:
            message = f"trial {number} of {name!r}: not an ArchConfig: {one_line(err)}"
            raise StudyError(message) from None
        values = dict(zip([o["name"] for o in objectives], member["values"], strict=True))
        members.append(
            {
                "folder": f"trial-{number:04d}",
                "trial_number": number,
                "config_hash": member["config_hash"],
                "values": values,
            }
        )
    index = {
        "study": name,
        "storage": redact_url(db.url),
        "objectives": objectives,
        "snapshot": {
            "id": snapshot["id"],
            "created_at": snapshot["created_at"].isoformat(timespec="seconds"),
            "n_trials": snapshot["n_trials"],
            "hypervolume": snapshot["hypervolume"],
            "reference_point": snapshot["reference_point"],
        },
        "members": members,
    }
    out.mkdir(parents=True, exist_ok=True)
    for member, config in zip(members, configs, strict=True):
        folder = out / member["folder"]
        folder.mkdir()
        (folder / CONFIG_FILE).write_text(config.to_json() + "\n")
    (out / FRONT_JSON).write_text(json.dumps(index, indent=2) + "\n")
    with (out / FRONT_CSV).open("w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["folder", "trial_number", "config_hash", *[o["name"] for o in objectives]])
        for member in members:
            row = [member["folder"], member["trial_number"], member["config_hash"]]
            writer.writerow(row + list(member["values"].values()))
    return index


def study_records(db: Database, name: str) -> dict[str, int]:
    """What study `name` holds: `{"trials": 40, "driver_heartbeats": 0, "front_snapshots":
    22, "predictor_rounds": 6}` (what `delete_study` would delete); `LookupError` if there is
    no such study."""
    study_id = _study_id(db, name)
    return {"trials": db.optuna_storage().get_n_trials(study_id), **db.count_study_records(name)}


def records_text(counts: dict[str, int]) -> str:
    """'40 trials, 22 front snapshots, 0 predictor rounds' for a dict of counts.

    >>> records_text({"trials": 40, "front_snapshots": 22, "driver_heartbeats": 0})
    '40 trials, 22 front snapshots, 0 driver heartbeats'
    """
    return ", ".join(f"{count} {key.replace('_', ' ')}" for key, count in counts.items())


def clear_stale_records(db: Database, name: str) -> dict[str, int]:
    """Delete the rows tnas keeps under `name` if Optuna has no study of that name (they were
    left by a study deleted outside tnas), and return how many went per table; a study that
    exists is left alone (all zeros). `Database.optuna_storage()` already does this each time
    it creates a study, so a new study never shows an old one's fronts; call it to tidy a
    database, or before creating a study through another storage."""
    if db.study_exists(name):
        return {key: 0 for key in db.count_study_records(name)}
    return db.delete_study_records(name)


def _study_id(db: Database, name: str) -> int:
    from tnas.search.query import _study_id as study_id_of  # LookupError naming the studies

    return study_id_of(db, name)


def _new_name(name: str) -> str:
    try:
        return safe_name(name, "new study name")
    except ValueError as err:
        raise StudyError(str(err)) from None


def _taken_message(db: Database, name: str) -> str:
    return f"a study named {name!r} exists in {redact_url(db.url)}; delete it or choose another"


def _refuse_taken(db: Database, name: str) -> None:
    if db.study_exists(name):
        raise StudyError(_taken_message(db, name))


def _refuse_live(db: Database, name: str, what: str) -> None:
    from tnas.search.liveness import live_drivers

    live = live_drivers(db, name)
    if live:
        row = min(live, key=lambda r: r["age_s"])
        raise StudyError(
            f"study {name!r} has a live driver (pid {row['pid']} on {row['host']}, heartbeat "
            f"{row['age_s']:.0f} s ago); stop it first, or pass --force to {what} it anyway"
        )


def _retitle(db: Database, old_name: str, new_name: str) -> None:
    """Make the stored run settings name the study by its new name (`tnas search resume`
    takes the name it is given either way; this keeps what is shown consistent)."""
    storage = db.optuna_storage()
    study_id = storage.get_study_id_from_name(new_name)
    settings = storage.get_study_user_attrs(study_id).get(ATTR)
    run = settings.get("run") if isinstance(settings, dict) else None
    if isinstance(run, dict) and run.get("study") == old_name and old_name != new_name:
        storage.set_study_user_attr(study_id, ATTR, settings | {"run": run | {"study": new_name}})


def _remove_copy(db: Database, name: str) -> None:
    """Delete a copy that failed part way (best effort: the first error is what is shown)."""
    try:
        if db.study_exists(name):
            storage = db.optuna_storage()
            storage.delete_study(storage.get_study_id_from_name(name))
        db.delete_study_records(name)
    except Exception:  # the copy's own error is the one to report
        pass


__all__ = [
    "StudyError",
    "clear_stale_records",
    "copy_study",
    "delete_study",
    "export_study",
    "records_text",
    "rename_study",
    "study_records",
]
