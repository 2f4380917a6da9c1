"""`authkeep worker` processes for the fault tests that kill one mid-delivery."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def start_worker(env: Mapping[str, str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """``authkeep worker`` in its own session, its output in ``workdir/<name>.log``."""
    with (workdir / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "authkeep", "worker"],
            env=dict(env),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM this process (SIGKILL after a bounded wait); nothing else."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
