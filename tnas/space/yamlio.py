"""Reading a design-space file: YAML with line numbers, and the pydantic models of its format.

`compose` turns YAML text into plain Python data plus a `Locator` that remembers the line of
every key and value, so that a semantic error found later ("unknown mixer 'foo'") can still say
where it is: `spaces/tiny.yaml:7: per_layer.mixer: unknown mixer 'foo'; valid: ...`.

>>> data, where = compose("global:\\n  d_model: {choices: [64, 128]}\\n", "tiny.yaml")
>>> data["global"]["d_model"]
{'choices': [64, 128]}
>>> where.error(("global", "d_model"), "bad").args[0]
'tiny.yaml:2: global.d_model: bad'
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

Path = tuple[str | int, ...]


class SpaceError(ValueError):
    """A design space that cannot be used; the message is one line, `file:line: ` first."""


class Locator:
    """Where each key and value of a composed document sits (1-based lines)."""

    def __init__(self, source: str):
        self.source = source
        self.key_lines: dict[Path, int] = {}
        self.value_lines: dict[Path, int] = {}

    def line(self, path: Path, key: bool = False) -> int | None:
        """Line of the value at `path` (or of its key), else of the nearest enclosing entry."""
        path = tuple(path)
        while True:
            lines = self.key_lines if key else self.value_lines
            if path in lines:
                return lines[path]
            if path in self.key_lines:
                return self.key_lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, message: str, key: bool = False) -> SpaceError:
        """A `SpaceError` for the entry at `path`, prefixed `file:line: dotted.path: `."""
        dotted = ".".join(str(part) for part in path)
        text = f"{dotted}: {message}" if dotted else message
        return self.at(self.line(path, key), text)

    def at(self, line: int | None, message: str) -> SpaceError:
        message = " ".join(str(message).split())  # always one line
        prefix = f"{self.source}:{line}: " if line is not None else f"{self.source}: "
        return SpaceError(prefix + message)


def compose(text: str, source: str) -> tuple[Any, Locator]:
    """Parse YAML `text` into plain data and a `Locator`; syntax errors become `SpaceError`."""
    where = Locator(source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = _to_data(loader, node, (), where) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise where.at(line, f"not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise where.at(None, f"not valid YAML: {err}") from None
    finally:
        loader.dispose()
    return data, where


def _to_data(loader: yaml.SafeLoader, node: yaml.Node, path: Path, where: Locator) -> Any:
    where.value_lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise where.at(key_node.start_mark.line + 1, f"unsupported key {key!r}")
            if key in out:
                raise where.at(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            where.key_lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _to_data(loader, value_node, path + (key,), where)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(loader, item, path + (i,), where) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


class ChoicesSpec(BaseModel):
    """`{choices: [a, b, ...]}`: a categorical knob."""

    model_config = ConfigDict(extra="forbid")
    choices: list[Any]  # each value is checked against its knob by `space.py`

    @model_validator(mode="after")
    def _distinct(self):
        if not self.choices:
            raise ValueError("empty domain: no choices")
        seen = []
        for value in self.choices:
            if any(type(value) is type(other) and value == other for other in seen):
                raise ValueError(f"duplicate choice {value!r}")
            seen.append(value)
        return self


class RangeSpec(BaseModel):
    """`{low, high, step}` (step defaults to 1) or `{low, high, log: true}`: an integer range."""

    model_config = ConfigDict(extra="forbid")
    low: StrictInt
    high: StrictInt
    step: StrictInt = Field(default=1, ge=1)
    log: StrictBool = False

    @model_validator(mode="after")
    def _consistent(self):
        if self.low > self.high:
            raise ValueError(f"empty domain: low {self.low} > high {self.high}")
        if self.log and self.step != 1:
            raise ValueError(f"a log range needs step 1, got step {self.step}")
        if self.log and self.low < 1:
            raise ValueError(f"a log range needs low >= 1, got {self.low}")
        return self


class SpaceFile(BaseModel):
    """The top level of a design-space YAML file; knob specs are checked by `space.py`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = ""  # defaults to the file's stem
    paper: str = ""
    description: str = ""
    global_: dict[str, Any] = Field(default_factory=dict, alias="global")
    shared: dict[str, Any] = Field(default_factory=dict)
    per_layer: dict[str, Any] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)


SECTIONS = ("name", "paper", "description", "global", "shared", "per_layer", "constraints")


def validate(model: type[BaseModel], data: Any, path: Path, where: Locator) -> Any:
    """`model.model_validate(data)`, its first error turned into a located one-line SpaceError."""
    if model is SpaceFile and isinstance(data, dict):
        unknown = [key for key in data if key not in SECTIONS]
        if unknown:
            raise where.error(
                path + (unknown[0],),
                f"unknown section {unknown[0]!r}; valid: {', '.join(SECTIONS)}",
                key=True,
            )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        if model is SpaceFile and loc and loc[0] == "global_":
            loc = ("global",) + loc[1:]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            valid = ", ".join(model.model_fields)
            message = f"unknown field {loc[-1]!r}; valid: {valid}"
            return _raise(where.error(path + loc, message, key=True))
        if first["type"] == "missing":
            message = f"missing required field {loc[-1]!r}"
            return _raise(where.error(path, message))
        if loc and first["type"] not in ("value_error", "assertion_error"):
            message = f"{message}, got {first['input']!r}"
        return _raise(where.error(path + loc, message))


def _raise(error: SpaceError):
    raise error from None
