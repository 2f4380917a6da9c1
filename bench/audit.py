"""What writing the audit log costs: the same requests with auditing off and on.

    .venv/bin/python bench/audit.py [--seconds 5] [--backend postgres|sqlite|both]

For each backend, two ``authkeep serve`` processes (one worker, log level WARNING, rate limits
off, a fresh database each) run with ``AUTHKEEP_AUDIT_ENABLED=false`` and ``=true``; wrk
(2 threads, loopback) measures on each:

* ``POST /api/v1/auth/login`` with a correct password — one audit row inside the login's
  transaction (argon2 dominates: the audit share is small by construction);
* ``DELETE /api/v1/auth/sessions/{id}`` — an audited write: the revocation and its audit row
  in one transaction, every request a different session (ids pre-created in bulk, fed to
  wrk by a Lua script), so each request really changes something.

It prints requests/s off and on, the ratio (on ÷ off; target ≥ 0.90, i.e. at most 10 %
slower, on PostgreSQL), p50 latencies and non-2xx answers (should be 0: a non-2xx means the
session ids ran out — raise ``--sessions``). PostgreSQL: ``AUTHKEEP_BENCH_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), Redis ``AUTHKEEP_BENCH_REDIS_URL`` for
revocations. About (1 + seconds) × 4 runs per backend, plus server starts and set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import TEST_SECRET, WrkResult, free_port, server, wrk

PG_ADMIN = os.environ.get("AUTHKEEP_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("AUTHKEEP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
EMAIL = "bench-audit@example.com"
PASSWORD = "bench passphrase, long enough"
THREADS = 2

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
    backend: str
    scenario: str
    off: WrkResult
    on: WrkResult

    @property
    def ratio(self) -> float:
        return self.on.requests_per_second / self.off.requests_per_second


def _pg(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _pg_url(database: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


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


def _login(base: str) -> str:
    body = {"email": EMAIL, "password": PASSWORD}
    httpx.post(base + "/api/v1/auth/register", json=body, timeout=30).raise_for_status()
    response = httpx.post(base + "/api/v1/auth/login", json=body, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


def _create_sessions(database_url: str, count: int) -> list[str]:
    """``count`` live sessions of the bench user, inserted in bulk (no login each)."""
    from sqlalchemy import insert, select

    from authkeep.db.engine import Database
    from authkeep.db.models import AuthSession, User

    async def run() -> list[str]:
        db = Database(database_url)
        try:
            async with db.transaction() as conn:
                user_id = (
                    await conn.execute(select(User.id).where(User.email == EMAIL))
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


def measure(
    workdir: Path,
    database_url: str,
    *,
    audit: bool,
    redis: bool,
    seconds: int,
    connections: int,
    sessions: int,
) -> dict[str, WrkResult]:
    port = free_port()
    command = [sys.executable, "-m", "authkeep", "serve", "--port", str(port)]
    env = server_env(database_url, audit=audit, redis=redis)
    results: dict[str, WrkResult] = {}
    with server(command, port=port, env=env, cwd=workdir) as base:
        token = _login(base)
        url = base + "/api/v1/auth/login"
        wrk(url, seconds=1, connections=min(connections, 16), script=LOGIN_LUA)  # warm-up
        results["login"] = wrk(
            url, seconds=seconds, connections=min(connections, 16), script=LOGIN_LUA
        )
        auth = {"Authorization": f"Bearer {token}"}
        warm = _create_sessions(database_url, max(1000, sessions // 5))
        wrk(base, seconds=1, connections=connections, headers=auth, script=_revoke_script(warm))
        ids = _create_sessions(database_url, sessions)
        results["revoke a session"] = wrk(
            base,
            seconds=seconds,
            connections=connections,
            headers=auth,
            script=_revoke_script(ids),
        )
    return results


def run_backend(
    backend: str, workdir: Path, *, seconds: int, connections: int, sessions: int
) -> list[Run]:
    results: dict[bool, dict[str, WrkResult]] = {}
    for audit in (False, True):
        if backend == "postgres":
            name = f"authkeep_bench_audit_{uuid.uuid4().hex[:8]}"
            _pg(f'CREATE DATABASE "{name}"')
            try:
                results[audit] = measure(
                    workdir,
                    _pg_url(name),
                    audit=audit,
                    redis=_redis_up(),
                    seconds=seconds,
                    connections=connections,
                    sessions=sessions,
                )
            finally:
                _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            url = f"sqlite+aiosqlite:///{workdir}/bench-{uuid.uuid4().hex[:8]}.db"
            results[audit] = measure(
                workdir,
                url,
                audit=audit,
                redis=False,
                seconds=seconds,
                connections=connections,
                sessions=sessions,
            )
    return [
        Run(backend, scenario, results[False][scenario], results[True][scenario])
        for scenario in results[False]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="postgres")
    parser.add_argument(
        "--sessions", type=int, default=40000, help="sessions pre-created per revoke run"
    )
    args = parser.parse_args()
    backends = ("postgres", "sqlite") if args.backend == "both" else (args.backend,)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="authkeep-bench-audit-") as tmp:
        for backend in backends:
            runs += run_backend(
                backend,
                Path(tmp),
                seconds=args.seconds,
                connections=args.connections,
                sessions=args.sessions,
            )
    print(f"audit log cost: wrk -t{THREADS} -d{args.seconds}s, one worker, audit off vs on")
    print(
        f"{'backend':<9} {'scenario':<17} {'off req/s':>10} {'on req/s':>10} {'ratio':>6} "
        f"{'slower':>7} {'p50 off':>9} {'p50 on':>9} {'non-2xx':>8}"
    )
    for run in runs:
        print(
            f"{run.backend:<9} {run.scenario:<17} {run.off.requests_per_second:>10.0f} "
            f"{run.on.requests_per_second:>10.0f} {run.ratio:>6.2f} "
            f"{(1 - run.ratio) * 100:>6.1f}% {run.off.p50_ms:>7.2f}ms {run.on.p50_ms:>7.2f}ms "
            f"{run.off.errors + run.on.errors:>8d}"
        )
    print("target: ratio >= 0.90 (at most 10 % slower) on PostgreSQL")


if __name__ == "__main__":
    main()
