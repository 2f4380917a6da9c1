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

START_TIMEOUT = 40.0
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


def server_env(values: Mapping[str, str]) -> dict[str, str]:
    """The environment of a server: this one without any AUTHKEEP_* variable, plus ``values``
    (so a developer's own settings never leak into a test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    env.update(values)
    return env


def start_server(
    env: Mapping[str, str], workdir: Path, name: str = "server", port: int | None = None
) -> Server:
    """Start ``python -m authkeep serve`` on ``port`` (default: a free one), in ``workdir``,
    without waiting for it."""
    port = port or free_port()
    log = workdir / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "authkeep", "serve", "--port", str(port)],
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
    env: Mapping[str, str], workdir: Path, name: str = "server", port: int | None = None
) -> Iterator[Server]:
    """A healthy ``authkeep serve`` for the duration of the block."""
    server = start_server(env, workdir, name, port)
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
