"""`tnas predictors calibrate|adapt|check` from the command line, on this process (`--on
local`) with tiny budgets, and once on a real local Ray node that offers a custom resource."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from tests.test_cli_errors import one_error_line
from tnas.cli import app
from tnas.predictors.latency import LatencyTable
from tnas.space import ArchConfig, load_space
from tnas.workers.calibrate import adapt_table, calibrate_on, check_table, fresh_configs
from tnas.workers.profile import device_fingerprint
from tnas.workers.target import Target, TargetError

runner = CliRunner()
TINY = """name: tiny
global:
  d_model: {choices: [32, 64]}
  n_layers: {low: 1, high: 2}
  vocab_size: 64
  max_seq_len: 32
per_layer:
  ffn_dim: {choices: [32, 64]}
  bits: {choices: [32, 8]}
"""
FAST = ["--budget", "20", "--repeats", "2", "--seq-len", "16"]


def cli(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> dict:
    """A tiny space's YAML file and its table, calibrated through the CLI in this process."""
    root = tmp_path_factory.mktemp("targets")
    space = root / "tiny.yaml"
    space.write_text(TINY)
    table = root / "T.json"
    before = datetime.now(UTC).replace(microsecond=0)
    result = cli("predictors", "calibrate", "--space", space, *FAST, "--out", table)
    assert result.exit_code == 0, result.output
    return {"root": root, "space": space, "table": table, "before": before, "output": result.output}


def test_calibrate_records_its_protocol_space_and_time(calibrated):
    table = LatencyTable.load(calibrated["table"])
    assert table.protocol == {"batch": 1, "seq_len": 16, "repeats": 2, "warmup": 3, "threads": 1}
    space = load_space(str(calibrated["space"]))
    assert table.space == {"name": "tiny", "digest": space.digest}
    assert calibrated["before"] <= datetime.fromisoformat(table.calibrated) <= datetime.now(UTC)
    assert table.device_id == device_fingerprint("cpu")["id"] and table.node_ip is None
    assert 0 < table.measurements <= 20
    assert "protocol: batch 1, seq_len 16, repeats 2, warmup 3, threads 1" in calibrated["output"]
    assert f"device {table.device_id} on local" in calibrated["output"]


def test_adapt_on_local_writes_a_moved_table_under_the_same_protocol(calibrated):
    out = calibrated["root"] / "T2.json"
    result = cli(
        "predictors", "adapt", calibrated["table"], "--on", "local", "--measurements", "3",
        "--space", calibrated["space"], "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    old, moved = LatencyTable.load(calibrated["table"]), LatencyTable.load(out)
    assert moved.protocol == old.protocol and moved.space == old.space
    assert (
        moved.entries.keys() == old.entries.keys() and moved.overhead.keys() == old.overhead.keys()
    )
    assert moved.device_id == device_fingerprint("cpu")["id"] == moved.fingerprint["id"]
    assert datetime.fromisoformat(moved.calibrated) >= datetime.fromisoformat(old.calibrated)
    assert len(moved.full_models) == 3
    old_hashes = {ArchConfig.from_json(c).hash for c, *_ in old.full_models}
    assert not old_hashes & {ArchConfig.from_json(c).hash for c, *_ in moved.full_models}
    assert all(b == 1 and t == 16 and ms > 0 for _, b, t, ms in moved.full_models)
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0] == f"wrote {out}: device {moved.device_id} on local"
    assert lines[1].startswith("3 measurements, MAPE on them ") and "before" in lines[1]


def test_check_on_local_scores_fresh_configs(calibrated):
    result = cli(
        "predictors", "check", calibrated["table"], "--on", "local", "--configs", "4",
        "--space", calibrated["space"], "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == "local" and report["node_ip"] is None
    assert report["configs"] == 4 and report["seed"] == 1
    assert len(report["measured_ms"]) == len(report["predicted_ms"]) == 4
    assert all(ms > 0 for ms in report["measured_ms"] + report["predicted_ms"])
    assert report["mape"] >= 0 and 0 <= report["within_10pct"] <= 1
    assert -1 <= report["kendall_tau"] <= 1
    assert report["device_id"] == report["table_device_id"]
    text = cli("predictors", "check", calibrated["table"], "--configs", "2", "--space",
               calibrated["space"])  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "2 fresh configs of tiny (seed 1)" in text.stdout and "Kendall τ" in text.stdout


def test_fresh_configs_are_none_the_table_measured_whole(calibrated):
    table = LatencyTable.load(calibrated["table"])
    space = load_space(str(calibrated["space"]))
    configs = fresh_configs(space, 30, seed=0, table=table, device="cpu")  # calibrate's seed
    measured = {ArchConfig.from_json(c).hash for c, *_ in table.full_models}
    assert len({c.hash for c in configs}) == 30 and not measured & {c.hash for c in configs}


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["adapt", "{root}/none.json", "--out", "{root}/x.json"], ["none.json", "No such file"]),
        (["check", "{root}/corrupt.json"], ["corrupt.json is not JSON"]),
        (["check", "{root}/list.json"], ["list.json: not a latency table"]),
        (["adapt", "{table}", "--measurements", "0", "--out", "{root}/x.json"],
         ["--measurements must be from 1"]),
        (["check", "{table}", "--configs", "1"], ["--configs must be from 2"]),
        (["check", "{table}", "--on", "gpu0"], ["target 'gpu0' must be local or node:RESOURCE"]),
        (["check", "{table}", "--on", "node:"], ["must be local or node:RESOURCE"]),
        (["check", "{table}", "--space", "nosuch"], ["nosuch: unknown preset"]),
        (["check", "{table}"], ["calibrated on space 'tiny', not a preset: pass its YAML"]),
        (["check", "{table}", "--space", "simq"], ["a table for another space", "--space simq"]),
        (["check", "{old}", "--space", "{space}"], ["predates measurement protocols"]),
        (["adapt", "{table}", "--space", "{space}", "--out", "{root}/nodir/x.json"],
         ["nodir"]),
        (["adapt", "{table}", "--space", "{space}", "--device", "tpu", "--out",
          "{root}/x.json"], ["unknown device 'tpu'"]),
        (["calibrate", "--device", "node:", "--out", "{root}/x.json"], ["node:RESOURCE"]),
        (["calibrate", "--repeats", "0", "--out", "{root}/x.json"], ["--repeats must be"]),
    ],
    ids=["missing", "corrupt", "wrong-shape", "measurements-0", "configs-1", "bad-on",
         "empty-resource", "unknown-space", "unloadable-space", "another-space", "no-protocol",
         "bad-out", "bad-device", "calibrate-bad-node", "calibrate-repeats-0"],
)  # fmt: skip
def test_bad_input_is_one_line(calibrated, args, fragments):
    root = calibrated["root"]
    (root / "corrupt.json").write_text("{ not json")
    (root / "list.json").write_text("[]")
    old = LatencyTable.load(calibrated["table"])
    old.protocol = None
    old.save(root / "old.json")
    place = {"root": root, "table": calibrated["table"], "space": calibrated["space"],
             "old": root / "old.json"}  # fmt: skip
    result = cli("predictors", *[arg.format(**place) for arg in args])
    one_error_line(result, *fragments)
    assert not (root / "x.json").exists()


@pytest.fixture(scope="module")
def ray_with_a_device(tmp_path_factory):
    """A real single-node Ray on loopback whose node offers the custom resource `dev`."""
    import ray

    from tnas.workers.pool import connect

    os.environ["RAY_AUTH_MODE"] = "disabled"
    assert not ray.is_initialized()
    connect(
        None,
        num_cpus=2,
        resources={"dev": 1},
        _node_ip_address="127.0.0.2",
        object_store_memory=200 * 2**20,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    yield "127.0.0.2"
    ray.shutdown()


def test_calibrate_and_check_run_on_the_node_that_offers_the_resource(
    ray_with_a_device, calibrated
):
    import ray

    space = load_space(str(calibrated["space"]))
    target = Target.parse("node:dev")
    table = calibrate_on(
        target, space, budget=6, batch=1, seq_len=16, repeats=2, warmup=1, threads=1, seed=3
    )
    assert table.node_ip == ray_with_a_device  # measured in a Ray task on that node
    assert table.protocol == {"batch": 1, "seq_len": 16, "repeats": 2, "warmup": 1, "threads": 1}
    assert table.space["digest"] == space.digest and 0 < table.measurements <= 6
    report = check_table(table, target, space, configs=2, seed=1)
    assert report["node_ip"] == ray_with_a_device and report["target"] == "node:dev"
    assert report["device_id"] == table.device_id and len(report["measured_ms"]) == 2
    moved, summary = adapt_table(table, target, space, measurements=2, seed=2)
    assert moved.node_ip == summary["node_ip"] == ray_with_a_device
    assert ray.is_initialized()  # the fixture's Ray is left running for the next test


def test_an_unknown_resource_is_one_line(ray_with_a_device, calibrated):
    result = cli("predictors", "check", calibrated["table"], "--on", "node:nosuch", "--configs",
                 "2", "--space", calibrated["space"])  # fmt: skip
    one_error_line(
        result, "no Ray node offers resource 'nosuch'", "custom resources of the cluster: dev"
    )
    with pytest.raises(TargetError, match="no Ray node offers resource 'gone'"):
        calibrate_on(Target.parse("node:gone"), load_space(str(calibrated["space"])), budget=2)
