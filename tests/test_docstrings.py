"""Every docstring example in the package runs and prints what it says (CONVENTIONS.md, item 8)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tnas

MODULES = sorted(info.name for info in pkgutil.walk_packages(tnas.__path__, "tnas."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
