"""Real ``authkeep serve`` processes (and a private Redis) for tests that need sockets, several
workers, a restart or a dependency that goes down. Importable as ``servers``.

Every process is started in its own session and stopped by its own pid, with a bounded wait:
a test that fails never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT = 90.0  # four workers importing at once on a loaded 2-core machine
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


@dataclass
class Server:
    """One running ``authkeep serve``."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of what the server printed."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a bounded wait)."""
        _stop(self.proc)


# For servers whose test is about something else than limits or hashing (faults, crashes):
# the load would exhaust the limits, and cheap hashes keep the runs short.
LOAD_TEST_ENV = {
    "AUTHKEEP_ENV": "test",
    "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
    "AUTHKEEP_HASH_WORKERS": "1",
    "AUTHKEEP_ARGON2_MEMORY_KIB": "8192",
    "AUTHKEEP_ARGON2_TIME_COST": "1",
    "AUTHKEEP_LOG_LEVEL": "WARNING",
}


def server_env(values: Mapping[str, str]) -> dict[str, str]:
    """The environment of a server: this one without any AUTHKEEP_* variable, plus ``values``
    (so a developer's own settings never leak into a test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    env.update(values)
    return env


def start_server(
    env: Mapping[str, str],
    workdir: Path,
    name: str = "server",
    port: int | None = None,
    workers: int = 1,
) -> Server:
    """Start ``python -m authkeep serve`` on ``port`` (default: a free one) with ``workers``
    worker processes, in ``workdir``, without waiting for it."""
    port = port or free_port()
    log = workdir / f"{name}-{port}.log"
    command = [sys.executable, "-m", "authkeep", "serve", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=server_env(env),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(f"http://127.0.0.1:{port}", proc, log)


def wait_healthy(server: Server, timeout: float = START_TIMEOUT) -> None:
    """Poll ``/health`` until it answers 200; fail with the server's output otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"server not healthy after {timeout} s:\n{server.log_tail()}")


@contextlib.contextmanager
def serving(
    env: Mapping[str, str],
    workdir: Path,
    name: str = "server",
    port: int | None = None,
    workers: int = 1,
) -> Iterator[Server]:
    """A healthy ``authkeep serve`` for the duration of the block."""
    server = start_server(env, workdir, name, port, workers)
    try:
        wait_healthy(server)
        yield server
    finally:
        server.stop()


class RedisProcess:
    """A private, non-persistent ``redis-server`` that a test may stop and start again on the
    same port (a Redis restart loses every key, as a cache-only deployment would)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        import redis

        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("private redis-server did not start")

    def stop(self) -> None:
        """Stop the server (its keys are gone for good)."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


PG_BIN = Path(os.environ.get("AUTHKEEP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresProcess:
    """A private PostgreSQL cluster (initdb in a temporary directory, a free port) that a test
    may stop and start again — the shared server other tests use is never touched.

    PostgreSQL refuses to run as root: as root, every command runs as the ``postgres`` OS
    user (``runuser``), in a directory that user owns (pytest's own temporary directories
    are private to root, so a world-traversable one under the system temp dir is used).
    """

    def __init__(self) -> None:
        import tempfile

        from conftest import unavailable

        missing = [b for b in ("initdb", "pg_ctl") if not (PG_BIN / b).is_file()]
        if missing:
            unavailable("a private PostgreSQL", f"{', '.join(missing)} not found in {PG_BIN}")
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                unavailable("a private PostgreSQL", "running as root and runuser is missing")
            self._as = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="authkeep-pg-"))
        if self._as:
            shutil.chown(self.dir, user="postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, binary: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as, str(PG_BIN / binary), *args],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"{binary} {' '.join(args)} failed:\n{result.stdout!r}\n{result.stderr!r}")

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        """A URL for ``database`` as the cluster's superuser."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the cluster. ``immediate`` is a crash as far as clients and WAL are concerned:
        connections drop at once and the next start replays the log."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server log."""
        try:
            return (self.dir / "log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        """Stop the cluster if it runs and delete its files."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self._as,
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "authkeep_proc") -> Iterator[str]:
    """A new, empty database on the shared test PostgreSQL (``AUTHKEEP_TEST_PG_URL``) for
    servers to migrate; dropped afterwards. Skipped (failed under CI) if the server is absent."""
    import asyncio
    import uuid

    from conftest import _pg_admin, unavailable

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin([f'CREATE DATABASE "{name}"']))
    except Exception as exc:
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    try:
        yield name
    finally:
        asyncio.run(_pg_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))
