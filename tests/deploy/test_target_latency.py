"""Latency for the device a model is deployed on (`--latency node:RESOURCE`), on the loopback
cluster: the worker node at 127.0.0.3 offers the custom resource `edge`; trials train on the
head and are profiled on the worker, whose death fails the profile, not the training."""

from __future__ import annotations

import optuna

from tests.deploy.conftest import HEAD_IP, TARGET, WORKER_IP, trials, wait_until
from tests.deploy.test_faults import launch_on_cluster, while_alive

OBJECTIVES = ("--objective", "accuracy:max", "--objective", "latency_ms@local:min",
              "--objective", f"latency_ms@{TARGET}:min")  # fmt: skip
SOURCES = ("--latency", "measured", "--latency", f"node:{TARGET}")


def test_trials_train_on_the_head_and_are_profiled_on_the_target_node(cluster, drivers, tiny_run):
    url = cluster.create_database("target_latency")
    driver = launch_on_cluster(
        drivers, cluster, tiny_run, url, "target", 3, 1, *OBJECTIVES, *SOURCES
    )

    assert driver.wait() == 0, driver.stderr
    done = [t for t in trials(url, "target") if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for trial in done:
        assert trial.user_attrs["node_ip"] == HEAD_IP  # trained on the head
        edge = trial.user_attrs["latency"][TARGET]
        assert (edge["kind"], edge["resource"], edge["node_ip"]) == ("node", TARGET, WORKER_IP)
        assert trial.user_attrs["latency"]["local"]["kind"] == "measured"
        metrics = trial.user_attrs["metrics"]
        assert trial.values[2] == metrics[f"latency_ms@{TARGET}"] > 0
        assert trial.values[1] == metrics["latency_ms@local"] == metrics["latency_ms"]


def test_a_lost_target_node_fails_the_profile_and_keeps_the_training(cluster, drivers, tiny_run):
    url = cluster.create_database("target_lost")
    driver = launch_on_cluster(
        drivers, cluster, tiny_run, url, "lost", 3, 1, "--latency", f"node:{TARGET}"
    )

    def profiling_on_worker() -> bool:
        commands = cluster.node_processes("worker").values()
        return any("_profile_on_node" in command for command in commands)

    wait_until(while_alive(driver, profiling_on_worker), "a profile on the target node")
    cluster.freeze("worker")  # mid-profile: it cannot finish before the kill
    cluster.run("kill", "worker")

    assert driver.wait() == 0, driver.stderr
    lost = [t for t in trials(url, "lost") if t.user_attrs.get("reason") == "profile_failed"]
    assert lost, "no trial failed its profile"
    # the trial profiling when the node died waited for another; later ones are refused at once
    assert f"no node has offered resource '{TARGET}'" in lost[0].user_attrs["error"]
    for trial in lost:
        assert trial.state == optuna.trial.TrialState.FAIL
        assert f"resource '{TARGET}'" in trial.user_attrs["error"]
        assert 0 <= trial.user_attrs["metrics"]["accuracy"] <= 1  # the training is kept
        assert trial.user_attrs["node_ip"] == HEAD_IP


def test_a_resource_no_node_offers_is_one_line_and_writes_nothing(cluster, drivers, tiny_run):
    url = cluster.create_database("target_unknown")
    driver = launch_on_cluster(drivers, cluster, tiny_run, url, "nope", 3, 1, "--latency",
                               "node:rpi5")  # fmt: skip

    assert driver.wait() == 2
    [line] = driver.stderr.strip().splitlines()
    assert "no Ray node offers resource 'rpi5'" in line and TARGET in line
    assert trials(url, "nope") == []
