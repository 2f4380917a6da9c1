"""What the rate limiter costs per request, with memory and with Redis storage.

    .venv/bin/python bench/rate_limit.py [--seconds 5] [--rounds 3] [--connections 64]

For each storage, the same ``authkeep serve`` (one worker, SQLite, log level WARNING) runs
twice at the same time — limiter off (``AUTHKEEP_RATE_LIMIT_ENABLED=false``) and on with a
budget no run can reach — and, after a warm-up of each, wrk (2 threads, loopback) measures
two routes in ``--rounds`` rounds, each route on the "off" server and then on the "on" one:

* ``GET /.well-known/jwks.json`` anonymous: the cheapest route, keyed by client IP — the
  limiter's overhead at its most visible;
* ``GET /api/v1/auth/me`` with a bearer token: keyed by user, so the limiter also verifies
  the JWT; the route itself checks revocation and reads the user.

The CPU's speed drifts here from one minute to the next; alternating the two servers spreads
that drift over both. Each (variant, route) reports its median run (by requests/s).

The "Redis, off" baseline has Redis configured (revocations use it), so each ratio compares
the same server with and without the limiter. Ratio = requests/s with / without; 1.00 means
free; non-2xx counts every measured run. Bounded: about 8 × (1 + rounds × seconds) s of wrk
plus four server starts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    REDIS,
    TEST_SECRET,
    WrkResult,
    alternate_rounds,
    authkeep_token,
    free_port,
    median_run,
    rounds_note,
    server,
    wrk,
)

PASSWORD = "load-test passphrase, long enough"  # no "bench": the emails hold it
UNREACHABLE = "1000000000"  # a per-minute budget no run gets near: nothing is refused
JWKS = "jwks, anonymous (IP key)"
ME = "me, bearer (user key)"


@dataclass(frozen=True)
class Run:
    """One table row: a route's median run with the limiter off and on."""

    storage: str
    route: str
    off: WrkResult
    on: WrkResult
    errors: int  # over every measured run of both servers, not only the two medians

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
    """A bearer token of a user registered for this run."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    return authkeep_token(base, email, PASSWORD)


@dataclass(frozen=True)
class Route:
    """A URL wrk loads, with the headers it sends."""

    url: str
    headers: dict[str, str]

    def run(self, *, seconds: int, connections: int) -> WrkResult:
        """wrk on this route for ``seconds``."""
        return wrk(self.url, seconds=seconds, connections=connections, headers=self.headers)


@contextlib.contextmanager
def serve(workdir: Path, *, redis: bool, enabled: bool) -> Iterator[dict[str, Route]]:
    """``authkeep serve`` on its own SQLite file until the block ends; yield its routes."""
    port = free_port()
    command = [sys.executable, "-m", "authkeep", "serve", "--port", str(port)]
    env = server_env(workdir, redis=redis, enabled=enabled)
    with server(command, port=port, env=env, cwd=workdir) as base:
        auth = {"Authorization": f"Bearer {token_for(base)}"}
        yield {
            JWKS: Route(base + "/.well-known/jwks.json", {}),
            ME: Route(base + "/api/v1/auth/me", auth),
        }


def measure_storage(
    workdir: Path, *, redis: bool, seconds: int, connections: int, rounds: int
) -> dict[tuple[str, bool], list[WrkResult]]:
    """Limiter off and on, both up at once, each route measured in alternating rounds."""
    with contextlib.ExitStack() as stack:
        servers = {
            enabled: stack.enter_context(serve(workdir, redis=redis, enabled=enabled))
            for enabled in (False, True)
        }
        for routes in servers.values():
            for route in routes.values():
                route.run(seconds=1, connections=connections)  # warm-up
        measurements: dict[tuple[str, bool], Callable[[], WrkResult]] = {
            (name, enabled): functools.partial(
                routes[name].run, seconds=seconds, connections=connections
            )
            for name in (JWKS, ME)
            for enabled, routes in servers.items()
        }
        return alternate_rounds(measurements, rounds)


def main() -> None:
    """Measure both storages and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating off/on rounds")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    args = parser.parse_args()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="authkeep-bench-rl-") as tmp:
        for storage, redis in (("memory", False), ("Redis", True)):
            results = measure_storage(
                Path(tmp),
                redis=redis,
                seconds=args.seconds,
                connections=args.connections,
                rounds=args.rounds,
            )
            runs += [
                Run(
                    storage,
                    route,
                    median_run(results[route, False]),
                    median_run(results[route, True]),
                    sum(r.errors for enabled in (False, True) for r in results[route, enabled]),
                )
                for route in (JWKS, ME)
            ]

    print(
        f"rate limiter overhead: wrk -t2 -c{args.connections} -d{args.seconds}s, "
        f"{rounds_note(args.rounds)}, one worker"
    )
    print(
        f"{'storage':<8} {'route':<26} {'off req/s':>10} {'on req/s':>10} {'ratio':>6} "
        f"{'p50 off':>8} {'p50 on':>8} {'non-2xx':>8}"
    )
    for run in runs:
        print(
            f"{run.storage:<8} {run.route:<26} {run.off.requests_per_second:>10.0f} "
            f"{run.on.requests_per_second:>10.0f} {run.ratio:>6.2f} {run.off.p50_ms:>7.2f}ms "
            f"{run.on.p50_ms:>6.2f}ms {run.errors:>8d}"
        )


if __name__ == "__main__":
    main()
