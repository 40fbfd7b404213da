"""The values a knob can take: `Fixed`, `Choices` and `IntRange`, and reading one from YAML.

A space file gives each knob a plain value (fixed), `{choices: [...]}` or an integer range
`{low, high, step}` / `{low, high, log: true}`; `parse_domain` turns one into a domain after
checking every value against the knob (a known mixer name, an integer in bounds, ...).

>>> IntRange(64, 512, step=64).text(), 128 in IntRange(64, 512, step=64)
('64..512 step 64', True)
>>> Choices(("gelu", "swiglu")).categorical, True in Choices((1, 2))
(True, False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tnas.space.catalog import ACTIVATIONS, BITS, HEADS, MIXERS, NORMS
from tnas.space.config import MAX_LAYERS
from tnas.space.errors import shown, unknown_name
from tnas.space.yamlio import ChoicesSpec, Locator, RangeSpec, validate

MAX_VALUE = 2**31 - 1  # the largest integer a knob takes
# d_model and n_heads are enumerated together (which head counts divide which widths), so each
# takes at most this many values; other ranges may be as long as MAX_VALUE allows.
MAX_ENUMERATED = 1024
# Knobs that take a name (or, for bits, one of a few widths).
_NAMED = {
    "norm": NORMS,
    "head": HEADS,
    "mixer": tuple(MIXERS),
    "activation": tuple(ACTIVATIONS),
    "bits": BITS,
}


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps `True` apart from `1`.

    >>> same_value(1, 1), same_value(True, 1)
    (True, False)
    """
    return a == b and isinstance(a, bool) == isinstance(b, bool)


@dataclass(frozen=True)
class Fixed:
    """One value, never searched."""

    value: Any
    fixed = True

    @property
    def values(self) -> Sequence:
        return (self.value,)

    def __contains__(self, value) -> bool:
        return same_value(value, self.value)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def text(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Choices:
    """A categorical domain: strings, ints or bools."""

    choices: tuple
    fixed = False

    @property
    def values(self) -> Sequence:
        return self.choices

    @property
    def categorical(self) -> bool:
        """Strings are one-hot encoded; numbers and bools are scaled to [0, 1]."""
        return any(isinstance(choice, str) for choice in self.choices)

    def __contains__(self, value) -> bool:
        return any(same_value(value, choice) for choice in self.choices)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def scale(self, value) -> float:
        low, high = min(self.choices), max(self.choices)
        return 0.0 if high == low else float(np.clip((value - low) / (high - low), 0.0, 1.0))

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def text(self) -> str:
        return "{" + ", ".join(map(str, self.choices)) + "}"


@dataclass(frozen=True)
class IntRange:
    """Integers `low, low + step, ... <= high`; with `log`, sampled log-uniformly (step 1)."""

    low: int
    high: int
    step: int = 1
    log: bool = False
    fixed = False
    categorical = False

    @property
    def values(self) -> range:
        return range(self.low, self.high + 1, self.step)

    def __contains__(self, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value in self.values

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            value = int(math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1))))
            return min(max(value, self.low), self.high)
        return self.low + self.step * int(rng.integers(len(self.values)))

    def scale(self, value) -> float:
        if self.high == self.low:
            return 0.0
        if self.log:
            ratio = math.log(max(value, self.low) / self.low) / math.log(self.high / self.low)
        else:
            ratio = (value - self.low) / (self.high - self.low)
        return float(np.clip(ratio, 0.0, 1.0))

    def suggest(self, trial, name: str) -> int:
        high = self.values[-1]
        if self.log:
            return trial.suggest_int(name, self.low, high, log=True)
        return trial.suggest_int(name, self.low, high, step=self.step)

    def text(self) -> str:
        high = self.values[-1]
        if self.log:
            return f"{self.low}..{high} log"
        return f"{self.low}..{high}" + (f" step {self.step}" if self.step != 1 else "")


Domain = Fixed | Choices | IntRange


def value_problem(knob: str, value: Any) -> str | None:
    """Why `value` cannot be taken by `knob`, or None.

    >>> value_problem("n_layers", 0)
    'must be an integer >= 1, got 0'
    """
    if knob in _NAMED:
        valid = _NAMED[knob]
        if not any(same_value(value, name) for name in valid):
            return unknown_name(knob, value, valid)
        return None
    if knob == "tie_embeddings":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    least = 0 if knob in ("n_classes", "head_dim") else 1
    most = MAX_LAYERS if knob == "n_layers" else MAX_VALUE
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        return f"must be an integer >= {least}, got {shown(value)}"
    if value > most:
        return f"must be an integer <= {most}, got {shown(value)}"
    return None


def parse_domain(knob: str, spec: Any, path: tuple, where: Locator) -> Domain:
    """The domain of `knob` written as `spec` at `path` of a space file; a problem is a located
    one-line `SpaceError`.

    >>> parse_domain("ffn_dim", {"low": 64, "high": 256, "step": 64}, (), Locator("s.yaml"))
    IntRange(low=64, high=256, step=64, log=False)
    """
    if isinstance(spec, list):
        raise where.error(path, f"write a list of values as {{choices: {spec}}}")
    if not isinstance(spec, dict):
        problem = value_problem(knob, spec)
        if problem:
            raise where.error(path, problem)
        return Fixed(spec)
    if not all(isinstance(key, str) for key in spec):
        raise where.error(path, "a knob's fields are choices, or low, high, step and log")
    if "choices" in spec:
        parsed = validate(ChoicesSpec, spec, path, where)
        for i, value in enumerate(parsed.choices):
            problem = value_problem(knob, value)
            if problem:
                raise where.error(path + ("choices", i), problem)
        return Choices(tuple(parsed.choices))
    parsed = validate(RangeSpec, spec, path, where)
    domain = IntRange(parsed.low, parsed.high, parsed.step, parsed.log)
    if knob in _NAMED and knob != "bits" or knob == "tie_embeddings":
        raise where.error(path, f"{knob} takes {{choices: [...]}}, not a range")
    checked = domain.values if knob == "bits" else (domain.low, domain.high)
    for value in checked:
        problem = value_problem(knob, value)
        if problem:
            raise where.error(path, problem)
    if knob in ("d_model", "n_heads") and len(domain.values) > MAX_ENUMERATED:
        raise where.error(
            path,
            f"{knob} takes at most {MAX_ENUMERATED} values, this range has "
            f"{len(domain.values)}; use a larger step",
        )
    return domain
