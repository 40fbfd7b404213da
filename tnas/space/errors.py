"""One-line errors: the one helper every layer uses to put a problem on one line.

Everything a user can get wrong (a YAML file, a name, a setting, a checkpoint) ends as one
line, `error: ...`, on the command line. This module is where such a line is made:

- `shown(value)`: a value quoted for a message, cut to a length;
- `one_line(message)`: any message or exception on one line, of bounded length;
- `OneLineError`: the `ValueError` every loader of user input raises;
- `unknown_name(kind, name, valid)`: the message for a name not in a registry.

It lives in `space`, the package every other one may import, and imports nothing of ours.

>>> one_line(ValueError("bad value\\n  in line 3"))
'bad value in line 3'
>>> one_line(RuntimeError("headline\\nTraceback (most recent call last): ..."), first=True)
'headline'
>>> unknown_name("mixer", "mamba", ["attention", "gla"])
"unknown mixer 'mamba'; valid: attention, gla"
"""

from __future__ import annotations

MAX_MESSAGE = 1000  # characters of an error message; a longer one keeps its head and its tail


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, for a one-line message.

    >>> shown("x" * 100, limit=10)
    "'xxxxxx..."
    """
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.set_int_max_str_digits)
        text = f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(message: object, first: bool = False) -> str:
    """`message` (a text or an exception) on one line, each run of whitespace one space, at
    most `MAX_MESSAGE` long. `first` keeps only its first non-empty line (the headline of an
    error that carries a remote traceback). An exception with no message gives its type's name.

    >>> one_line("unknown field 'x'\\n  (from space.yaml)")
    "unknown field 'x' (from space.yaml)"
    >>> one_line(KeyError())
    'KeyError'
    """
    text = str(message).strip()
    if first and text:
        text = text.splitlines()[0]
    text = " ".join(text.split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    if len(text) > MAX_MESSAGE:  # a huge value quoted in it: keep the start and the end
        text = text[: MAX_MESSAGE - 205] + " ... " + text[-200:]
    return text


class OneLineError(ValueError):
    """A `ValueError` whose message is always `one_line`: what every loader of user input
    raises (`ConfigError`, `SpaceError`, `ConstraintSyntaxError`, `RunError`, ...)."""

    def __init__(self, message: object = ""):
        super().__init__(one_line(message))


def unknown_name(kind: str, name: object, valid) -> str:
    """The one-line message for a name that is not in a registry."""
    return f"unknown {kind} {shown(name)}; valid: {', '.join(map(str, valid))}"
