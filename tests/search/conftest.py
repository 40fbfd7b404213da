"""Fixtures for the search tests: a throwaway PostgreSQL cluster on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_USER = "tnas"
INSTALL_HINT = (
    f"PostgreSQL is not installed (no initdb under {POSTGRES_BIN_GLOB}); "
    "install it with `apt-get install -y postgresql` (.ci/run does)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """A PostgreSQL server in a temporary directory, trusting local connections.

    initdb refuses to run as root, so under root every command runs as the `postgres` user.
    """

    def __init__(self, bin_dir: Path, root: Path, port: int, as_user: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self.as_user = as_user

    def run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            pytest.fail(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}{done.stdout}{log}",
                pytrace=False,
            )

    def start(self) -> None:
        self.run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            POSTGRES_USER,
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.run("pg_ctl", *self._ctl_args())

    def _ctl_args(self) -> list[str]:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"  # a throwaway cluster: speed over safety
        )
        return ["-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"]

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER, name)
        return f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{self.port}/{name}"


def postgres_bin_dir() -> Path:
    found = glob.glob(f"{POSTGRES_BIN_GLOB}/initdb")
    if not found:
        pytest.fail(INSTALL_HINT, pytrace=False)
    newest = max(found, key=lambda path: int(Path(path).parent.parent.name.split(".")[0]))
    return Path(newest).parent


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    bin_dir = postgres_bin_dir()
    as_user = "postgres" if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: that sits in a 0700 directory the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="tnas-pg-"))
    try:
        if as_user:
            try:
                shutil.chown(root, as_user, as_user)
            except LookupError:
                pytest.fail(f"running as root but there is no `{as_user}` user; {INSTALL_HINT}")
        cluster = PostgresCluster(bin_dir, root, free_port(), as_user)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """``postgresql+psycopg://tnas@127.0.0.1:PORT/tnas`` on a throwaway cluster."""
    return postgres_cluster.create_database("tnas")
