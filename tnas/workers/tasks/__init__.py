"""Registry of tasks: name -> lazily imported class (`module:Class`), and CLI task specs.

A spec is `name[,key=value...]`, where `name` is a registered task or a `module:Class` path to
a `Task` subclass; values are read as int, then float, then str. `task.spec` gives back the
canonical spec (options at their defaults left out, the rest sorted), which workers rebuild
the task from.

>>> task = parse_task("mqar,num_pairs=4,seq_len=32")
>>> task.spec
'mqar,num_pairs=4,seq_len=32'
>>> create_task("mqar", seq_len=32, num_pairs=4).spec == task.spec
True
>>> create_task("cifar")
Traceback (most recent call last):
ValueError: unknown task 'cifar'; valid: digits, mqar, textlm
"""

from __future__ import annotations

import importlib
import inspect

from tnas.space.errors import unknown_name
from tnas.workers.tasks.base import Metric, Task, eval_mode

TASKS: dict[str, str] = {
    "digits": "tnas.workers.tasks.digits:Digits",
    "mqar": "tnas.workers.tasks.mqar:MQAR",
    "textlm": "tnas.workers.tasks.textlm:TextLM",
}


def task_class(name: str) -> type[Task]:
    """The class registered as `name`, or the `Task` subclass at a `module:Class` path."""
    if ":" not in name:
        if name not in TASKS:
            raise ValueError(unknown_name("task", name, TASKS))
        name = TASKS[name]
    module_name, _, class_name = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import task {name!r}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"{name!r} is not a subclass of tnas.workers.tasks.Task")
    return cls


def create_task(name: str, **options) -> Task:
    """Build the task registered as `name` (or at a `module:Class` path) with `options`.

    >>> create_task("digits", tokens="patch").seq_len
    16
    """
    cls = task_class(name)
    signature = inspect.signature(cls)
    params = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        valid = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]
        for key in options:
            if key not in valid:
                raise ValueError(
                    f"task {name!r} has no option {key!r}; valid: {', '.join(valid) or '(none)'}"
                )
    try:
        signature.bind(**options)
    except TypeError as err:
        raise ValueError(f"task {name!r}: {err}") from None
    return cls(**options)


def parse_value(text: str) -> int | float | str:
    """A spec value: an int if it reads as one, else a float, else the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_task(spec: str) -> Task:
    """Build a task from a CLI spec such as `mqar,num_pairs=8,seq_len=64`.

    >>> parse_task("digits,tokens=patch,seed=1").options
    {'tokens': 'patch', 'seed': 1}
    """
    name, *pairs = (part.strip() for part in spec.split(","))
    if not name:
        raise ValueError(f"task spec {spec!r} has no task name")
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = (text.strip() for text in pair.partition("="))
        if not sep or not key:
            raise ValueError(f"task spec {spec!r}: expected key=value, got {pair!r}")
        if key in options:
            raise ValueError(f"task spec {spec!r}: option {key!r} is given twice")
        options[key] = parse_value(value)
    return create_task(name, **options)


def format_spec(cls: type[Task], options: dict[str, object]) -> str:
    """The canonical spec of `cls` with `options`; `Task.spec` calls this."""
    path = f"{cls.__module__}:{cls.__qualname__}"
    head = cls.name if TASKS.get(getattr(cls, "name", "")) == path else path
    parts = [head]
    for key, value in sorted(options.items()):
        text = repr(value) if isinstance(value, float) else str(value)
        parsed = parse_value(text.strip())
        if "," in text or "=" in text or type(parsed) is not type(value) or parsed != value:
            raise ValueError(f"task {head!r}: option {key}={value!r} cannot be written in a spec")
        parts.append(f"{key}={text}")
    return ",".join(parts)


__all__ = [
    "TASKS",
    "Metric",
    "Task",
    "create_task",
    "eval_mode",
    "format_spec",
    "parse_task",
    "parse_value",
    "task_class",
]
