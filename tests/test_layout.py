"""The import direction of README's "Layout": which part of tnas may import which.

Every `import` of every module counts, those inside functions too (a lazy import is still a
dependency). A part is a subpackage (`space`, `nn`, ...) or a top-level module (`launch`,
`cli`, `safety`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import tnas

PACKAGE = Path(tnas.__file__).parent
# What each part may import, besides itself. `launch` is the one library module that wires
# `search` to `workers`; `cli` is the shell over all of them.
ALLOWED = {
    "space": set(),
    "kernels": set(),
    "nn": {"space", "kernels"},
    "elastic": {"space", "nn"},
    "predictors": {"space"},
    "workers": {"space", "kernels", "nn", "elastic", "predictors"},
    "search": {"space", "predictors", "safety"},
    "safety": {"space"},
    "launch": {"space", "search", "workers", "safety"},
    "cli": {"space", "nn", "elastic", "workers", "search", "predictors", "safety", "launch"},
    "__init__": {"nn"},  # tnas.load_model, imported when first used
}
TORCH_FREE = ("tnas.space", "tnas.search", "tnas.predictors")


def part_of(module: str) -> str:
    """'tnas.search.db.session' -> 'search'; 'tnas.launch' -> 'launch'; 'tnas' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The `tnas...` modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name == "tnas" or name.startswith("tnas.")}


def edges() -> dict[str, dict[str, set[str]]]:
    """part -> imported part -> the files that import it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        source = part_of(module_name(path))
        for imported in imports_of(path):
            target = part_of(imported)
            if target != source:
                graph[source][target].add(str(path.relative_to(PACKAGE.parent)))
    return graph


def test_every_part_is_in_the_table():
    parts = {part_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED and README"


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(part):
    wrong = {
        target: sorted(files)
        for target, files in edges()[part].items()
        if target not in ALLOWED[part]
    }
    assert not wrong, f"{part} imports {wrong}"


def test_space_imports_nothing_of_ours():
    assert not edges()["space"]


def test_there_are_no_cycles_between_parts():
    graph = {source: set(targets) for source, targets in edges().items()}
    visiting, done = set(), set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join([*path, node])
        visiting.add(node)
        for target in sorted(graph.get(node, ())):
            visit(target, [*path, node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_search_and_workers_meet_only_in_launch():
    graph = edges()
    assert "workers" not in graph["search"] and "search" not in graph["workers"]
    library = set(ALLOWED) - {"cli", "launch"}
    both = [part for part in library if {"search", "workers"} <= set(graph[part])]
    assert not both


@pytest.mark.parametrize("package", TORCH_FREE)
def test_torch_free_parts_load_without_torch(package):
    """Every module of the part imports without torch (a fresh interpreter each time)."""
    folder = PACKAGE / package.split(".")[1]
    modules = sorted(
        module_name(path) for path in folder.rglob("*.py") if "migrations" not in path.parts
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded[:3]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]


def test_launch_loads_without_torch():
    code = "import sys, tnas.launch; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
