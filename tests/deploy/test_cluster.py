"""A search on the deployment's topology (scripts/cluster): PostgreSQL, a Ray head and a Ray
worker, two drivers sharing one study, each with one Ray worker of its own."""

from __future__ import annotations

from tests.deploy.conftest import HEAD_IP, WORKER_IP, check_budget_met_once_each

BUDGET = 8


def test_cluster_status_names_every_part_up(cluster):
    lines = cluster.run("status").splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["postgres", "up"],
        ["head", "up"],
        ["worker", "up"],
    ]
    assert cluster.ray_address in lines[1]
    assert cluster.env["TNAS_STORAGE"].startswith("postgresql://")


def test_two_drivers_share_one_study_over_both_nodes(cluster, drivers, tiny_run):
    url = cluster.create_database("two_drivers")
    launch = (
        "search", "launch", str(tiny_run), "--storage", url, "--ray-address",
        cluster.ray_address, "--study", "shared", "--trials", str(BUDGET), "--workers", "1",
        "--join",
    )  # fmt: skip
    # Each driver's one worker needs a CPU, and each node has one: they run on both nodes.
    pair = [drivers(*launch), drivers(*launch)]
    for driver in pair:
        assert driver.wait() == 0, driver.stderr
    done = check_budget_met_once_each(url, "shared", BUDGET)
    assert {trial.user_attrs["node_ip"] for trial in done} == {HEAD_IP, WORKER_IP}
    assert all(trial.user_attrs["attempts"] == 1 for trial in done)
