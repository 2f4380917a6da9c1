"""A worker killed with SIGKILL in the middle of requests: three ``authkeep serve`` processes
share a fresh PostgreSQL database and Redis, under a steady load; one of them is killed while
logins it accepted are still hashing (or writing their session).

The clients of the dead worker lose their connection (what a load balancer retries); the
other workers go on serving every request; and the database holds no half-written login —
every session has its refresh token and its audit row, every audit row its session — and the
audit chain still verifies (``authkeep audit verify``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import PG_ADMIN_URL, TEST_SECRET, pg_async_url
from faults.load import KINDS, Load, account, succeeded
from helpers import PASSWORD
from servers import LOAD_TEST_ENV, Server, fresh_pg_database, server_env, start_server, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

VICTIM_LOGINS = 6


def base_env(database: str, redis_url: str) -> dict[str, str]:
    return {
        **LOAD_TEST_ENV,
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": pg_async_url(database),
        "AUTHKEEP_REDIS_URL": redis_url,
        "AUTHKEEP_REDIS_PREFIX": f"authkeep-kill:{uuid.uuid4().hex[:12]}:",
    }


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_pg_database("authkeep_kill") as name:
        yield name


@pytest.fixture
def cluster(
    database: str, redis_available: str, tmp_path: Path
) -> Iterator[tuple[Server, list[Server]]]:
    """The victim (slow, costly hashing: its logins stay in flight long enough to be cut)
    and two survivors. The victim starts first and migrates; the others find the schema at
    head (concurrent GRANTs can fail in PostgreSQL)."""
    env = base_env(database, redis_available)
    slow_hashing = {"AUTHKEEP_ARGON2_MEMORY_KIB": "65536", "AUTHKEEP_ARGON2_TIME_COST": "4"}
    started: list[Server] = []
    try:
        victim = start_server({**env, **slow_hashing}, tmp_path, "victim")
        started.append(victim)
        wait_healthy(victim)
        survivors = [start_server(env, tmp_path, name) for name in ("s1", "s2")]
        started += survivors
        for server in survivors:
            wait_healthy(server)
        yield victim, survivors
    finally:
        for server in started:
            server.stop()


async def login_at(http: httpx.AsyncClient, server: Server, email: str) -> int | str:
    """A login's status, or the name of the transport error that ended it."""
    try:
        response = await http.post(
            server.url + "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
    except httpx.TransportError as exc:
        return type(exc).__name__
    return response.status_code


async def test_sigkill_mid_login_leaves_the_others_serving_and_the_database_whole(
    cluster: tuple[Server, list[Server]], database: str, tmp_path: Path
) -> None:
    victim, survivors = cluster
    async with httpx.AsyncClient(timeout=60.0) as http:
        user = await account(http, survivors[0].url)
        load = Load([s.url for s in survivors], user)
        load.start()
        try:
            await load.wait_for(
                lambda: {o.kind for o in load.outcomes if succeeded(o)} == set(KINDS),
                "the survivors serve",
            )
            in_flight = [
                asyncio.create_task(login_at(http, victim, user["email"]))
                for _ in range(VICTIM_LOGINS)
            ]
            # One login has finished, so the others are queued behind the one hashing
            # thread or inside it: the kill lands mid-request.
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            assert [task.result() for task in done] == [200]
            os.kill(victim.proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            victim_results = await asyncio.gather(*in_flight)
            await load.wait_for(
                lambda: all(
                    sum(o.kind == kind and succeeded(o) for o in load.since(killed_at)) >= 3
                    for kind in KINDS
                ),
                "the survivors keep serving after the kill",
            )
        finally:
            await load.stop()

    assert victim.proc.wait(timeout=10) == -signal.SIGKILL
    cut = [r for r in victim_results if isinstance(r, str)]
    assert cut, f"no request was in flight when the worker died: {victim_results}"
    assert set(victim_results) - set(cut) <= {200}, victim_results
    failed = [o for o in load.outcomes if not succeeded(o)]
    assert not failed, failed[:5]
    for survivor in survivors:
        assert survivor.proc.poll() is None
        assert "unhandled_error" not in survivor.log_tail(1_000_000)

    await check_consistency(database)
    verified = subprocess.run(
        [sys.executable, "-m", "authkeep", "audit", "verify"],
        env=server_env({"AUTHKEEP_ENV": "test", "AUTHKEEP_DATABASE_URL": pg_async_url(database)}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def check_consistency(database: str) -> None:
    """No half-written login: sessions, refresh tokens and login audit rows match one to one
    (a login writes the three in one transaction)."""
    conn = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database)
    try:
        sessions = {str(r["id"]) for r in await conn.fetch("SELECT id FROM auth_sessions")}
        without_token = await conn.fetch(
            "SELECT s.id FROM auth_sessions s LEFT JOIN refresh_tokens r "
            "ON r.session_id = s.id WHERE r.jti IS NULL"
        )
        audited = {
            r["entity_id"]
            for r in await conn.fetch(
                "SELECT entity_id FROM audit_log WHERE action = 'auth.login' "
                "AND outcome = 'success'"
            )
        }
        live_twice = await conn.fetch(
            "SELECT session_id FROM refresh_tokens WHERE spent_at IS NULL "
            "AND revoked_at IS NULL GROUP BY session_id HAVING count(*) > 1"
        )
    finally:
        await conn.close()
    assert len(sessions) > VICTIM_LOGINS
    assert without_token == []
    assert audited == sessions
    assert live_twice == []
