"""``make fuzz``: the deep schemathesis run against a live ``authkeep serve``.

Starts authkeep on a fresh SQLite database in a temporary directory (rate limits off: fuzzing
is load, and 429s would hide the routes' own answers; cheap hashing: no case is about the
hash), creates a fuzz user who is a platform admin and an organization's admin, and runs
``schemathesis run`` on the served schema with every check, both generation modes,
authenticated operations included (a fresh login per case) and hostile values (NUL, control
and bidi characters, extreme datetimes: ``tests/hostile_inputs.py``), see
``scripts/fuzz_hooks.py``, within a time budget. ``schemathesis.toml`` at the repository
root configures the expectations. The exit status is schemathesis': 0 means no server error
and no schema violation.

Usage: ``python scripts/fuzz.py [--max-examples N] [--max-time SECONDS] [-- extra args]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "fuzzer@example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"authkeep serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"authkeep serve not healthy after {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--max-time", type=int, default=420, help="seconds, whole run")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("extra", nargs="*", help="more schemathesis run arguments")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="authkeep-fuzz-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    env.update(
        AUTHKEEP_ENV="test",
        AUTHKEEP_SECRET_KEY=secrets.token_urlsafe(48),
        AUTHKEEP_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'authkeep.db'}",
        AUTHKEEP_RATE_LIMIT_ENABLED="false",
        AUTHKEEP_ARGON2_MEMORY_KIB="8192",
        AUTHKEEP_ARGON2_TIME_COST="1",
        AUTHKEEP_LOG_LEVEL="WARNING",
    )
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "authkeep", "serve", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_healthy(url, server)
        # A platform admin (`authkeep create-admin`) who administers an organization: every
        # route, /api/v1/admin and /api/v1/audit included, is reached past its authorization.
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "authkeep", "create-admin", "--email", EMAIL],
            env={**env, "AUTHKEEP_ADMIN_PASSWORD": password},
            cwd=workdir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        token = httpx.post(
            url + "/api/v1/auth/login", json={"email": EMAIL, "password": password}
        ).json()["access_token"]
        created = httpx.post(
            url + "/api/v1/orgs",
            json={"name": "Fuzz Org"},
            headers={"Authorization": f"Bearer {token}"},
        )
        created.raise_for_status()
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(ROOT / "schemathesis.toml"),
            "run",
            url + "/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            str(args.max_examples),
            "--max-time",
            str(args.max_time),
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--report",
            "junit",
            "--report-dir",
            str(ROOT / "schemathesis-report"),
        ]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        command += args.extra
        hooks_env = {
            **env,
            "PYTHONPATH": os.pathsep.join(
                filter(
                    None,
                    [str(ROOT / "scripts"), str(ROOT / "tests"), env.get("PYTHONPATH")],
                )
            ),
            "SCHEMATHESIS_HOOKS": "fuzz_hooks",
            "AUTHKEEP_FUZZ_URL": url,
            "AUTHKEEP_FUZZ_EMAIL": EMAIL,
            "AUTHKEEP_FUZZ_PASSWORD": password,
        }
        code = subprocess.run(command, env=hooks_env, cwd=ROOT, check=False).returncode  # noqa: S603
        if "unhandled_error" in (workdir / "server.log").read_text(errors="replace"):
            print("the server logged an unhandled error; see", workdir / "server.log")
            code = code or 1
        return code
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        if os.environ.get("AUTHKEEP_FUZZ_KEEP") is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
