"""What the rate limiter costs per request, with memory and with Redis storage.

    .venv/bin/python bench/rate_limit.py [--seconds 5] [--connections 64]

For each storage, the same ``authkeep serve`` (one worker, SQLite, log level WARNING) runs
twice — limiter off (``AUTHKEEP_RATE_LIMIT_ENABLED=false``) and on with a budget no run can
reach — and wrk (2 threads, loopback) measures two routes:

* ``GET /.well-known/jwks.json`` anonymous: the cheapest route, keyed by client IP — the
  limiter's overhead at its most visible;
* ``GET /api/v1/auth/me`` with a bearer token: keyed by user, so the limiter also verifies
  the JWT; the route itself checks revocation and reads the user.

The "Redis, off" baseline has Redis configured (revocations use it), so each ratio compares
the same server with and without the limiter. Ratio = requests/s with / without; 1.00 means
free. Bounded: about (1 + seconds) × 8 runs plus four server starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import TEST_SECRET, WrkResult, free_port, server, wrk

REDIS = os.environ.get("AUTHKEEP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "bench passphrase, long enough"
UNREACHABLE = "1000000000"  # a per-minute budget no run gets near: nothing is refused


@dataclass(frozen=True)
class Run:
    storage: str
    route: str
    off: WrkResult
    on: WrkResult

    @property
    def ratio(self) -> float:
        return self.on.requests_per_second / self.off.requests_per_second


def server_env(workdir: Path, *, redis: bool, enabled: bool) -> dict[str, str]:
    env = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/bench-{uuid.uuid4().hex[:8]}.db",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_AUDIT_ENABLED": "false",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "true" if enabled else "false",
        "AUTHKEEP_RATE_LIMIT_PER_MINUTE": UNREACHABLE,
        "AUTHKEEP_LOGIN_RATE_LIMIT": f"{UNREACHABLE}/minute",
        "AUTHKEEP_REGISTER_RATE_LIMIT": f"{UNREACHABLE}/minute",
    }
    if redis:
        env["AUTHKEEP_REDIS_URL"] = REDIS
        env["AUTHKEEP_REDIS_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}:"
    return env


def token_for(base: str) -> str:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": PASSWORD}
    httpx.post(base + "/api/v1/auth/register", json=body, timeout=30).raise_for_status()
    response = httpx.post(base + "/api/v1/auth/login", json=body, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


def measure(
    workdir: Path, *, redis: bool, enabled: bool, seconds: int, connections: int
) -> dict[str, WrkResult]:
    port = free_port()
    command = [sys.executable, "-m", "authkeep", "serve", "--port", str(port)]
    env = server_env(workdir, redis=redis, enabled=enabled)
    results: dict[str, WrkResult] = {}
    with server(command, port=port, env=env, cwd=workdir) as base:
        auth = {"Authorization": f"Bearer {token_for(base)}"}
        for route, path, headers in (
            ("jwks, anonymous (IP key)", "/.well-known/jwks.json", {}),
            ("me, bearer (user key)", "/api/v1/auth/me", auth),
        ):
            wrk(base + path, seconds=1, connections=connections, headers=headers)  # warm-up
            results[route] = wrk(
                base + path, seconds=seconds, connections=connections, headers=headers
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    args = parser.parse_args()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="authkeep-bench-rl-") as tmp:
        workdir = Path(tmp)
        for storage, redis in (("memory", False), ("Redis", True)):
            kwargs = {"redis": redis, "seconds": args.seconds, "connections": args.connections}
            off = measure(workdir, enabled=False, **kwargs)  # type: ignore[arg-type]
            on = measure(workdir, enabled=True, **kwargs)  # type: ignore[arg-type]
            runs += [Run(storage, route, off[route], on[route]) for route in off]

    print(f"rate limiter overhead: wrk -t2 -c{args.connections} -d{args.seconds}s, one worker")
    print(
        f"{'storage':<8} {'route':<26} {'off req/s':>10} {'on req/s':>10} {'ratio':>6} "
        f"{'p50 off':>8} {'p50 on':>8} {'non-2xx':>8}"
    )
    for run in runs:
        print(
            f"{run.storage:<8} {run.route:<26} {run.off.requests_per_second:>10.0f} "
            f"{run.on.requests_per_second:>10.0f} {run.ratio:>6.2f} {run.off.p50_ms:>7.2f}ms "
            f"{run.on.p50_ms:>6.2f}ms {run.off.errors + run.on.errors:>8d}"
        )


if __name__ == "__main__":
    main()
