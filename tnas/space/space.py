"""`DesignSpace`: the set of `ArchConfig`s a search may choose from, read from YAML.

A space names a domain for each knob: model-wide knobs under `global`, layer knobs with one value
for every layer under `shared`, and layer knobs chosen layer by layer under `per_layer`; knobs not
named keep the `ArchConfig` / `LayerConfig` defaults. Constraints such as `params <= 20e6` are
checked on `ArchConfig.derived()`. Every config a space hands out is in the space and feasible.

The knobs are listed in `tnas.space.knobs`, their domains in `tnas.space.domains`, and the exact
size is counted in `tnas.space.size`; a predictor's encoding of a config is
`tnas.predictors.encode`.

>>> space = load_space("primer")
>>> config = space.sample(np.random.default_rng(0))
>>> space.contains(config) and space.from_flat(space.to_flat(config)) == config
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tnas.space.config import ArchConfig, ConfigError, LayerConfig
from tnas.space.constraints import Constraint, ConstraintSyntaxError
from tnas.space.domains import (
    MAX_ENUMERATED,
    MAX_VALUE,
    Choices,
    Domain,
    Fixed,
    IntRange,
    parse_domain,
)
from tnas.space.errors import unknown_name
from tnas.space.knobs import (
    GLOBAL_DEFAULTS,
    GLOBAL_KNOBS,
    LAYER_DEFAULTS,
    LAYER_KNOBS,
    global_visible,
    uses,
)
from tnas.space.size import count_configs
from tnas.space.yamlio import Locator, SpaceError, SpaceFile, compose, read_document, validate

PRESETS = ("primer", "wide", "mixers", "simq", "matformer")
SAMPLE_TRIES = 1000
FEASIBILITY_SAMPLES = 2000
SCOPES = ("global", "shared", "per_layer")


class DesignSpace:
    """A set of architectures: knob domains, divisibility rules and constraints.

    Build one with `load_space`, `DesignSpace.from_yaml` or `DesignSpace.from_dict`.

    >>> space = DesignSpace.from_dict({
    ...     "name": "tiny",
    ...     "global": {"d_model": {"choices": [64, 96]}, "n_layers": {"low": 1, "high": 2}},
    ...     "per_layer": {"mixer": {"choices": ["attention", "pool"]},
    ...                   "n_heads": {"choices": [2, 4]}},
    ...     "constraints": ["params <= 1e6"],
    ... })
    >>> space.max_depth, space.size()
    (2, 24)
    >>> config = space.sample(np.random.default_rng(0))
    >>> space.contains(config), space.feasible(config)
    (True, True)
    """

    def __init__(
        self,
        name: str,
        globals_: Mapping[str, Domain],
        layer_knobs: Mapping[str, Domain],
        scopes: Mapping[str, str],
        constraints: Sequence[Constraint] = (),
        paper: str = "",
        description: str = "",
        source: str = "<dict>",
    ):
        self.name = name
        self.paper = paper
        self.description = description
        self.source = source
        self._globals = {
            knob: globals_.get(knob, Fixed(GLOBAL_DEFAULTS[knob])) for knob in GLOBAL_KNOBS
        }
        self._layer = {
            knob: layer_knobs.get(knob, Fixed(LAYER_DEFAULTS[knob])) for knob in LAYER_KNOBS
        }
        self._scopes = {knob: scopes.get(knob, "shared") for knob in LAYER_KNOBS}
        self._named = set(globals_) | set(layer_knobs)
        self._rules = tuple(constraints)
        self.constraints = tuple(rule.text for rule in self._rules)
        self.max_depth = max(self._globals["n_layers"].values)
        self._heads: dict[int, list[int]] = {}  # valid n_heads by d_model, filled when asked

    @classmethod
    def from_yaml(cls, path: str | Path) -> DesignSpace:
        """Load a space from a YAML file; every problem is a one-line `SpaceError` with `file:line`.

        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        ...     _ = f.write("name: t\\nglobal:\\n  d_model: {choices: [64, 128]}\\n")
        >>> DesignSpace.from_yaml(f.name).size()
        2
        >>> os.unlink(f.name)
        """
        return cls._from_text(read_document(path), str(path))

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> DesignSpace:
        """Build a space from already-parsed YAML data (errors carry `source`, no line)."""
        return cls._from_data(data, Locator(source))

    @classmethod
    def _from_text(cls, text: str, source: str) -> DesignSpace:
        data, where = compose(text, source)
        return cls._from_data(data, where)

    @classmethod
    def _from_data(cls, data: Any, where: Locator) -> DesignSpace:
        if not isinstance(data, Mapping):
            raise where.error(
                (),
                f"a design space must be a mapping with sections name, global, shared, "
                f"per_layer, constraints; got {type(data).__name__}",
            )
        spec = validate(SpaceFile, dict(data), (), where)
        globals_: dict[str, Domain] = {}
        layer_knobs: dict[str, Domain] = {}
        scopes: dict[str, str] = {}
        for knob, value in spec.global_.items():
            path = ("global", knob)
            if knob in LAYER_KNOBS:
                raise where.error(
                    path, f"{knob} is a layer knob; put it under shared or per_layer", key=True
                )
            if knob not in GLOBAL_KNOBS:
                raise where.error(path, unknown_name("knob", knob, GLOBAL_KNOBS), key=True)
            globals_[knob] = parse_domain(knob, value, path, where)
        for section in ("shared", "per_layer"):
            for knob, value in getattr(spec, section).items():
                path = (section, knob)
                if knob in GLOBAL_KNOBS:
                    raise where.error(path, f"{knob} is a global knob; put it under global", True)
                if knob not in LAYER_KNOBS:
                    raise where.error(path, unknown_name("knob", knob, LAYER_KNOBS), key=True)
                if knob in layer_knobs:
                    raise where.error(path, f"{knob} is in both shared and per_layer", key=True)
                layer_knobs[knob] = parse_domain(knob, value, path, where)
                scopes[knob] = section
        rules = []
        for i, text in enumerate(spec.constraints):
            try:
                rules.append(Constraint.parse(text))
            except ConstraintSyntaxError as err:
                raise where.error(("constraints", i), str(err)) from None
        space = cls(
            spec.name or Path(where.source).stem,
            globals_,
            layer_knobs,
            scopes,
            rules,
            paper=spec.paper,
            description=spec.description,
            source=where.source,
        )
        space._check(where)
        return space

    def _check(self, where: Locator) -> None:
        """Cross-knob checks that a single knob's spec cannot catch."""
        if not self._layer["head_dim"].fixed:
            raise where.error(
                (self._scopes["head_dim"], "head_dim"),
                "head_dim takes one value (the head size every layer's heads share)",
            )
        heads = self._layer["n_heads"]
        if "n_heads" in self._named:
            path = (self._scopes["n_heads"], "n_heads")
        else:
            path = ("global", "d_model")
        if any(uses(mixer, "n_heads") for mixer in self._layer["mixer"].values):
            for d_model in self._globals["d_model"].values:
                if not self.valid_heads(d_model):
                    raise where.error(
                        path, f"no n_heads in {heads.text()} divides d_model {d_model}"
                    )
        if "classifier" in self._globals["head"].values:
            if any(n < 2 for n in self._globals["n_classes"].values):
                raise where.error(("global", "head"), "a classifier head needs n_classes >= 2")
        if self._rules:
            self._check_satisfiable(where)

    def _check_satisfiable(self, where: Locator) -> None:
        rng = np.random.default_rng(0)
        quantities = []
        for _ in range(FEASIBILITY_SAMPLES):  # stops at the first config meeting every rule
            quantities.append(self._build({}, rng).derived())
            if all(rule.holds(quantities[-1]) for rule in self._rules):
                return
        for i, rule in enumerate(self._rules):
            hits = sum(rule.holds(q) for q in quantities)
            if hits == 0:
                raise where.error(
                    ("constraints", i),
                    f"constraints are unsatisfiable: 0 of {FEASIBILITY_SAMPLES} sampled configs "
                    f"satisfy {rule.text!r}",
                )
        raise where.error(
            ("constraints",),
            f"constraints are unsatisfiable: 0 of {FEASIBILITY_SAMPLES} sampled configs "
            f"satisfy all of {', '.join(map(repr, self.constraints))} together",
            key=True,
        )

    def values(self, knob: str) -> Sequence:
        """The values a global or layer knob can take, in domain order (`n_heads`: those that
        are valid for some `d_model`).

        >>> load_space("matformer").values("ffn_dim")
        (128, 256, 512, 1024)
        """
        if knob == "n_heads":
            valid = {n for d in self._globals["d_model"].values for n in self.valid_heads(d)}
            return tuple(n for n in self._layer[knob].values if n in valid)
        return self.domain(knob).values

    def domain(self, knob: str) -> Domain:
        """The domain of a global or layer knob (`Fixed` where the space does not search it).

        >>> load_space("matformer").domain("ffn_dim")
        Choices(choices=(128, 256, 512, 1024))
        """
        if knob in GLOBAL_KNOBS:
            return self._globals[knob]
        if knob not in LAYER_KNOBS:
            raise KeyError(unknown_name("knob", knob, GLOBAL_KNOBS + LAYER_KNOBS))
        return self._layer[knob]

    def searched(self, scope: str) -> list[str]:
        """The knobs searched in `scope` (global, shared or per_layer), in the order of
        `GLOBAL_KNOBS` / `LAYER_KNOBS`; a fixed knob is in no scope.

        >>> load_space("matformer").searched("per_layer")
        ['ffn_dim']
        """
        if scope == "global":
            return [knob for knob in GLOBAL_KNOBS if not self._globals[knob].fixed]
        if scope not in SCOPES:
            raise KeyError(unknown_name("scope", scope, SCOPES))
        return [k for k in LAYER_KNOBS if self._scopes[k] == scope and not self._layer[k].fixed]

    def valid_heads(self, d_model: int) -> list[int]:
        """The n_heads values of the space that go with `d_model`: those that divide it, or
        every one when `head_dim` fixes the size of a head.

        >>> DesignSpace.from_dict({"shared": {"n_heads": {"choices": [2, 3, 4]}}}).valid_heads(8)
        [2, 4]
        """
        if d_model not in self._heads:
            head_dim = self._layer["head_dim"]
            heads = self._layer["n_heads"].values
            if head_dim.fixed and head_dim.value:  # heads of a fixed size: any count is valid
                self._heads[d_model] = list(heads)
            else:
                self._heads[d_model] = [n for n in heads if d_model % n == 0]
        return self._heads[d_model]

    def _repair_heads(self, n_heads: int, d_model: int) -> int:
        """The largest valid n_heads <= the given one, else the smallest valid one."""
        valid = self.valid_heads(d_model)
        below = [n for n in valid if n <= n_heads]
        return max(below) if below else min(valid)

    def _build(self, flat: Mapping[str, Any], rng: np.random.Generator | None = None) -> ArchConfig:
        """A config from flat values; missing ones are sampled from `rng` (else an error).

        Values must lie in their domains; an n_heads that does not divide d_model is repaired.
        """

        def pick(key: str, domain: Domain, d_model: int | None = None) -> Any:
            if domain.fixed:
                return domain.value
            if key in flat:
                value = flat[key]
                if value not in domain:
                    raise SpaceError(f"{key}={value!r} is not in its domain {domain.text()}")
                return value
            if rng is None:
                raise SpaceError(f"flat config has no value for {key!r}")
            if d_model is not None:  # n_heads: sample only the values that divide d_model
                valid = self.valid_heads(d_model)
                return valid[int(rng.integers(len(valid)))]
            return domain.sample(rng)

        head = pick("head", self._globals["head"])
        values = {}
        for knob in GLOBAL_KNOBS:
            domain = self._globals[knob]
            if knob == "head":
                values[knob] = head
            elif global_visible(knob, head):
                values[knob] = pick(knob, domain)
            else:
                values[knob] = domain.values[0]  # normalised by ArchConfig
        d_model, n_layers = values["d_model"], values["n_layers"]
        shared: dict[str, Any] = {}

        def layer_value(i: int, knob: str) -> Any:
            domain = self._layer[knob]
            d = d_model if knob == "n_heads" else None
            if self._scopes[knob] == "per_layer":
                value = pick(f"layer{i}.{knob}", domain, d)
            else:
                if knob not in shared:
                    shared[knob] = pick(knob, domain, d)
                value = shared[knob]
            if knob == "n_heads" and value not in self.valid_heads(d_model):
                value = self._repair_heads(value, d_model)
            return value

        layers = []
        for i in range(n_layers):
            mixer = layer_value(i, "mixer")
            options = {k: layer_value(i, k) if uses(mixer, k) else 0 for k in LAYER_KNOBS[1:]}
            layers.append(LayerConfig(mixer=mixer, **options))
        try:
            return ArchConfig(**values, layers=tuple(layers))
        except ConfigError as err:
            raise SpaceError(str(err)) from None

    def to_flat(self, config: ArchConfig) -> dict[str, Any]:
        """The searched values of `config` under stable names: `d_model`, `activation` (shared),
        `layer3.mixer`; only active layers and only options the layer's mixer reads.

        >>> space = load_space("primer")
        >>> config = space.sample(np.random.default_rng(0))
        >>> space.from_flat(space.to_flat(config)) == config
        True
        """
        flat: dict[str, Any] = {}
        for knob in self.searched("global"):
            if global_visible(knob, config.head):
                flat[knob] = getattr(config, knob)
        for knob in self.searched("shared"):
            users = [layer for layer in config.layers if uses(layer.mixer, knob)]
            if users:
                flat[knob] = getattr(users[0], knob)
        per_layer = self.searched("per_layer")
        for i, layer in enumerate(config.layers):
            for knob in per_layer:
                if uses(layer.mixer, knob):
                    flat[f"layer{i}.{knob}"] = getattr(layer, knob)
        return flat

    def from_flat(self, flat: Mapping[str, Any]) -> ArchConfig:
        """The config for a flat dict from `to_flat` or `suggest` (Optuna's `trial.params`).

        Keys that are not knobs of this space are ignored. An n_heads that does not divide
        d_model is repaired to the largest valid choice below it (else the smallest valid), so
        every value Optuna suggests maps to a config. Raises `SpaceError` for a missing key or a
        value outside its domain.
        """
        return self._build(flat)

    def suggest(self, trial) -> ArchConfig:
        """Ask an Optuna trial for a config, with the names of `to_flat`.

        Only knobs that matter are suggested (a layer's `n_heads` only if its mixer uses heads,
        layers only up to the suggested `n_layers`), so `trial.params` has the keys of
        `to_flat(config)`, and `from_flat(trial.params) == config`. The values agree too, except
        an n_heads that does not divide d_model, which is repaired (see `from_flat`).

        >>> import optuna
        >>> space = load_space("primer")
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> config = space.suggest(trial)
        >>> space.from_flat(trial.params) == config
        True
        """
        flat: dict[str, Any] = {}
        head = self._globals["head"].values[0]
        for knob in self.searched("global"):
            if global_visible(knob, head):
                flat[knob] = self._globals[knob].suggest(trial, knob)
                if knob == "head":
                    head = flat[knob]
        n_layers = flat.get("n_layers", self._globals["n_layers"].values[0])
        mixer = self._layer["mixer"]
        if self._scopes["mixer"] == "per_layer" and not mixer.fixed:
            mixers = [mixer.suggest(trial, f"layer{i}.mixer") for i in range(n_layers)]
            flat.update({f"layer{i}.mixer": m for i, m in enumerate(mixers)})
        else:
            shared_mixer = mixer.value if mixer.fixed else mixer.suggest(trial, "mixer")
            if not mixer.fixed:
                flat["mixer"] = shared_mixer
            mixers = [shared_mixer] * n_layers
        for knob in self.searched("shared"):
            if knob != "mixer" and any(uses(m, knob) for m in mixers):
                flat[knob] = self._layer[knob].suggest(trial, knob)
        for i, layer_mixer in enumerate(mixers):
            for knob in self.searched("per_layer"):
                if knob != "mixer" and uses(layer_mixer, knob):
                    key = f"layer{i}.{knob}"
                    flat[key] = self._layer[knob].suggest(trial, key)
        return self.from_flat(flat)

    def feasible(self, config: ArchConfig) -> bool:
        """Whether `config` satisfies every constraint."""
        quantities = config.derived()
        return all(rule.holds(quantities) for rule in self._rules)

    def constraint_values(self, config: ArchConfig) -> list[float]:
        """One value per constraint, <= 0 when satisfied (Optuna's `constraints_func` format)."""
        quantities = config.derived()
        return [rule.value(quantities) for rule in self._rules]

    def contains(self, config: ArchConfig) -> bool:
        """Whether `config` is a point of this space: every searched value in its domain, fixed
        values matching, shared values equal across the layers that read them, and feasible."""
        if not isinstance(config, ArchConfig):
            return False
        try:
            rebuilt = self._build(self.to_flat(config))
        except SpaceError:
            return False
        return rebuilt == config and self.feasible(config)

    def sample(self, rng: np.random.Generator) -> ArchConfig:
        """A random feasible config: each knob uniform over its domain (log-uniform for log
        ranges; n_heads uniform over the choices that divide d_model), rejection-sampled
        against the constraints.

        >>> space = load_space("wide")
        >>> space.sample(np.random.default_rng(1)).derived()["total_heads"]
        16
        """
        for _ in range(SAMPLE_TRIES):
            config = self._build({}, rng)
            if self.feasible(config):
                return config
        raise SpaceError(
            f"{self.source}: no feasible config in {SAMPLE_TRIES} samples of space {self.name!r}"
        )

    def _resample(self, key: str, rng: np.random.Generator) -> Any:
        return self.domain(key.split(".")[-1]).sample(rng)

    def mutate(self, config: ArchConfig, rng: np.random.Generator, prob: float = 0.2):
        """Resample each searched value (depth included) with probability `prob`.

        Layers or options that become active take random values. Retries until the child is
        in the space, feasible and different from `config`; returns `config` if none is found.

        >>> space = load_space("mixers")
        >>> rng = np.random.default_rng(0)
        >>> space.contains(space.mutate(space.sample(rng), rng))
        True
        """
        flat = self.to_flat(config)
        for _ in range(100):
            child_flat = {
                key: self._resample(key, rng) if rng.random() < prob else value
                for key, value in flat.items()
            }
            child = self._build(child_flat, rng)
            if child != config and self.contains(child):
                return child
        return config

    def crossover(self, a: ArchConfig, b: ArchConfig, rng: np.random.Generator) -> ArchConfig:
        """Uniform crossover of the flat dicts: each shared key from either parent, depth from
        one parent, layers that only one parent has taken from that parent. Retries until the
        child is in the space and feasible, else returns one of the parents.

        >>> space = load_space("primer")
        >>> rng = np.random.default_rng(0)
        >>> child = space.crossover(space.sample(rng), space.sample(rng), rng)
        >>> space.contains(child)
        True
        """
        flat_a, flat_b = self.to_flat(a), self.to_flat(b)
        for _ in range(20):
            child_flat = {}
            for key in flat_a.keys() | flat_b.keys():
                if key in flat_a and key in flat_b:
                    child_flat[key] = flat_a[key] if rng.random() < 0.5 else flat_b[key]
                else:
                    child_flat[key] = flat_a[key] if key in flat_a else flat_b[key]
            child = self._build(child_flat, rng)
            if self.contains(child):
                return child
        return a if rng.random() < 0.5 else b

    def size(self) -> int:
        """Exact number of distinct configs, before constraints.

        Values a config cannot tell apart are counted once: options a layer's mixer does not
        read, shared options no layer reads, n_heads choices that do not divide d_model,
        `tie_embeddings` under a classifier head and `n_classes` under an LM head.
        """
        return count_configs(self)

    def log10_size(self) -> float:
        """`log10(size())`, for spaces too large to print."""
        return math.log10(self.size())

    def describe(self) -> list[tuple[str, str, str]]:
        """Rows (knob, scope, domain) for a table; scope is global, shared, per-layer or fixed.

        >>> ("n_layers", "global", "{1, 2, 4, 8, 16}") in load_space("wide").describe()
        True
        """
        rows = []
        for knob in GLOBAL_KNOBS:
            domain = self._globals[knob]
            rows.append((knob, "fixed" if domain.fixed else "global", domain.text()))
        for knob in LAYER_KNOBS:
            domain = self._layer[knob]
            if not any(uses(m, knob) for m in self._layer["mixer"].values):
                continue
            scope = "fixed" if domain.fixed else self._scopes[knob].replace("_", "-")
            rows.append((knob, scope, domain.text()))
        return rows

    @property
    def digest(self) -> str:
        """A canonical hash of what the space can choose: every knob's domain and scope, and
        its constraints; not its name, file or description. Two spaces with one digest offer
        the same configs, so a study keeps the digest of its space to tell an edited one.

        >>> load_space("simq").digest == load_space("simq").digest != load_space("primer").digest
        True
        """
        import hashlib
        import json

        knobs = {knob: [scope, text] for knob, scope, text in self.describe()}
        data = {"knobs": knobs, "constraints": sorted(self.constraints)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"DesignSpace({self.name!r}, size=10^{self.log10_size():.1f}, source={self.source!r})"
        )


def _preset_file(name: str):
    return resources.files("tnas.space").joinpath("presets", f"{name}.yaml")


def load_space(path_or_preset: str | Path) -> DesignSpace:
    """Load a packaged preset by name (`PRESETS`) or a YAML file by path.

    >>> load_space("wide").name
    'wide'
    """
    text = str(path_or_preset)
    is_name = "/" not in text and not text.endswith((".yaml", ".yml"))
    if is_name and text in PRESETS:
        resource = _preset_file(text)
        return DesignSpace._from_text(resource.read_text(), f"presets/{text}.yaml")
    if is_name and not Path(text).exists():
        raise SpaceError(
            f"{text}: unknown preset; valid: {', '.join(PRESETS)} (or give a path to a .yaml file)"
        )
    return DesignSpace.from_yaml(text)


def preset_names() -> list[str]:
    """Names of the presets packaged in `tnas/space/presets/`."""
    folder = resources.files("tnas.space").joinpath("presets")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


__all__ = [  # with the names that moved out of this module, still imported from it
    "FEASIBILITY_SAMPLES",
    "GLOBAL_KNOBS",
    "LAYER_KNOBS",
    "MAX_ENUMERATED",
    "MAX_VALUE",
    "PRESETS",
    "SAMPLE_TRIES",
    "Choices",
    "DesignSpace",
    "Domain",
    "Fixed",
    "IntRange",
    "SpaceError",
    "load_space",
    "preset_names",
]
