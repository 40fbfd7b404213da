"""README's Python examples run as written (a user copies them into a notebook)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    """The first ```python block under `heading`."""
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_searching_from_python(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_block("### Searching from Python"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "notebook 4 trials evaluated" in out
    assert "4/4 evaluated" in out
    assert (tmp_path / "notebook.db").is_file()
