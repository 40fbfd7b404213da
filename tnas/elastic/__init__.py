"""Elastic submodels: a MatFormer supernet, its sliced forward, its granularities, extraction.

`tnas.elastic.submodel` (what a submodel is) imports no torch; `Supernet`, `Granularities`,
`extract`, `save_supernet` and `load_supernet` import it when first used. Training a supernet
on a task (`train_supernet`, `build_supernet`, on Ray too) needs tasks and budgets, so it lives
with the workers, in `workers/supernet.py`.

>>> from tnas.elastic import Supernet
>>> net = Supernet.from_space("matformer")
>>> net.config.n_layers, net.space
(4, 'matformer')
"""

from __future__ import annotations

import importlib

from tnas.elastic.submodel import Submodel, SubmodelError, default_kept, largest, resolve

_LAZY = {
    "Supernet": "tnas.elastic.supernet",
    "extract": "tnas.elastic.extraction",
    "extract_to": "tnas.elastic.extraction",
    "save_supernet": "tnas.elastic.extraction",
    "load_supernet": "tnas.elastic.extraction",
    "Granularities": "tnas.elastic.granularities",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tnas.elastic' has no attribute {name!r}")


__all__ = [
    "Granularities",
    "Submodel",
    "SubmodelError",
    "Supernet",
    "default_kept",
    "extract",
    "extract_to",
    "largest",
    "load_supernet",
    "resolve",
    "save_supernet",
]
