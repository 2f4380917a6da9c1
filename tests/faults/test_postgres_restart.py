"""PostgreSQL crashes and comes back under a steady load on a running ``authkeep serve``.

A private cluster (never the shared one) is stopped with ``pg_ctl -m immediate`` — to clients
and to the WAL that is a crash — while registrations, logins and authenticated reads keep
coming. While it is away every registration and login gets a clean 503 (JSON detail,
``Retry-After``, no stack trace, never a 500); an authenticated read gets the same 503 or,
when the user is in the in-process cache, its 200; once it is back the same authkeep process
serves again, without a restart; and every registration that was answered 201 is in the
database with its audit row, the audit chain intact.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from authkeep.http.errors import DATABASE_UNAVAILABLE
from authkeep.security.configured import build_envelope
from authkeep.security.emails import email_key
from authkeep.settings import Settings
from conftest import TEST_SECRET
from faults.load import KINDS, Load, account, kinds_with, succeeded
from servers import LOAD_TEST_ENV, PostgresProcess, Server, server_env, serving

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def private_postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL cluster of this test alone, running, with an ``authkeep`` database."""
    cluster = PostgresProcess()
    try:
        cluster.start()

        async def create() -> None:
            conn = await asyncpg.connect(cluster.url(driver="postgresql"), timeout=10)
            try:
                await conn.execute("CREATE DATABASE authkeep")
            finally:
                await conn.close()

        asyncio.run(create())
        yield cluster
    finally:
        cluster.remove()


def env_for(cluster: PostgresProcess) -> dict[str, str]:
    return {
        **LOAD_TEST_ENV,
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": cluster.url("authkeep"),
    }


@pytest.fixture
def server(private_postgres: PostgresProcess, tmp_path: Path) -> Iterator[Server]:
    with serving(env_for(private_postgres), tmp_path, "pg-fault") as running:
        yield running


def report(load: Load, down_since: float, down_until: float, back_since: float) -> None:
    """What was measured (printed, never asserted: timings depend on the machine)."""
    refused = [o for o in load.outcomes if o.status == 503]
    back = {
        kind: min(o.ended for o in load.since(back_since) if o.kind == kind and succeeded(o))
        - back_since
        for kind in KINDS
    }
    print(
        f"\n[postgres restart] {len(load.outcomes)} requests, {len(refused)} answered 503; "
        f"observed outage {down_until - down_since:.2f} s; first success after pg_ctl start: "
        + ", ".join(f"{kind} {seconds * 1000:.0f} ms" for kind, seconds in back.items())
        + f"; slowest 503: {max((o.ended - o.started for o in refused), default=0) * 1000:.0f} ms"
    )


def verify_audit(cluster: PostgresProcess, workdir: Path) -> subprocess.CompletedProcess[str]:
    """``authkeep audit verify`` on the cluster's database, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "authkeep", "audit", "verify"],
        env=server_env(env_for(cluster)),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_postgres_crash_gives_clean_503s_then_recovers_without_losing_a_row(
    private_postgres: PostgresProcess, server: Server, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(timeout=15.0) as http:
        user = await account(http, server.url)
    load = Load([server.url], user)
    load.start()
    try:
        await load.wait_for(
            lambda: kinds_with(load.outcomes, succeeded) == set(KINDS), "load answered"
        )
        await asyncio.to_thread(private_postgres.stop)
        down_since = time.monotonic()
        await load.wait_for(
            lambda: all(
                sum(o.kind == kind for o in load.since(down_since)) >= 20 for kind in KINDS
            ),
            "twenty requests of each kind while PostgreSQL is down",
        )
        down_until = time.monotonic()
        await asyncio.to_thread(private_postgres.start)
        back_since = time.monotonic()
        await load.wait_for(
            lambda: kinds_with(load.since(back_since), succeeded) == set(KINDS),
            "every kind of request served again after the restart",
        )
    finally:
        await load.stop()

    outcomes = load.outcomes
    report(load, down_since, down_until, back_since)
    failures = [o for o in outcomes if not succeeded(o)]
    # Never a 500, never a dropped connection: the process itself stayed up and answered.
    assert all(o.status == 503 for o in failures), [
        (o.kind, o.status, o.body) for o in failures if o.status != 503
    ]
    for refused in failures:
        assert json.loads(refused.body) == {"detail": DATABASE_UNAVAILABLE}, refused
        assert refused.retry_after is not None
        assert int(refused.retry_after) >= 1
    # Whatever wrote, or had to read a password hash, while PostgreSQL was away was refused.
    # Authenticated reads may still succeed: the verified user comes from the in-process
    # cache of authkeep.services.authn (the revocation check needs no database).
    during = load.between(down_since, down_until)
    writes = [o for o in during if o.kind in ("register", "login")]
    assert kinds_with(writes, lambda o: o.status == 503) == {"register", "login"}
    assert not any(succeeded(o) for o in writes), [o for o in writes if succeeded(o)]
    reads = {o.status for o in during if o.kind == "read"}
    assert reads
    assert reads <= {200, 503}, reads
    assert server.proc.poll() is None, "authkeep was restarted or died"
    assert "Traceback" not in server.log_tail(100_000)

    # No data lost: every 202 is a committed user with its audit row. Addresses are sealed:
    # the blind index under the server's data key (derived from its secret) finds them.
    created = {o.email for o in outcomes if o.status == 202}
    assert created
    envelope = build_envelope(Settings(env="test", secret_key=TEST_SECRET))
    by_index = {envelope.blind_index(email_key(email)): email for email in created}
    conn = await asyncpg.connect(private_postgres.url("authkeep", driver="postgresql"))
    try:
        found = await conn.fetch(
            "SELECT id, email_key FROM users WHERE email_key = ANY($1::text[])", list(by_index)
        )
        rows = [{"id": r["id"], "email": by_index[r["email_key"]]} for r in found]
        ids = {str(r["id"]) for r in rows}
        audited = {
            r["entity_id"]
            for r in await conn.fetch(
                "SELECT entity_id FROM audit_log WHERE action = 'user.registered' "
                "AND entity_id = ANY($1::text[])",
                list(ids),
            )
        }
    finally:
        await conn.close()
    assert {r["email"] for r in rows} == created
    assert audited == ids
    verified = verify_audit(private_postgres, tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
