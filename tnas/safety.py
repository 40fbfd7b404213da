"""Checks on hostile input at the edges: names, output paths and URLs holding passwords.

Imports only `tnas.space.errors`, so every layer above `space` may use it.

- **Names** (`safe_name`): a study name is 1 to 128 of `A-Z a-z 0-9 . _ -`, starting with a
  letter or a digit, so it can never climb out of a directory, hide as a dotfile, or carry
  a terminal escape into what tnas prints.
- **Output paths** (`output_path`): absolute and relative paths are both fine (the user names
  where to write), but not one with a `..` component, a control character, or a file that
  tnas would write which is a symbolic link: tnas never writes through a link. Nor one that
  could not be written, found before any work: a name longer than the file system allows, a
  directory that is missing (where the writer does not create it), not a directory, or not
  writable, or a place under `/proc` or `/sys`.
- **URLs** (`redact_url`): the password of every URL in a text becomes `***` before the text
  is printed or stored.

>>> safe_name("demo")
'demo'
>>> redact_url("postgresql+psycopg://tnas:secret@db.example:5432/tnas")
'postgresql+psycopg://tnas:***@db.example:5432/tnas'
>>> output_path("runs/model").as_posix()
'runs/model'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from tnas.space.errors import shown

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or a digit"
# scheme://user:password@host: everything between the first ':' after the user and the last
# '@' before the host is the password (a raw '@' in a password is then masked too).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):[^/?#\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&#\s]*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_MAX = 255  # bytes in one file name (Linux, macOS; Windows counts characters, also 255)
PATH_MAX = 4096
PSEUDO_FILESYSTEMS = ("/proc", "/sys")  # kernel interfaces, not places for a plot or a table


class UnsafeInput(ValueError):
    """A name or a path tnas refuses; the message is one line."""


def safe_name(name: object, what: str = "study name") -> str:
    """`name` if it matches `NAME_PATTERN`, else `UnsafeInput` saying what is allowed.

    >>> safe_name("../etc")
    Traceback (most recent call last):
    ...
    tnas.safety.UnsafeInput: study name '../etc' is not allowed: use 1 to 128 letters, ...
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UnsafeInput(f"{what} {shown(name)} is not allowed: use {NAME_RULE}")
    return name


def output_path(
    path: str | os.PathLike[str],
    what: str = "output",
    inside: Iterable[str] = (),
    *,
    new_dirs: bool = True,
):
    """The `Path` to write `path` to, once it passes the output policy, else `UnsafeInput`.

    With `inside`, `path` is a directory and `inside` the names tnas writes in it; without,
    `path` is the file written. Refused: an empty path, a control character, a `..`
    component, a file to be written that is a symbolic link (or a directory), and a directory
    output that is an existing file. Refused too, so that a command fails before its work
    rather than after it: a file name over the file system's limit (255 bytes) or a path over
    `PATH_MAX`; a place under `/proc` or `/sys`; an existing file that is not writable; and a
    nearest existing directory that is not a directory or not writable. With
    `new_dirs=False` (the writer does not create directories) the directory the file goes in
    must exist. Nothing is created or written here.

    >>> output_path("../../etc/cron.d/x", "--out")
    Traceback (most recent call last):
    ...
    tnas.safety.UnsafeInput: --out '../../etc/cron.d/x': a path with a '..' component is ...
    >>> output_path("no-such-dir/front.png", "--plot", new_dirs=False)
    Traceback (most recent call last):
    ...
    tnas.safety.UnsafeInput: --plot 'no-such-dir/front.png': directory 'no-such-dir' does not ...
    """
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise UnsafeInput(f"{what}: give a non-empty path")
    label = f"{what} {shown(text)}"
    if _CONTROL.search(text):
        raise UnsafeInput(f"{label}: a path with a control character is not allowed")
    if ".." in re.split(r"[/\\]", text):
        raise UnsafeInput(
            f"{label}: a path with a '..' component is not allowed; name the directory directly"
        )
    target = Path(text)
    names = list(inside)
    files = [target / name for name in names] if names else [target]
    _check_lengths(label, files)
    try:
        if names and target.exists() and not target.is_dir():
            raise UnsafeInput(f"{label}: exists and is not a directory")
        for file in files:
            if file.is_symlink():
                raise UnsafeInput(
                    f"{label}: {file} is a symbolic link; tnas does not write through links"
                )
            if file.is_dir():
                raise UnsafeInput(f"{label}: {file} is a directory, not a file")
            if file.exists() and not os.access(file, os.W_OK):
                raise UnsafeInput(f"{label}: {file} exists and is not writable")
        _check_directory(label, files[0].parent, new_dirs)
    except OSError as err:  # a path the system refuses to look at (EACCES, ELOOP, ...)
        raise UnsafeInput(f"{label}: {err.strerror or err}") from None
    return target


def _check_lengths(label: str, files: list[Path]) -> None:
    """Names longer than `NAME_MAX` and paths longer than `PATH_MAX` fail before any stat."""
    for file in files:
        for part in file.parts:
            size = len(os.fsencode(part))
            if size > NAME_MAX:
                raise UnsafeInput(
                    f"{label}: a file or directory name of {size} bytes is too long "
                    f"(at most {NAME_MAX})"
                )
        if len(os.fsencode(os.path.abspath(file))) >= PATH_MAX:
            raise UnsafeInput(f"{label}: the path is too long (at most {PATH_MAX - 1} bytes)")


def _check_directory(label: str, directory: Path, new_dirs: bool) -> None:
    """The directory a file goes in, or its nearest existing ancestor when the writer creates
    the missing ones (`new_dirs`), must be a writable directory outside `/proc` and `/sys`."""
    existing = Path(os.path.abspath(directory))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    resolved = os.path.realpath(existing)
    for system in PSEUDO_FILESYSTEMS:
        if resolved == system or resolved.startswith(system + os.sep):
            raise UnsafeInput(f"{label}: {system} holds no files tnas can write; name another path")
    if not existing.is_dir():
        raise UnsafeInput(f"{label}: {shown(str(existing))} is not a directory")
    if existing != Path(os.path.abspath(directory)) and not new_dirs:
        raise UnsafeInput(f"{label}: directory {shown(str(directory))} does not exist")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnsafeInput(f"{label}: directory {shown(str(existing))} is not writable")


def redact_url(text: str | None) -> str | None:
    """`text` with the password of every URL in it (`user:PASSWORD@`, `?password=`) as `***`.

    >>> redact_url("cannot connect to postgresql://me:pw@h/db?password=pw2&sslmode=require")
    'cannot connect to postgresql://me:***@h/db?password=***&sslmode=require'
    >>> redact_url("sqlite:///tnas.db")
    'sqlite:///tnas.db'
    """
    if text is None:
        return None
    text = _URL_PASSWORD.sub(r"\1:***@", str(text))
    return _QUERY_PASSWORD.sub(r"\1***", text)
