"""docker-compose.yml, the Dockerfile and .env.example: Compose v2 itself validates the file
(`docker compose config`, no engine needed; `make compose` puts the binary in the venv), and the
checks below hold the deployment's promises: scalable workers, loopback ports, no secrets."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"postgres", "migrate", "ray-head", "ray-worker", "ray-worker-gpu", "optuna-dashboard"}
RUNNER = "tnas"
TARGET = "ray-target"
WORKERS = ("ray-worker", "ray-worker-gpu")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
# A variable that compose must be given: ${NAME:?message} or ${NAME?message}.
REQUIRED_VARIABLE = re.compile(r"^\$\{[A-Z_]+:?\?[^}]*\}$")
# What a secret's value may be in the file: a required variable, or one empty by default.
SECRET_VALUE = re.compile(r"^\$\{[A-Z_]+(:?\?[^}]*|:-)\}$")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^@\s/]+@")


def compose_validator() -> list[str] | None:
    """A Docker Compose v2 command line: the binary `make compose` puts beside this Python,
    else `docker compose`, else a v2 `docker-compose` on PATH; None if there is none."""
    candidates = []
    beside = Path(sys.executable).with_name("docker-compose")
    if beside.is_file():
        candidates.append([str(beside)])
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            result = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0 and result.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


@pytest.fixture(scope="module")
def compose():
    """Runs the validator on docker-compose.yml with every profile and .env.example's values,
    in an environment without any of the file's variables except those a test passes."""
    command = compose_validator()
    if command is None:
        message = "no Docker Compose v2 to validate docker-compose.yml: run `make compose`"
        if os.environ.get("CI") and platform.system() == "Linux" and platform.machine() == "x86_64":
            pytest.fail(f"{message} (CI installs it through `make test`)")
        pytest.skip(message)
    variables = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE_FILE.read_text()))

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if k not in variables}
        clean = {k: v for k, v in clean.items() if not k.startswith("COMPOSE_")}
        return subprocess.run(
            [
                *command,
                "--project-directory", str(ROOT),
                "--env-file", str(ENV_EXAMPLE),
                "-f", str(COMPOSE_FILE),
                "--profile", "gpu",
                "--profile", "runner",
                "--profile", "target",
                *args,
            ],
            capture_output=True, text=True, timeout=120, env=clean | env,
        )  # fmt: skip

    return run


@pytest.fixture(scope="module")
def spec() -> dict:
    """docker-compose.yml as YAML: anchors and merge keys resolved, variables not."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_config_is_valid(compose):
    result = compose("config", "--quiet", POSTGRES_PASSWORD="config-check")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_password(compose):
    result = compose("config", "--quiet")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


@pytest.mark.parametrize("bind", [None, "0.0.0.0"], ids=["default", "TNAS_BIND"])
def test_published_ports_bind_loopback_unless_configured(compose, bind):
    env = {"POSTGRES_PASSWORD": "config-check"} | ({"TNAS_BIND": bind} if bind else {})
    result = compose("config", "--format", "json", **env)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == SERVICES | {RUNNER, TARGET}
    holding_the_password = {
        (name, key)
        for name, service in services.items()
        for key, value in (service.get("environment") or {}).items()
        if "config-check" in str(value)
    }
    assert holding_the_password == {
        ("postgres", "POSTGRES_PASSWORD"),
        *((name, "PGPASSWORD") for name in ("migrate", "optuna-dashboard", RUNNER)),
    }
    published = {
        (name, port["target"]): port.get("host_ip")
        for name, service in services.items()
        for port in service.get("ports", [])
    }
    assert {target for _, target in published} == {5432, 8265, 10001, 8080}
    assert set(published.values()) == {bind or "127.0.0.1"}


def test_services(spec):
    services = spec["services"]
    assert set(services) == SERVICES | {RUNNER, TARGET}
    assert services["ray-worker-gpu"]["profiles"] == ["gpu"]
    assert services[RUNNER]["profiles"] == ["runner"]
    assert services[TARGET]["profiles"] == ["target"]
    assert all("profiles" not in services[name] for name in SERVICES - {"ray-worker-gpu"})
    assert "--head" in " ".join(services["ray-head"]["command"])
    for name in WORKERS:
        assert "--address=ray-head:6379" in " ".join(services[name]["command"])


def test_a_target_node_trains_nothing_and_offers_its_resource(spec):
    command = " ".join(spec["services"][TARGET]["command"])
    assert "--address=${RAY_HEAD:-ray-head}:6379" in command
    assert "--num-cpus=0" in command
    assert '--resources={"${TNAS_TARGET:-target}": 1}' in command


@pytest.mark.parametrize("name", WORKERS)
def test_workers_scale(spec, name):
    worker = spec["services"][name]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


def test_postgres_keeps_its_data_and_reports_health(spec):
    postgres = spec["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    volume = postgres["volumes"][0].split(":")
    assert volume[0] in spec["volumes"] and volume[1] == "/var/lib/postgresql/data"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_workers_and_the_runner_share_the_checkpoint_folder(spec):
    services = spec["services"]
    for name in (*WORKERS, RUNNER):
        mounts = [volume.split(":")[:2] for volume in services[name]["volumes"]]
        assert ["checkpoints", "/checkpoints"] in mounts, name
    assert services[RUNNER]["environment"]["TNAS_CHECKPOINT_DIR"] == "/checkpoints"
    assert "checkpoints" in spec["volumes"]


def test_gpu_worker_reserves_gpus(spec):
    worker = spec["services"]["ray-worker-gpu"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert worker["image"] != spec["services"]["ray-worker"]["image"]


def test_dependencies_wait_for_health_or_completion(spec):
    services = spec["services"]
    edges = [(n, d, c) for n, s in services.items() for d, c in s.get("depends_on", {}).items()]
    assert {(n, d) for n, d, _ in edges} >= {
        ("migrate", "postgres"),
        ("ray-worker", "ray-head"),
        ("ray-worker-gpu", "ray-head"),
        ("optuna-dashboard", "migrate"),
        (RUNNER, "migrate"),
        (RUNNER, "ray-head"),
    }
    for name, dependency, condition in edges:
        wanted = "service_completed_successfully" if dependency == "migrate" else "service_healthy"
        assert condition == {"condition": wanted}, (name, dependency)
        if wanted == "service_healthy":
            assert "healthcheck" in services[dependency], dependency


def test_no_secret_in_the_file(spec):
    text = re.sub(r"\$\{[^}]*\}", "VARIABLE", COMPOSE_FILE.read_text())
    assert not CREDENTIALS_IN_URL.search(text)
    for name, service in spec["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), name
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert SECRET_VALUE.match(str(value)), (name, key, value)
            if key == "TNAS_STORAGE":
                assert not CREDENTIALS_IN_URL.search(re.sub(r"\$\{[^}]*\}", "V", value)), name
    assert REQUIRED_VARIABLE.match(spec["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"])
    # Only the containers that open the database receive its password.
    holders = {n for n, s in spec["services"].items() if "PGPASSWORD" in s.get("environment", {})}
    assert holders == {"migrate", "optuna-dashboard", RUNNER}


def test_runner_options_exist():
    """The runner's default search, and .env.example's, use options `tnas search launch` has."""
    import typer.main

    from tnas.cli import app

    launch = typer.main.get_command(app).commands["search"].commands["launch"]
    options = {opt for param in launch.params for opt in param.opts if opt.startswith("--")}
    runner = yaml.safe_load(COMPOSE_FILE.read_text())["services"][RUNNER]
    default = runner["environment"]["TNAS_SEARCH"]
    default = re.fullmatch(r"\$\{TNAS_SEARCH:-(.*)\}", default, re.DOTALL).group(1)
    example = env_example()["TNAS_SEARCH"]
    for words in (default.split(), example.split(), " ".join(runner["command"]).split()):
        used = {word for word in words if word.startswith("--")}
        assert used <= options, used - options
    assert {"--storage", "--ray-address"} <= set(" ".join(runner["command"]).split())


def env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_env_example_lists_every_variable_and_no_secret():
    example = env_example()
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE_FILE.read_text()))
    assert used == set(example), used.symmetric_difference(example)
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "", key


def test_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH_PIN\s*:?=\s*(\S+)", makefile, re.MULTILINE).group(1)
    assert f"ARG TORCH_PIN={torch_pin}\n" in dockerfile
    assert "ARG PYTHON_IMAGE=python:3.11-slim\n" in dockerfile
    assert '"/tmp/tnas-src[postgres]"' in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    for line in re.findall(r"^(?:ENV|ARG)\s.*$", dockerfile, re.MULTILINE):
        assert not SECRET_NAME.search(line), line
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in dockerignore  # an allow-list: .env, databases and .venv never reach the build
