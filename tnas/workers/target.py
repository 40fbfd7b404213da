"""Latency measured where a model is deployed: in this process, or on a Ray node of the device.

A team joins its deployment device to the cluster as a Ray node that offers a custom resource
(`ray start --address HEAD:6379 --resources '{"rpi5": 1}'`); `Target.parse("node:rpi5")` then
measures there, as a Ray task that asks for one unit of that resource and no CPU, so the
device profiles one model at a time, whatever else the cluster runs (start the device's node
with `--num-cpus 0` too if no training should land on it). A trained model's weights travel with the
task through Ray's object store; the report names the node (`node_ip`) and its device
(`fingerprint`). `Target.parse("local")` measures in this process.

Every measurement follows one protocol, a `ProfileSettings` (batch, sequence length, repeats,
warm-up, threads), whichever the target. A node that dies while it profiles: Ray runs the task
again on another node that offers the resource; when none is left for `LOST_AFTER_S`, the
measurement fails with a `TargetError` naming the resource, and the caller decides (a search
fails the trial as `profile_failed`, keeping its training metrics).

>>> Target.parse("node:rpi5").resource, Target.parse("local").name
('rpi5', 'local')
>>> Target.parse("node:")
Traceback (most recent call last):
...
tnas.workers.target.TargetError: target 'node:' must be local or node:RESOURCE (a Ray resource)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from tnas.space.config import ArchConfig

LOST_AFTER_S = 10.0  # a resource no node has offered this long is gone
RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class TargetError(ValueError):
    """A target that cannot measure: a bad name, no node offering its resource, a lost node."""


@dataclass(frozen=True)
class Target:
    """Where latency is measured: `resource` None for this process, else a Ray custom resource
    that the device's node offers."""

    resource: str | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """`local` (also `cpu`) or `node:RESOURCE`; anything else is a one-line `TargetError`."""
        text = str(text).strip()
        if text in ("local", "cpu"):
            return cls()
        kind, _, resource = text.partition(":")
        if kind != "node" or not RESOURCE_NAME.fullmatch(resource):
            raise TargetError(f"target {text!r} must be local or node:RESOURCE (a Ray resource)")
        return cls(resource)

    @property
    def name(self) -> str:
        return self.resource or "local"

    @property
    def text(self) -> str:
        return f"node:{self.resource}" if self.resource else "local"


def offered(resource: str) -> float:
    """How much of `resource` the connected Ray cluster offers now (0 if none)."""
    import ray

    return float(ray.cluster_resources().get(resource, 0.0))


def check_target(target: Target, address: str | None = None) -> bool:
    """Connect to Ray (`address`, else `RAY_ADDRESS`, else a local Ray) if the target is a node,
    and refuse one that no node offers, in one line that lists what the cluster does offer.
    True if this call connected to Ray (the caller shuts it down)."""
    if target.resource is None:
        return False
    import ray

    from tnas.workers.pool import cluster_address, connect

    if not ray.is_initialized() and cluster_address(address) is None:
        raise TargetError(  # a Ray started here has no custom resources: no need to start one
            f"node:{target.resource} needs the Ray cluster its node joined: give --ray-address "
            "or set RAY_ADDRESS"
        )
    connected = connect(address)
    if offered(target.resource) <= 0:
        standard = {"CPU", "GPU", "memory", "object_store_memory"}
        custom = sorted(
            name
            for name in ray.cluster_resources()
            if name not in standard and not name.startswith(("node:", "accelerator_type"))
        )
        have = ", ".join(custom) if custom else "none"
        raise TargetError(
            f"no Ray node offers resource {target.resource!r} (custom resources of the cluster: "
            f"{have}); start the device's node with ray start --resources "
            f"'{{\"{target.resource}\": 1}}'"
        )
    return connected


def _profile_models(jobs: list[tuple[str, object]], settings) -> list[dict]:
    """On the node: profile each (config JSON, state dict or None) with `settings`; a config
    that cannot be profiled gives `{"error": ...}`."""
    import ray
    import torch

    from tnas.nn.model import build_model
    from tnas.workers.backend import profile_into

    node_ip = ray.util.get_node_ip_address() if ray.is_initialized() else None
    results = []
    for config_json, weights in jobs:
        config = ArchConfig.from_json(config_json)
        metrics: dict = {}
        try:
            model = None
            if weights is not None:
                model = build_model(config)
                model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
            fingerprint = profile_into(metrics, {}, config, model, settings)
        except Exception as err:  # one config's failure is its own result
            results.append({"error": f"{type(err).__name__}: {err}".splitlines()[0]})
            continue
        results.append({"metrics": metrics, "fingerprint": fingerprint, "node_ip": node_ip})
    return results


def measure(
    target: Target,
    configs: list[ArchConfig],
    settings,
    models: list | None = None,
    timeout: float | None = None,
) -> list[dict]:
    """Profile `configs` (with the weights of `models`, trained models built from them, when
    given) on `target` with `settings` (a `ProfileSettings`): one result per config,
    `{"metrics", "fingerprint", "node_ip"}` or `{"error"}`. On a node it is one Ray task for
    all of them; a `TargetError` if the node is lost with no other to take over, or after
    `timeout` seconds."""
    weights = [None] * len(configs)
    if models is not None:
        weights = [
            None if model is None else {k: v.detach().cpu() for k, v in model.state_dict().items()}
            for model in models
        ]
    if target.resource is None:
        return _profile_models(
            [(c.to_json(), w) for c, w in zip(configs, weights, strict=True)], settings
        )
    import ray

    check_target(target)
    refs = [ray.put(w) if w is not None else None for w in weights]
    task = ray.remote(_profile_on_node).options(
        resources={target.resource: 1}, num_cpus=0, max_retries=3
    )
    ref = task.remote([c.to_json() for c in configs], refs, settings)
    return wait_for(ref, target, timeout)


def _profile_on_node(config_jsons: list[str], weights: list, settings) -> list[dict]:
    import ray

    # ObjectRefs nested in a list arrive unresolved: fetch the weights here, on the node
    fetched = [ray.get(w) if isinstance(w, ray.ObjectRef) else w for w in weights]
    return _profile_models(list(zip(config_jsons, fetched, strict=True)), settings)


def wait_for(ref, target: Target, timeout: float | None = None):
    """The result of a task on `target`'s node. While it waits, it checks that some node still
    offers the resource; if none has for `LOST_AFTER_S` (the node died and no other can take
    the task), or past `timeout`, the task is cancelled and a `TargetError` raised."""
    import ray
    import ray.exceptions

    start = time.monotonic()
    missing_since = None
    while True:
        ready, _ = ray.wait([ref], timeout=1.0)
        if ready:
            try:
                return ray.get(ref)
            except ray.exceptions.RayError as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise TargetError(f"profiling on node:{target.resource} failed: {first}") from None
        now = time.monotonic()
        if offered(target.resource) > 0:
            missing_since = None
        elif missing_since is None:
            missing_since = now
        lost = missing_since is not None and now - missing_since >= LOST_AFTER_S
        if lost or (timeout is not None and now - start >= timeout):
            ray.cancel(ref, force=True)
            why = (
                f"no node has offered resource {target.resource!r} for {LOST_AFTER_S:g} s "
                "(the device's node is gone)"
                if lost
                else f"no result within {timeout:g} s"
            )
            raise TargetError(f"profiling on node:{target.resource} failed: {why}")


__all__ = ["Target", "TargetError", "check_target", "measure", "offered", "wait_for"]
