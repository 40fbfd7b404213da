"""A search run: its settings (from CLI options or one YAML file), checked before anything is
written, then the study created or resumed and the driver started.

>>> spec = RunSpec(space="primer", objectives=["accuracy:max", "latency_ms:min"], trials=10)
>>> spec.study_name
'primer-digits-nsga2-s0'
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tnas.safety import UnsafeInput, redact_url, safe_name
from tnas.search.driver import DRIVER_ATTR, RunError, SearchDriver
from tnas.search.samplers import SAMPLERS, SamplerOptions, create_sampler
from tnas.search.settings import ATTR, NOT_EVALUATED, RERUN, Objective, StudySettings
from tnas.space import ArchConfig, DesignSpace, SpaceError
from tnas.space.constraints import Constraint, ConstraintSyntaxError
from tnas.space.errors import shown, unknown_name
from tnas.space.yamlio import compose, read_document

FEASIBILITY_SAMPLES = 2000
MAX_INT = 2**31 - 1  # the largest count, seed or size a run setting takes
MAX_WORKERS = 1024


class RunSpec(BaseModel):
    """Everything that defines a search; stored with the study, so `resume` needs only its name."""

    model_config = ConfigDict(extra="forbid")

    space: str = "primer"
    task: str = "digits"
    objectives: list[str] = ["accuracy:max", "latency_ms:min"]
    constraints: list[str] = []
    trials: int = 40
    workers: int = 2
    sampler: str = "nsga2"
    seed: int = 0
    study: str | None = None
    storage: str | None = None
    timeout: float | None = None
    pool: str | None = None
    evaluator: str | None = None  # "replay:TABLE"; default: train and profile on Ray workers
    supernet: str | None = None  # Mix'n'Match: evaluate submodels of this checkpoint, untrained
    ray_address: str | None = None
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    trial_timeout: float | None = None
    profile_batch: int = 1
    profile_seq_len: int = 128
    profile_repeats: int = 20
    profile_warmup: int = 3
    profile_threads: int = 1  # torch threads while timing, the same inline and on Ray
    threads: int | None = None  # training threads in this process (workers=0); None: cores
    ref_point: list[float] | None = None  # hypervolume reference; None: frozen from 1st batch
    allow_mixed_devices: bool = False
    fidelity: str | None = None  # "steps": multi-fidelity (ASHA) over training steps
    min_steps: int | None = None  # the first rung's steps (fidelity)
    max_steps: int | None = None  # the last rung's steps (fidelity); default: `steps`
    eta: int = 3  # rungs grow by eta; the top 1/eta of a rung goes on (fidelity)
    checkpoint_dir: str | None = None  # rung checkpoints; default: tnas-checkpoints here
    keep_checkpoints: bool = False
    population_size: int = 16  # NSGA-II/III
    linas_batch: int = 5  # configs per predictor round of `linas`
    latency: list[str] = ["measured"]  # latency sources (`tnas.search.latency`)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        if name not in SAMPLERS:
            raise ValueError(unknown_name("sampler", name, SAMPLERS))
        return name

    @field_validator(
        "trials",
        "steps",
        "batch_size",
        "profile_batch",
        "profile_seq_len",
        "profile_repeats",
        "profile_threads",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        return _in_range(value, 1, MAX_INT)

    @field_validator("seed", "profile_warmup")
    @classmethod
    def _seed(cls, value: int) -> int:
        return _in_range(value, 0, MAX_INT)

    @field_validator("threads")
    @classmethod
    def _threads(cls, value: int | None) -> int | None:
        return None if value is None else _in_range(value, 1, MAX_WORKERS)

    @field_validator("ref_point")
    @classmethod
    def _finite_point(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(math.isfinite(x) and abs(x) <= 1e30 for x in value):
            raise ValueError(f"must be finite numbers, got {shown(value)}")
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        return _in_range(value, 0, MAX_WORKERS)

    @field_validator("min_steps", "max_steps")
    @classmethod
    def _steps(cls, value: int | None) -> int | None:
        return None if value is None else _in_range(value, 1, MAX_INT)

    @field_validator("latency")
    @classmethod
    def _latency(cls, value: list[str]) -> list[str]:
        from tnas.search.latency import parse_sources

        parse_sources(value)  # a one-line ValueError
        return value or ["measured"]

    @property
    def protocol(self) -> dict:
        """The study's latency measurement protocol, as `ProfileSettings` and latency tables
        take it: `{"batch", "seq_len", "repeats", "warmup", "threads"}`."""
        return {
            "batch": self.profile_batch,
            "seq_len": self.profile_seq_len,
            "repeats": self.profile_repeats,
            "warmup": self.profile_warmup,
            "threads": self.profile_threads,
        }

    @property
    def latency_sources(self):
        """The parsed `latency` sources (`tnas.search.latency.LatencySource`), first the one of
        plain `latency_ms`."""
        from tnas.search.latency import parse_sources

        return parse_sources(self.latency)

    @field_validator("fidelity")
    @classmethod
    def _fidelity(cls, value: str | None) -> str | None:
        if value is not None and value not in FIDELITIES:
            raise ValueError(unknown_name("fidelity", value, FIDELITIES))
        return value

    @property
    def rungs(self):
        """The `Rungs` of a multi-fidelity run (`tnas.search.fidelity`), None without one."""
        from tnas.search.fidelity import Rungs

        if self.fidelity is None:
            return None
        return Rungs(self.min_steps or self.steps, self.max_steps or self.steps, self.eta)

    @field_validator("linas_batch")
    @classmethod
    def _batch(cls, value: int) -> int:
        return _in_range(value, 1, MAX_INT)

    @field_validator("population_size")
    @classmethod
    def _population(cls, value: int) -> int:
        return _in_range(value, 2, MAX_INT)

    @field_validator("lr", "timeout", "trial_timeout")
    @classmethod
    def _positive_seconds(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be a finite number > 0, got {shown(value)}")
        return value

    @field_validator("study")
    @classmethod
    def _safe_study(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                safe_name(name)
            except UnsafeInput as err:
                raise ValueError(str(err).removeprefix("study name ")) from None
        return name

    @property
    def study_name(self) -> str:
        """`study`, else `SPACE-TASK-SAMPLER-sSEED`, with characters a study name may not hold
        (see `tnas.safety.safe_name`) replaced by `-`."""
        if self.study:
            return self.study
        space = Path(self.space).stem if self.space.endswith((".yaml", ".yml")) else self.space
        task = self.task.split(",")[0].split(":")[-1]
        derived = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{space}-{task}-{self.sampler}-s{self.seed}")
        return derived.lstrip("._-")[:128] or "study"

    @property
    def parsed_objectives(self) -> list[Objective]:
        return [Objective.parse(text) for text in self.objectives]

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> RunSpec:
        """The settings of a YAML run file, `overrides` (those not None) on top. Every problem
        is one `RunError` line, `file:line: ` first where a line is known. Relative paths in
        the file (space, pool, evaluator's table, supernet) are relative to the file's folder."""
        try:
            text = read_document(path, "run file")
            data, where = compose(text, str(path))  # the space loader's YAML: lines, limits
        except SpaceError as err:
            raise RunError(str(err)) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RunError(f"{path}: a run file must be a mapping of settings")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        folder = Path(path).expanduser().resolve().parent
        data = {key: absolute_path(key, value, folder) for key, value in data.items()}
        try:
            return cls.build(data | overrides)
        except RunError as err:
            key = getattr(err, "setting", None)
            if key in overrides:  # a command-line option: the file is not at fault
                raise
            line = where.line((key,), key=True) if key in data else None
            raise RunError(f"{path}:{line}: {err}" if line else f"{path}: {err}") from None

    @classmethod
    def build(cls, data: dict) -> RunSpec:
        """Settings from a dict; an unknown or bad setting is one `RunError` line naming it."""
        for key in data:
            if not isinstance(key, str):
                raise RunError(f"run setting {shown(key)}: a setting's name must be a string")
            if key not in cls.model_fields:
                valid = ", ".join(cls.model_fields)
                raise _setting_error(key, f"unknown run setting {shown(key)}; valid: {valid}")
        try:
            return cls(**data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] != "value_error":
                message += f", got {shown(first['input'])}"
            key = first["loc"][0] if first["loc"] else None
            raise _setting_error(key, f"run setting {where}: {message}") from None

    def stored(self) -> dict:
        """The settings as stored with the study: passwords in URLs replaced by `***`."""
        data = self.model_dump()
        data["storage"] = redact_url(data["storage"])
        data["ray_address"] = redact_url(data["ray_address"])
        return data


PATH_SETTINGS = ("space", "pool", "supernet", "evaluator", "checkpoint_dir")
FIDELITIES = ("steps",)  # what a multi-fidelity run spends in rungs
FIDELITY_SETTINGS = ("fidelity", "min_steps", "max_steps", "eta")
# What a study is, fixed when it is created: the settings that change what its trials measure.
# The training budget counts only when trials are trained, the measuring protocol only when
# they are measured (not replayed).
TRAINING_SETTINGS = ("steps", "batch_size", "lr")
PROTOCOL_SETTINGS = (
    "profile_batch",
    "profile_seq_len",
    "profile_repeats",
    "profile_warmup",
    "profile_threads",
)


def absolute_path(key: str, value, folder: Path):
    """`value` of run setting `key` with a relative path made absolute from `folder`; other
    settings, a preset space name and non-strings are returned as they are.

    >>> absolute_path("pool", "pool.jsonl", Path("/runs"))
    '/runs/pool.jsonl'
    >>> absolute_path("evaluator", "replay:t.jsonl,noise=0.1", Path("/runs"))
    'replay:/runs/t.jsonl,noise=0.1'
    >>> absolute_path("space", "primer", Path("/runs")), absolute_path("trials", 4, Path("/r"))
    ('primer', 4)
    """
    from tnas.space.space import PRESETS

    if key not in PATH_SETTINGS or not isinstance(value, str) or not value:
        return value
    if key == "evaluator":
        kind, _, rest = value.partition(":")
        table, comma, options = rest.partition(",")
        if kind != "replay" or not table:
            return value
        return f"replay:{absolute_path('pool', table, folder)}{comma}{options}"
    bare = "/" not in value and not value.endswith((".yaml", ".yml"))
    if key == "space" and bare and (value in PRESETS or not (folder / value).exists()):
        return value  # a preset, or a misspelt one that `load_space` names as such
    try:  # by the text alone: the file is checked where it is read, in one line
        return os.path.normpath(os.path.join(folder, os.path.expanduser(value)))
    except (ValueError, KeyError):  # a NUL byte, or ~user of no user
        return value


def with_absolute_paths(spec: RunSpec, folder: Path | None = None) -> RunSpec:
    """`spec` with its relative paths made absolute from `folder` (default: the current one),
    as the study stores them, so that `resume` works from any folder."""
    folder = folder or Path.cwd()
    changes = {key: absolute_path(key, getattr(spec, key), folder) for key in PATH_SETTINGS}
    tables = [absolute_table(text, folder) for text in spec.latency]
    if tables != spec.latency:
        changes["latency"] = tables
    changes = {key: value for key, value in changes.items() if value != getattr(spec, key)}
    return spec.model_copy(update=changes) if changes else spec


def absolute_table(text: str, folder: Path) -> str:
    """A `--latency` source with its table's relative path made absolute from `folder`, named
    as before (the file's stem), so the name does not change with the path.

    >>> absolute_table("table:edge.json", Path("/runs")), absolute_table("measured", Path("/r"))
    ('edge=table:/runs/edge.json', 'measured')
    """
    from tnas.search.latency import parse_source

    try:
        source = parse_source(text)
    except ValueError:
        return text
    if source.kind != "table":
        return text
    return f"{source.name}=table:{absolute_path('pool', source.target, folder)}"


def identity(spec: RunSpec, space: DesignSpace) -> dict:
    """The settings a study keeps for life (see `check_identity`): its space (by digest, so an
    edited space file is told apart), task, objectives, constraints, evaluator, and for trained
    trials the training budget and for measured ones the latency protocol.

    >>> from tnas.space import load_space
    >>> sorted(identity(RunSpec(space="simq"), load_space("simq")))[:5]
    ['batch_size', 'constraints', 'evaluator', 'lr', 'objectives']
    """
    if spec.evaluator:
        evaluator = spec.evaluator.split(",")[0]  # replay noise and delay are not its identity
    elif spec.supernet:
        evaluator = f"supernet:{spec.supernet}"
    else:
        evaluator = "train"
    fixed = {
        "space": space.digest,
        "task": spec.task,
        "objectives": [objective.text for objective in spec.parsed_objectives],
        "constraints": sorted(spec.constraints),
        "evaluator": evaluator,
    }
    if evaluator == "train":
        fixed |= {key: getattr(spec, key) for key in TRAINING_SETTINGS}
        if spec.fidelity:  # the rungs are the budget; `steps` is the top rung's
            fixed |= {key: getattr(spec, key) for key in FIDELITY_SETTINGS}
            fixed["steps"] = spec.rungs.steps[-1]
    if not evaluator.startswith("replay:"):
        fixed |= {key: getattr(spec, key) for key in PROTOCOL_SETTINGS}
    sources = [source.text for source in spec.latency_sources]
    if sources != ["local=measured"]:  # the default is left out: older studies match it
        fixed["latency"] = sources
    tables = [source for source in spec.latency_sources if source.kind == "table"]
    if tables:  # the file's content, not only its path: a table calibrated again differs
        from tnas.predictors.latency import LatencyTable

        fixed["latency_tables"] = {
            source.name: LatencyTable.load(source.target).digest for source in tables
        }
    return fixed


def check_identity(
    name: str, stored: StudySettings, fixed: dict, space: str = "?", resume: bool = False
) -> None:
    """`RunError`, one line naming each setting that differs from those the study was created
    with. A study made before identities were stored is checked on its objectives only. On a
    `resume` the differences come from files changed since (the space file, a latency table),
    and the line says to put them back."""
    if not stored.identity:
        return
    differences = []
    for key in sorted(set(stored.identity) | set(fixed)):
        was, now = stored.identity.get(key), fixed.get(key)
        if was == now:
            continue
        if key == "space":
            was = f"{stored.run.get('space', '?')} (digest {was})"
            now = f"{space} (digest {now})"
        if key == "latency":  # the default is not stored: it reads as what it is
            was, now = was or ["local=measured"], now or ["local=measured"]
        if key == "latency_tables":
            if was is None or now is None:  # made before tables' digests; or `latency` says
                continue
            differences += [
                f"latency table {table} changed (digest {was.get(table)} -> {digest})"
                for table, digest in now.items()
                if table in was and was[table] != digest
            ]
            continue
        differences.append(f"{key} {_text(was)} -> {_text(now)}")
    if differences:
        remedy = (
            "put back the files it was made with, or launch a new --study"
            if resume
            else f"launch a new --study, or continue it with `tnas search resume {name}`"
        )
        raise RunError(
            f"study {name!r} was created with other settings: {'; '.join(differences)}; {remedy}"
        )


def _text(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return "none" if value is None else str(value)


def _in_range(value: int, least: int, most: int) -> int:
    if not least <= value <= most:
        raise ValueError(f"must be from {least} to {most}, got {shown(value)}")
    return value


def _setting_error(key, message: str) -> RunError:
    error = RunError(message)
    error.setting = key
    return error


def check_run(spec: RunSpec, space: DesignSpace, metric_names: set[str]) -> list[Constraint]:
    """Check objectives and constraints against what the evaluator reports; return the
    constraints over derived quantities. Nothing is written."""
    objectives = []
    for text in spec.objectives:
        try:
            objectives.append(Objective.parse(text))
        except ValueError as err:
            raise RunError(str(err)) from None
    if not objectives:
        raise RunError("a search needs at least one objective")
    for objective in objectives:
        if objective.name not in metric_names:
            raise RunError(
                f"unknown objective {objective.name!r}: the evaluator reports "
                f"{', '.join(sorted(metric_names))}"
            )
    if spec.ref_point is not None:
        from tnas.search.reference import check_reference

        try:
            check_reference(spec.ref_point, objectives)
        except ValueError as err:
            raise RunError(str(err)) from None
    constraints = []
    for text in spec.constraints:
        try:
            constraint = Constraint.parse(text)
        except ConstraintSyntaxError as err:
            raise RunError(str(err)) from None
        constraints.append(constraint)
    check_feasible(space, constraints)
    return constraints


def check_fidelity(spec: RunSpec) -> None:
    """A multi-fidelity run trains, or replays learning curves (a replay table whose rows
    record `rungs`; checked when the table is read): not with a supernet; its rungs must be
    valid. One `RunError` line otherwise."""
    if spec.supernet:
        raise RunError("--fidelity steps trains each trial in rungs; it cannot go with --supernet")
    if spec.min_steps is None:
        raise RunError("--fidelity steps needs --min-steps (the first rung's training steps)")
    try:
        rungs = spec.rungs
    except ValueError as err:
        raise RunError(f"--fidelity steps: {err}") from None
    if len(rungs.steps) < 2:
        raise RunError(
            f"--fidelity steps: --min-steps {rungs.min_steps} and --max-steps "
            f"{rungs.max_steps} make one rung; give --max-steps above --min-steps"
        )


def check_feasible(space: DesignSpace, constraints: list[Constraint]) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(FEASIBILITY_SAMPLES):
        config = space.sample(rng)
        quantities = config.derived()
        if all(c.holds(quantities) for c in constraints):
            return
    texts = "; ".join(c.text for c in constraints)
    raise RunError(
        f"no feasible config: 0 of {FEASIBILITY_SAMPLES} sampled configs of space "
        f"{space.name!r} satisfy {texts!r}"
    )


def read_pool(path: str, space: DesignSpace) -> list[ArchConfig]:
    """Configs from a JSONL file (`{"config": ...}` per line, or a bare config per line),
    read by a `ConfigReader` (equal layers built once)."""
    import json

    from tnas.space.reader import ConfigReader, bulk

    reader = ConfigReader(space)
    configs = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise RunError(f"{path}: no such pool file") from None
    except (OSError, UnicodeDecodeError) as err:
        problem = " ".join(str(getattr(err, "strerror", None) or err).split())
        raise RunError(f"{path}: cannot read the pool file: {problem}") from None
    with bulk():
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                data = record.get("config", record) if isinstance(record, dict) else record
                config = reader.read_full(data) if "layers" in data else reader.read_flat(data)
            except (ValueError, TypeError, AttributeError) as err:
                raise RunError(f"{path}:{number}: not a config: {err}") from None
            configs.append(config)
    if not configs:
        raise RunError(f"{path}: the pool is empty")
    return configs


def open_study(spec: RunSpec, db, space: DesignSpace, resume: bool = False):
    """Create the study, or open it after checking that `spec` has its identity (objectives,
    space, task, ...; `check_identity`), in one `RunError` line before anything is written.
    The settings are stored as a user attribute, the run's (budget, workers, sampler, ...)
    replaced by those of this launch so that `resume` goes on with them. `space` is handed to
    samplers that need it (`linas`); `resume` says the run is a `tnas search resume`."""
    import optuna

    objectives = spec.parsed_objectives
    storage = db.optuna_storage()
    name = spec.study_name
    fixed = identity(spec, space)
    stored = stored_settings(storage, name)
    if stored is not None and stored.made_by_tnas:
        if list(stored.objectives) != objectives:
            texts = ", ".join(objective.text for objective in stored.objectives)
            raise RunError(f"study {name!r} exists with objectives {texts}")
        check_identity(name, stored, fixed, spec.space, resume)
    # A driver joining a study that already has trials (a resume, a second driver) seeds its
    # sampler past them, so that it does not propose what the first one proposes.
    existing = trials_in_study(storage, name)
    options = SamplerOptions(
        population_size=spec.population_size,
        linas_batch=spec.linas_batch,
        top_steps=spec.rungs.max_steps if spec.fidelity else None,  # linas learns from rungs
    )
    sampler = create_sampler(spec.sampler, spec.seed + existing, options, space)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=[o.optuna_direction for o in objectives],
        load_if_exists=True,
    )
    if stored is not None and spec.ref_point is not None:
        from tnas.search.reference import study_reference

        frozen = study_reference(study)
        if frozen is not None and frozen != [float(x) for x in spec.ref_point]:
            raise RunError(
                f"study {name!r} measures hypervolume from reference point {frozen}; "
                "leave out --ref-point, or compare on another one with tnas pareto --ref-point"
            )
    settings = StudySettings(
        objectives=tuple(objectives),
        space=spec.space,
        task=spec.task,
        sampler=spec.sampler,
        run=spec.stored(),
        identity=fixed,
    )
    if stored is None or settings.to_attr() != stored.to_attr():
        study.set_user_attr(ATTR, settings.to_attr())
    return study


def stored_settings(storage, name: str) -> StudySettings | None:
    """The settings of study `name` as stored, or None if there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return StudySettings.of(
        storage.get_study_user_attrs(study_id), storage.get_study_directions(study_id)
    )


def trials_in_study(storage, name: str) -> int:
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(name))
    except KeyError:
        return 0


def requeue_orphans(
    study, space: DesignSpace, live: set[str] = frozenset(), adopt_rungs: bool = False
) -> int:
    """Make a study whole after its driver died or was stopped: RUNNING trials of drivers not
    in `live` (ids of live drivers) are failed, `orphaned`; then the config of every trial cut
    short (`orphaned` or `interrupted`) or not profiled (`profile_failed`), the reasons in
    `RERUN`, is queued again, unless it was evaluated since, is running, or is queued already.
    Returns how many configs were queued. With `adopt_rungs` (a multi-fidelity run) the
    RUNNING trials that train in rungs are left running: the driver adopts them
    (`tnas.search.multifidelity`)."""
    from optuna.trial import Trial, TrialState

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.user_attrs.get(DRIVER_ATTR) in live:
            continue
        if adopt_rungs and "rung_target" in frozen.user_attrs:
            continue
        Trial(study, frozen._trial_id).set_user_attr("reason", "orphaned")
        study.tell(frozen.number, state=TrialState.FAIL)
    taken: set[str] = set()
    cut: dict[str, dict] = {}
    for frozen in study.get_trials(deepcopy=False):
        attrs = frozen.user_attrs
        if frozen.state == TrialState.WAITING:
            taken.add(queued_hash(space, frozen))
        elif frozen.state == TrialState.FAIL and attrs.get("reason") in RERUN:
            if "config" in attrs:
                cut.setdefault(attrs.get("config_hash"), attrs["config"])
        elif frozen.state != TrialState.FAIL or attrs.get("reason") not in NOT_EVALUATED:
            taken.add(attrs.get("config_hash"))
    count = 0
    for digest, config in cut.items():
        if digest not in taken:
            study.enqueue_trial(space.to_flat(ArchConfig.from_dict(config)), skip_if_exists=False)
            count += 1
    return count


def queued_hash(space: DesignSpace, frozen) -> str | None:
    """The config hash of a WAITING (queued) trial, from the parameters it was queued with."""
    try:
        return space.from_flat(frozen.system_attrs.get("fixed_params") or {}).hash
    except (SpaceError, ValueError, TypeError, KeyError):
        return None


def make_driver(
    spec, study, space, evaluator, db, constraints, pool, on_update, live=frozenset(), discard=None
) -> SearchDriver:
    """The driver for a run: a `FidelityDriver` for `--fidelity` (`live`: the heartbeat ids of
    other live drivers; `discard`: deletes a stopped trial's checkpoint). A predictor-guided
    sampler gets the run's constraints, the pool, and a hook storing each round's predictor
    quality in the database."""
    from tnas.search.linas import LinasSampler

    extra = {}
    driver_class = SearchDriver
    if spec.fidelity:
        from tnas.search.multifidelity import FidelityDriver

        driver_class = FidelityDriver
        extra = {"rungs": spec.rungs, "discard": discard, "live": set(live)}
    driver = driver_class(
        study=study,
        space=space,
        evaluator=evaluator,
        objectives=spec.parsed_objectives,
        db=db,
        n_trials=spec.trials,
        timeout=spec.timeout,
        constraints=constraints,
        pool=pool,
        on_update=on_update,
        allow_mixed_devices=spec.allow_mixed_devices,
        **extra,
    )
    sampler = study.sampler
    if isinstance(sampler, LinasSampler):
        sampler.feasible = driver.feasible
        sampler.candidates = pool
        sampler.on_round = lambda record: db.save_predictor_round(study.study_name, record)
        sampler.rounds_done = max(
            (r["round"] for r in db.predictor_rounds(study.study_name)), default=0
        )
    return driver
