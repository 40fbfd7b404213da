"""A search run: its settings (from CLI options or one YAML file), checked before anything is
written, then the study created or resumed and the driver started.

>>> spec = RunSpec(space="primer", objectives=["accuracy:max", "latency_ms:min"], trials=10)
>>> spec.study_name
'primer-digits-nsga2-s0'
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tnas.search.driver import Objective, SearchDriver
from tnas.search.samplers import SAMPLERS, create_sampler
from tnas.space import ArchConfig, DesignSpace, load_space
from tnas.space.catalog import unknown_name
from tnas.space.constraints import Constraint, ConstraintSyntaxError

FEASIBILITY_SAMPLES = 2000


class RunError(ValueError):
    """A run that cannot start; one line, naming the problem."""


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
    population_size: int = 16

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        if name not in SAMPLERS:
            raise ValueError(unknown_name("sampler", name, SAMPLERS))
        return name

    @field_validator("trials", "steps", "batch_size", "profile_batch", "profile_repeats")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @property
    def study_name(self) -> str:
        space = Path(self.space).stem if self.space.endswith((".yaml", ".yml")) else self.space
        task = self.task.split(",")[0].split(":")[-1]
        return self.study or f"{space}-{task}-{self.sampler}-s{self.seed}"

    @property
    def parsed_objectives(self) -> list[Objective]:
        return [Objective.parse(text) for text in self.objectives]

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> RunSpec:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise RunError(f"{path}: no such run file") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise RunError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
        if not isinstance(data, dict):
            raise RunError(f"{path}: a run file must be a mapping of settings")
        return cls.build(data | {k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def build(cls, data: dict) -> RunSpec:
        try:
            return cls(**data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise RunError(f"run setting {where}: {first['msg']}") from None


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
    constraints = []
    for text in spec.constraints:
        try:
            constraint = Constraint.parse(text)
        except ConstraintSyntaxError as err:
            raise RunError(str(err)) from None
        constraints.append(constraint)
    check_feasible(space, constraints)
    return constraints


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
    """Configs from a JSONL file (`{"config": ...}` per line, or a bare config per line)."""
    import json

    configs = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise RunError(f"{path}: no such pool file") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            data = record.get("config", record) if isinstance(record, dict) else record
            config = ArchConfig.from_dict(data) if "layers" in data else space.from_flat(data)
        except (ValueError, TypeError, AttributeError) as err:
            raise RunError(f"{path}:{number}: not a config: {err}") from None
        configs.append(config)
    if not configs:
        raise RunError(f"{path}: the pool is empty")
    return configs


def open_study(spec: RunSpec, db, space: DesignSpace | None = None, load_only: bool = False):
    """Create the study (or load it for resume); its settings are stored as a user attribute.
    `space` is handed to samplers that need it (`linas`)."""
    import optuna

    objectives = spec.parsed_objectives
    storage = db.optuna_storage()
    name = spec.study_name
    # A driver joining a study that already has trials (a resume, a second driver) seeds its
    # sampler past them, so that it does not propose what the first one proposes.
    existing = trials_in_study(storage, name)
    sampler = create_sampler(spec.sampler, spec.seed + existing, spec.population_size, space)
    if load_only:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=[o.optuna_direction for o in objectives],
        load_if_exists=True,
    )
    stored = study.user_attrs.get("tnas")
    wanted = [o.to_dict() for o in objectives]
    if stored is None:
        study.set_user_attr(
            "tnas",
            {
                "objectives": wanted,
                "space": spec.space,
                "task": spec.task,
                "sampler": spec.sampler,
                "run": spec.model_dump(),
            },
        )
    elif stored["objectives"] != wanted:
        raise RunError(
            f"study {name!r} exists with objectives "
            f"{', '.join(o['name'] + ':' + o['direction'] for o in stored['objectives'])}"
        )
    return study


def trials_in_study(storage, name: str) -> int:
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(name))
    except KeyError:
        return 0


def requeue_orphans(study, space: DesignSpace) -> int:
    """Mark RUNNING trials (their driver died) failed, `orphaned`, and queue their configs."""
    from optuna.trial import Trial, TrialState

    count = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        Trial(study, frozen._trial_id).set_user_attr("reason", "orphaned")
        study.tell(frozen.number, state=TrialState.FAIL)
        if "config" in frozen.user_attrs:
            config = ArchConfig.from_dict(frozen.user_attrs["config"])
            study.enqueue_trial(space.to_flat(config), skip_if_exists=False)
        count += 1
    return count


def load_run_space(spec: RunSpec) -> DesignSpace:
    return load_space(spec.space)


def make_driver(spec, study, space, evaluator, db, constraints, pool, on_update) -> SearchDriver:
    """The driver for a run. A predictor-guided sampler gets the run's constraints, the pool,
    and a hook storing each round's predictor quality in the database."""
    from tnas.search.linas import LinasSampler

    driver = SearchDriver(
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
