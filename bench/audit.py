"""What writing the audit log costs: the same requests with auditing off and on.

    .venv/bin/python bench/audit.py [--seconds 5] [--rounds 3] [--backend postgres|sqlite|both]

For each backend, two ``authkeep serve`` processes (one worker, log level WARNING, rate limits
off, a fresh database each) run at the same time with ``AUTHKEEP_AUDIT_ENABLED=false`` and
``=true``; after a warm-up of each, wrk (2 threads, loopback) measures, in ``--rounds``
rounds, each scenario on the "off" server and then on the "on" one:

* ``POST /api/v1/auth/login`` with a correct password — one audit row inside the login's
  transaction (argon2 dominates: the audit share is small by construction);
* ``DELETE /api/v1/auth/sessions/{id}`` — an audited write: the revocation and its audit row
  in one transaction, every request a different session (ids pre-created in bulk in that
  server's database just before each run, a fresh list per run, fed to wrk by a Lua script),
  so each request really changes something.

The CPU's speed drifts here from one minute to the next; alternating the two servers spreads
that drift over both. Each (variant, scenario) reports its median run (by requests/s).

It prints requests/s off and on, the ratio (on ÷ off; target ≥ 0.90, i.e. at most 10 %
slower, on PostgreSQL), p50 latencies and non-2xx answers over all measured runs (should be
0: a non-2xx means a run's session ids ran out — raise ``--sessions``). PostgreSQL:
``AUTHKEEP_BENCH_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``), Redis
``AUTHKEEP_BENCH_REDIS_URL`` for revocations. About 4 × (1 + rounds × seconds) s of wrk per
backend, plus server starts and session set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    pg,
    pg_url,
    rounds_note,
    server,
    wrk,
)

EMAIL = "bench-audit@example.com"
PASSWORD = "load-test passphrase, long enough"  # no "bench": the emails hold it
THREADS = 2
LOGIN = "login"
REVOKE = "revoke a session"

LOGIN_LUA = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{json.dumps({"email": EMAIL, "password": PASSWORD})}'
"""

# Each wrk thread walks its own stride of the ids, so no session is revoked twice.
REVOKE_LUA = """
local ids = {%s}
local n = #ids
local created = 0
local i = 0
function setup(thread)
  thread:set("tid", created)
  created = created + 1
end
request = function()
  local index = ((tid + i * %d) %% n) + 1
  i = i + 1
  return wrk.format("DELETE", "/api/v1/auth/sessions/" .. ids[index])
end
"""


@dataclass(frozen=True)
class Run:
    """One table row: a scenario's median run with auditing off and on."""

    backend: str
    scenario: str
    off: WrkResult
    on: WrkResult
    errors: int  # over every measured run of both servers, not only the two medians

    @property
    def ratio(self) -> float:
        return self.on.requests_per_second / self.off.requests_per_second


def _redis_up() -> bool:
    import redis

    try:
        client = redis.Redis.from_url(REDIS, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def server_env(database_url: str, *, audit: bool, redis: bool) -> dict[str, str]:
    env = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": database_url,
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_AUDIT_ENABLED": "true" if audit else "false",
    }
    if redis:
        env["AUTHKEEP_REDIS_URL"] = REDIS
        env["AUTHKEEP_REDIS_PREFIX"] = f"bench-audit-{uuid.uuid4().hex[:8]}:"
    return env


def _create_sessions(database_url: str, count: int) -> list[str]:
    """``count`` live sessions of the bench user, inserted in bulk (no login each)."""
    from sqlalchemy import insert, select

    from authkeep.db.engine import Database
    from authkeep.db.models import AuthSession, User
    from authkeep.security.configured import build_envelope
    from authkeep.security.emails import email_key
    from authkeep.settings import Settings

    # Addresses are sealed; the blind index (under the servers' data key) finds the user.
    envelope = build_envelope(Settings(env="test", secret_key=TEST_SECRET))
    indexes = envelope.blind_indexes(email_key(EMAIL))

    async def run() -> list[str]:
        db = Database(database_url)
        try:
            async with db.transaction() as conn:
                user_id = (
                    await conn.execute(select(User.id).where(User.email_key.in_(indexes)))
                ).scalar_one()
                now = datetime.now(UTC)
                ids = [uuid.uuid4() for _ in range(count)]
                await conn.execute(
                    insert(AuthSession),
                    [
                        {
                            "id": sid,
                            "user_id": user_id,
                            "created_at": now,
                            "last_used_at": now,
                            "expires_at": now + timedelta(days=1),
                        }
                        for sid in ids
                    ],
                )
            return [str(sid) for sid in ids]
        finally:
            await db.close()

    return asyncio.run(run())


def _revoke_script(ids: list[str]) -> str:
    return REVOKE_LUA % (",".join(f'"{sid}"' for sid in ids), THREADS)


@dataclass(frozen=True)
class Load:
    """What every measured run asks of a server."""

    seconds: int
    connections: int
    sessions: int  # sessions pre-created for each measured revoke run

    @property
    def login_connections(self) -> int:
        # Each login hashes for ~20 ms on 2 cores: more connections only lengthen the queue.
        return min(self.connections, 16)


@dataclass(frozen=True)
class Target:
    """One running server and what a wrk run against it needs."""

    base: str
    database_url: str
    auth: dict[str, str]


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database for one server; a PostgreSQL one is dropped at the end."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir}/bench-{uuid.uuid4().hex[:8]}.db"
        return
    name = f"authkeep_bench_audit_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def serve(workdir: Path, database_url: str, *, audit: bool, redis: bool) -> Iterator[Target]:
    """``authkeep serve`` on ``database_url`` with the bench user registered and logged in."""
    port = free_port()
    command = [sys.executable, "-m", "authkeep", "serve", "--port", str(port)]
    env = server_env(database_url, audit=audit, redis=redis)
    with server(command, port=port, env=env, cwd=workdir) as base:
        auth = {"Authorization": f"Bearer {authkeep_token(base, EMAIL, PASSWORD)}"}
        yield Target(base, database_url, auth)


def login_run(target: Target, load: Load, seconds: int) -> WrkResult:
    """wrk on the login route for ``seconds``."""
    url = target.base + "/api/v1/auth/login"
    return wrk(url, seconds=seconds, connections=load.login_connections, script=LOGIN_LUA)


def revoke_run(target: Target, load: Load, seconds: int, sessions: int) -> WrkResult:
    """wrk revoking ``sessions`` sessions created for this run alone, for ``seconds``."""
    # Fresh uuid4s inserted into this server's own database: no other run, of this server
    # or the other one, can revoke (or have revoked) any of them.
    ids = _create_sessions(target.database_url, sessions)
    return wrk(
        target.base,
        seconds=seconds,
        connections=load.connections,
        headers=target.auth,
        script=_revoke_script(ids),
    )


def warm_up(target: Target, load: Load) -> None:
    """One short run of each scenario, so that measured runs meet warm caches and pools."""
    login_run(target, load, seconds=1)
    revoke_run(target, load, seconds=1, sessions=max(1000, load.sessions // 5))


def measurements(
    targets: dict[bool, Target], load: Load
) -> dict[tuple[str, bool], Callable[[], WrkResult]]:
    """Each (scenario, audit) measured run, ordered so that off and on alternate."""
    scenarios: dict[str, Callable[[Target], WrkResult]] = {
        LOGIN: lambda target: login_run(target, load, load.seconds),
        REVOKE: lambda target: revoke_run(target, load, load.seconds, load.sessions),
    }
    return {
        (scenario, audit): functools.partial(run, target)
        for scenario, run in scenarios.items()
        for audit, target in targets.items()
    }


def run_backend(backend: str, workdir: Path, load: Load, rounds: int) -> list[Run]:
    """Both servers up at once, warmed up, then measured in ``rounds`` alternating rounds."""
    redis = backend == "postgres" and _redis_up()
    with contextlib.ExitStack() as stack:
        targets: dict[bool, Target] = {}
        for audit in (False, True):
            url = stack.enter_context(database(backend, workdir))
            targets[audit] = stack.enter_context(serve(workdir, url, audit=audit, redis=redis))
        for target in targets.values():
            warm_up(target, load)
        runs = alternate_rounds(measurements(targets, load), rounds)
    return [
        Run(
            backend,
            scenario,
            median_run(runs[scenario, False]),
            median_run(runs[scenario, True]),
            sum(r.errors for audit in (False, True) for r in runs[scenario, audit]),
        )
        for scenario in (LOGIN, REVOKE)
    ]


def main() -> None:
    """Measure every backend asked for and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating off/on rounds")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="postgres")
    parser.add_argument(
        "--sessions", type=int, default=40000, help="sessions pre-created per revoke run"
    )
    args = parser.parse_args()
    backends = ("postgres", "sqlite") if args.backend == "both" else (args.backend,)
    load = Load(args.seconds, args.connections, args.sessions)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="authkeep-bench-audit-") as tmp:
        for backend in backends:
            runs += run_backend(backend, Path(tmp), load, args.rounds)
    print(
        f"audit log cost: wrk -t{THREADS} -d{args.seconds}s, {rounds_note(args.rounds)}, "
        "one worker, audit off vs on"
    )
    print(
        f"{'backend':<9} {'scenario':<17} {'off req/s':>10} {'on req/s':>10} {'ratio':>6} "
        f"{'slower':>7} {'p50 off':>9} {'p50 on':>9} {'non-2xx':>8}"
    )
    for run in runs:
        print(
            f"{run.backend:<9} {run.scenario:<17} {run.off.requests_per_second:>10.0f} "
            f"{run.on.requests_per_second:>10.0f} {run.ratio:>6.2f} "
            f"{(1 - run.ratio) * 100:>6.1f}% {run.off.p50_ms:>7.2f}ms {run.on.p50_ms:>7.2f}ms "
            f"{run.errors:>8d}"
        )
    print("target: ratio >= 0.90 (at most 10 % slower) on PostgreSQL")


if __name__ == "__main__":
    main()
