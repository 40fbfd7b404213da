"""Elastic submodels: a MatFormer supernet, its sliced forward, joint training, and extraction.

`tnas.elastic.submodel` (what a submodel is) imports no torch; `Supernet`, `extract`,
`save_supernet`, `load_supernet` and the training functions (`train_supernet`,
`train_supernet_on_ray`, `build_supernet`) import it when first used.

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
    "save_supernet": "tnas.elastic.extraction",
    "load_supernet": "tnas.elastic.extraction",
    "Granularities": "tnas.elastic.train",
    "StepReport": "tnas.elastic.train",
    "SupernetTrainResult": "tnas.elastic.train",
    "build_supernet": "tnas.elastic.train",
    "evaluate_submodel": "tnas.elastic.train",
    "train_supernet": "tnas.elastic.train",
    "train_supernet_on_ray": "tnas.elastic.train",
    "training_state_path": "tnas.elastic.train",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tnas.elastic' has no attribute {name!r}")


__all__ = [
    "Granularities",
    "StepReport",
    "Submodel",
    "SubmodelError",
    "Supernet",
    "SupernetTrainResult",
    "build_supernet",
    "default_kept",
    "evaluate_submodel",
    "extract",
    "largest",
    "load_supernet",
    "resolve",
    "save_supernet",
    "train_supernet",
    "train_supernet_on_ray",
    "training_state_path",
]
