"""``make run`` honours ``HOST`` and ``PORT`` (the README's quick start)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def serve_command(*assignments: str, environ: dict[str, str] | None = None) -> str:
    """The ``authkeep serve`` line ``make run`` would run (``make -n``: nothing runs)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    base = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "run", *assignments],
        env={**base, **(environ or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [line] = [line for line in done.stdout.splitlines() if "authkeep serve" in line]
    return line


def test_the_defaults_are_loopback_and_8000() -> None:
    assert serve_command().endswith("authkeep serve --host 127.0.0.1 --port 8000")


def test_host_and_port_are_honoured_from_the_command_line_and_the_environment() -> None:
    assert serve_command("HOST=0.0.0.0", "PORT=9000").endswith("--host 0.0.0.0 --port 9000")
    assert serve_command(environ={"PORT": "8123"}).endswith("--host 127.0.0.1 --port 8123")
