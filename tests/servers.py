"""Servers from Debian packages on loopback for the tests of bgen on a cluster's services:
PostgreSQL (Dagster's storage) and Redis (the Celery broker). A package that is absent is
installed with apt-get (CI runs as root on a fresh Debian machine); where that is impossible the
test is skipped with the reason. Each server lives in its own temporary folder and is stopped
and removed when the test is done."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT = int(os.environ.get("BGEN_TEST_SUBPROCESS_TIMEOUT", "900"))  # generous: a loaded machine is slow
POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_USER = "postgres"   # the package's system user: PostgreSQL refuses to run as root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_debian_package(package: str) -> None:
    """apt-get install `package`, waiting up to 10 minutes for another install's lock."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]):
        subprocess.run(["timeout", "900", *command, "-o", "DPkg::Lock::Timeout=600"], env=env, check=True,
                       stdout=subprocess.DEVNULL)


def installed_or_skip(package: str, find: Callable[[], Path | None]) -> Path:
    """What `find` locates of `package`, installing the package first when it is absent."""
    found = find()
    if found is None:
        try:
            install_debian_package(package)
        except (OSError, subprocess.SubprocessError) as error:
            pytest.skip(f"Debian's {package} is not installed and could not be installed with apt-get: {error}")
        found = find()
    assert found, f"{package} was installed but is not where expected"
    return found


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode} before it was ready:\n{log_tail(log)}")
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} not ready within {STARTUP_TIMEOUT} s:\n{log_tail(log)}")


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    """Ask the process to stop, then kill it if it has not within a minute."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def server_folder(prefix: str, owner: str | None = None) -> Iterator[Path]:
    """A temporary folder for a server's data, socket and log (not under pytest's tmp_path, which
    only root may enter), owned by the user the server runs as."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if owner:
            shutil.chown(folder, owner)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _postgres_bin() -> Path | None:
    found = sorted(POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def dagster_url(self) -> str:
        """The URL with its driver named, as bgen asks for (dagster-postgres's psycopg2)."""
        return self.url.replace("postgresql://", "postgresql+psycopg2://", 1)


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 with password authentication; a root test runs it as the
    package's system user (the process itself, not a wrapper, so that signals reach it)."""
    import psycopg2

    bin_dir = installed_or_skip("postgresql", _postgres_bin)
    owner = POSTGRES_USER if os.geteuid() == 0 else None
    as_owner = {"user": owner, "group": owner, "extra_groups": []} if owner else {}
    server = Postgres(free_port(), "bgen", secrets.token_hex(12))
    with server_folder("bgen-postgres-", owner) as folder:
        password_file = folder / "password"
        password_file.write_text(server.password)
        if owner:
            shutil.chown(password_file, owner)
        subprocess.run([str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", server.user,
                        f"--pwfile={password_file}", "--auth=scram-sha-256", "--no-sync"],
                       check=True, capture_output=True, timeout=STARTUP_TIMEOUT, **as_owner)
        password_file.unlink()
        log = folder / "server.log"
        with open(log, "w") as output:
            process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(folder / "data"), "-p", str(server.port),
                 "-k", str(folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=output, stderr=subprocess.STDOUT, **as_owner)

        def accepts_connections() -> bool:
            try:
                psycopg2.connect(server.url, connect_timeout=5).close()
            except psycopg2.OperationalError:
                return False
            return True

        try:
            wait_until(accepts_connections, process, "PostgreSQL", log)
            yield server
        finally:
            stop(process, signal.SIGINT)   # PostgreSQL's fast shutdown: SIGTERM would wait for clients to leave


def _redis_server() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server on 127.0.0.1 keeping nothing on disk; yields its URL."""
    import redis

    binary = installed_or_skip("redis-server", _redis_server)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with server_folder("bgen-redis-") as folder:
        log = folder / "server.log"
        with open(log, "w") as output:
            process = subprocess.Popen([str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                        "--appendonly", "no", "--dir", str(folder)], stdout=output, stderr=subprocess.STDOUT)

        def answers() -> bool:
            try:
                return redis.Redis.from_url(url, socket_timeout=5).ping()
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, process, "Redis", log)
            yield url
        finally:
            stop(process)
