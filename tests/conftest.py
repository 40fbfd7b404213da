"""Shared fixtures: a private Ray on loopback, as the environment requires of tests."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU under the interpreter; read when a kernel module is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def start_ray_on_loopback(temp_dir) -> None:
    """A local Ray on 127.0.0.2 (TNAS_RAY_NODE_IP), its own temp dir, a capped object store."""
    from tnas.workers.pool import connect

    os.environ["RAY_AUTH_MODE"] = "disabled"
    connect(
        None,
        num_cpus=2,
        _temp_dir=str(temp_dir),
        object_store_memory=80 * 1024**2,
        _node_ip_address=os.environ.get("TNAS_RAY_NODE_IP", "127.0.0.2"),
    )


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """Ray for the whole test module, shut down after it."""
    import ray

    start_ray_on_loopback(tmp_path_factory.mktemp("ray"))
    yield
    ray.shutdown()


def poll_trials(url: str, study: str, states=None) -> list:
    """The study's trials as a test polling a running driver sees them, read through tnas's
    own ``Database`` and closed right after: none yet while the driver is still creating the
    database or the study."""
    import optuna

    from tnas.search.db import Database, StorageError

    try:
        with Database(url, create=False) as db:
            return optuna.load_study(study_name=study, storage=db.optuna_storage()).get_trials(
                deepcopy=False, states=states
            )
    except (StorageError, KeyError):  # no database, or no such study, yet
        return []


def write_replay_table(path, rows: int, seed: int):
    """A replay table (JSONL) of `rows` distinct primer configs with made-up accuracy and
    latency_ms from their parameter count, for searches that train nothing; returns `path`."""
    import json

    import numpy as np

    from tnas.space import load_space

    space = load_space("primer")
    rng = np.random.default_rng(seed)
    table: dict[str, dict] = {}
    while len(table) < rows:
        config = space.sample(rng)
        params = config.derived()["params"]
        metrics = {"accuracy": 1 - 1 / (1 + params / 2e6), "latency_ms": params / 1e5}
        table[config.hash] = {"config": config.to_dict(), "metrics": metrics}
    path.write_text("".join(json.dumps(row) + "\n" for row in table.values()))
    return path
