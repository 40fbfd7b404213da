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

import os
import stat
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

from tnas.space.errors import OneLineError, shown

Path = tuple[str | int, ...]
MAX_DEPTH = 32  # levels of nesting; a space file needs 5
MAX_NODES = 100_000  # values in one document, each use of an alias counted
MAX_CHOICES = 1024  # values of one {choices: [...]}
MAX_FILE_BYTES = 1 << 20  # a space or run file is a few KiB


class SpaceError(OneLineError):
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
        prefix = f"{self.source}:{line}: " if line is not None else f"{self.source}: "
        return SpaceError(prefix + message)


def read_document(path: str | os.PathLike[str], what: str = "file") -> str:
    """The UTF-8 text of the regular file at `path`, at most `MAX_FILE_BYTES`; any problem is a
    one-line `SpaceError` (`what` names the file in it: "file", "run file")."""
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise SpaceError(f"{path}: cannot read the {what}: not a regular file")
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such {what}") from None
    except OSError as err:
        raise SpaceError(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpaceError(f"{path}: cannot read the {what}: larger than {MAX_FILE_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: cannot read the {what}: not UTF-8 at byte {err.start}") from None


def compose(text: str, source: str) -> tuple[Any, Locator]:
    """Parse YAML `text` into plain data and a `Locator`; every problem becomes `SpaceError`.

    Beyond YAML's own errors, refused with one line: keys that are not strings or integers,
    duplicate keys, nesting deeper than `MAX_DEPTH`, and more than `MAX_NODES` values counting
    each use of an alias (so an alias bomb or an alias to itself is refused, not expanded).
    """
    where = Locator(source)
    loader = None
    try:
        _check_depth(text, where)
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        data = _to_data(loader, node, (), where, [0]) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise where.at(line, f"not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:  # a ReaderError: a character YAML does not allow
        raise where.at(None, f"not valid YAML: {err}") from None
    except RecursionError:
        raise where.at(None, f"not valid YAML: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as err:
        if isinstance(err, SpaceError):
            raise
        raise where.at(None, f"not valid YAML: {err}") from None  # e.g. an int of 5,000 digits
    finally:
        if loader is not None:
            loader.dispose()
    return data, where


def _check_depth(text: str, where: Locator) -> None:
    """Refuse nesting deeper than `MAX_DEPTH` from YAML's events, before the (recursive)
    composer sees it."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise where.at(line, f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def _to_data(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, where: Locator, count: list[int]
) -> Any:
    line = node.start_mark.line + 1
    count[0] += 1
    if count[0] > MAX_NODES:
        raise where.at(
            line, f"more than {MAX_NODES} values (aliases count each time they are used)"
        )
    if len(path) > MAX_DEPTH:
        raise where.at(line, f"nested more than {MAX_DEPTH} levels deep")
    where.value_lines[path] = line
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise where.at(key_line, "unsupported key: a key must be a string or an integer")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise where.at(key_line, f"unsupported key {shown(key)}")
            if key in out:
                raise where.at(key_line, f"duplicate key {shown(key)}")
            where.key_lines[path + (key,)] = key_line
            out[key] = _to_data(loader, value_node, path + (key,), where, count)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_data(loader, item, path + (i,), where, count) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


class ChoicesSpec(BaseModel):
    """`{choices: [a, b, ...]}`: a categorical knob."""

    model_config = ConfigDict(extra="forbid")
    choices: list[Any]  # each value is checked against its knob by `domains.py`

    @model_validator(mode="after")
    def _distinct(self):
        if not self.choices:
            raise ValueError("empty domain: no choices")
        if len(self.choices) > MAX_CHOICES:
            raise ValueError(f"{len(self.choices)} choices; at most {MAX_CHOICES}")
        seen = set()
        for value in self.choices:
            key = (type(value), value if isinstance(value, str | int | float) else repr(value))
            if key in seen:
                raise ValueError(f"duplicate choice {shown(value)}")
            seen.add(key)
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
    """The top level of a design-space YAML file; sections are checked by `space.py`, each
    knob's spec by `domains.py`."""

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
                f"unknown section {shown(unknown[0])}; valid: {', '.join(SECTIONS)}",
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
            message = f"unknown field {shown(loc[-1])}; valid: {valid}"
            return _raise(where.error(path + loc, message, key=True))
        if first["type"] == "missing":
            message = f"missing required field {shown(loc[-1])}"
            return _raise(where.error(path, message))
        if loc and first["type"] not in ("value_error", "assertion_error"):
            message = f"{message}, got {shown(first['input'])}"
        return _raise(where.error(path + loc, message))


def _raise(error: SpaceError):
    raise error from None
