"""Two ``authkeep serve`` processes sharing a fresh PostgreSQL database and Redis, as two
hosts behind a load balancer would: what one revokes, the other rejects on its next request;
and 50 simultaneous refreshes of one token spread over both give one successor."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from authkeep.security.configured import build_envelope
from authkeep.security.emails import email_key
from authkeep.settings import Settings
from conftest import PG_ADMIN_URL, TEST_SECRET, pg_async_url
from helpers import PASSWORD, bearer
from servers import Server, fresh_pg_database, start_server, wait_healthy
from session_helpers import claims_of

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    """A PostgreSQL database of this test alone, empty (the servers migrate it)."""
    with fresh_pg_database("authkeep_mp") as name:
        yield name


@pytest.fixture(scope="module")
def workers(
    fresh_database: str, redis_available: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    """Two workers started at the same moment on the same empty database: both migrate at
    once, which must not crash either of them. Shared by this module's tests (each uses its
    own user): starting processes is the slow part."""
    tmp_path = tmp_path_factory.mktemp("workers")
    env = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": pg_async_url(fresh_database),
        "AUTHKEEP_REDIS_URL": redis_available,
        "AUTHKEEP_REDIS_PREFIX": f"authkeep-mp:{uuid.uuid4().hex[:12]}:",
        "AUTHKEEP_HASH_WORKERS": "1",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
    }
    started = [start_server(env, tmp_path, name) for name in ("a", "b")]
    try:
        for server in started:
            wait_healthy(server)
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


async def register(http: httpx.AsyncClient, base: str, email: str) -> None:
    response = await http.post(
        f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 202, response.text


async def login(http: httpx.AsyncClient, base: str, email: str) -> dict[str, str]:
    response = await http.post(
        f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_logout_on_one_worker_is_401_on_the_other_at_once(
    workers: tuple[Server, Server],
) -> None:
    a, b = workers
    async with httpx.AsyncClient(timeout=30) as http:
        await register(http, a.url, "alice@example.com")
        pair = await login(http, a.url, "alice@example.com")
        assert (
            await http.get(f"{b.url}/api/v1/auth/me", headers=bearer(pair["access_token"]))
        ).status_code == 200

        logout = await http.post(
            f"{a.url}/api/v1/auth/logout", headers=bearer(pair["access_token"])
        )
        assert logout.status_code == 204

        # The very next request, on the other process.
        assert (
            await http.get(f"{b.url}/api/v1/auth/me", headers=bearer(pair["access_token"]))
        ).status_code == 401
        refreshed = await http.post(
            f"{b.url}/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert refreshed.status_code == 401

        # And the other way round, for every session at once.
        first = await login(http, b.url, "alice@example.com")
        second = await login(http, a.url, "alice@example.com")
        assert (
            await http.post(
                f"{b.url}/api/v1/auth/logout-all", headers=bearer(first["access_token"])
            )
        ).status_code == 204
        for tokens in (first, second):
            response = await http.get(
                f"{a.url}/api/v1/auth/me", headers=bearer(tokens["access_token"])
            )
            assert response.status_code == 401


async def test_an_account_deleted_through_one_worker_is_401_on_the_other_at_once(
    workers: tuple[Server, Server],
) -> None:
    # Deletion locks the account and revokes its sessions in Redis: the other process,
    # which verified (and cached) these tokens a moment ago, refuses them on the next
    # request, and refuses the sign-in like a wrong password.
    a, b = workers
    async with httpx.AsyncClient(timeout=30) as http:
        await register(http, a.url, "leaving@example.com")
        first = await login(http, a.url, "leaving@example.com")
        second = await login(http, b.url, "leaving@example.com")
        for tokens in (first, second):
            for server in (a, b):
                me = await http.get(
                    f"{server.url}/api/v1/auth/me", headers=bearer(tokens["access_token"])
                )
                assert me.status_code == 200

        deleted = await http.request(
            "DELETE",
            f"{a.url}/api/v1/auth/me",
            json={"password": PASSWORD},
            headers=bearer(first["access_token"]),
        )
        assert deleted.status_code == 202, deleted.text

        for tokens in (first, second):
            me = await http.get(f"{b.url}/api/v1/auth/me", headers=bearer(tokens["access_token"]))
            assert me.status_code == 401
            refreshed = await http.post(
                f"{b.url}/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
            assert refreshed.status_code == 401
        refused = await http.post(
            f"{b.url}/api/v1/auth/login",
            json={"email": "leaving@example.com", "password": PASSWORD},
        )
        assert (refused.status_code, refused.json()) == (
            401,
            {"detail": "Incorrect email or password"},
        )


async def test_fifty_simultaneous_refreshes_across_two_workers(
    workers: tuple[Server, Server], fresh_database: str
) -> None:
    a, b = workers
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as http:
        await register(http, b.url, "bob@example.com")
        pair = await login(http, b.url, "bob@example.com")

        responses = await asyncio.gather(
            *(
                http.post(
                    f"{(a, b)[i % 2].url}/api/v1/auth/refresh",
                    json={"refresh_token": pair["refresh_token"]},
                )
                for i in range(50)
            )
        )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 50, {r.status_code: r.text[:200] for r in responses}
    successors = {r.json()["refresh_token"] for r in responses}
    assert len(successors) == 1
    (successor,) = successors

    conn = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + fresh_database)
    try:
        stored = await conn.fetch(
            "SELECT jti, token_hash, spent_at, successor_jti, revoked_at FROM refresh_tokens "
            "WHERE session_id = $1",
            uuid.UUID(claims_of(pair["access_token"])["sid"]),
        )
    finally:
        await conn.close()
    by_hash = {row["token_hash"]: row for row in stored}
    original = by_hash[hashlib.sha256(pair["refresh_token"].encode()).hexdigest()]
    live = [row for row in stored if row["spent_at"] is None and row["revoked_at"] is None]
    assert len(stored) == 2
    assert [row["jti"] for row in live] == [claims_of(successor)["jti"]]
    assert live[0]["token_hash"] == hashlib.sha256(successor.encode()).hexdigest()
    assert original["successor_jti"] == live[0]["jti"]


async def mark_verified(database: str, email: str) -> None:
    """Record the address as proven, as its verification link would (a DBA's write)."""
    # email_key is the keyed blind index: the workers' data key (derived from the secret
    # under test) makes it.
    envelope = build_envelope(Settings(env="test", secret_key=TEST_SECRET))
    index = envelope.blind_index(email_key(email))
    conn = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database)
    try:
        await conn.execute("UPDATE users SET email_verified_at = now() WHERE email_key = $1", index)
    finally:
        await conn.close()


async def test_a_demotion_through_one_worker_applies_on_the_other_at_once(
    workers: tuple[Server, Server], fresh_database: str
) -> None:
    # Each worker keeps users and roles in memory; the change counter in Redis is what
    # tells worker b that worker a changed this member.
    a, b = workers
    async with httpx.AsyncClient(timeout=30) as http:
        for email in ("owner@example.com", "deputy@example.com"):
            await register(http, a.url, email)
        owner = await login(http, a.url, "owner@example.com")
        created = await http.post(
            f"{a.url}/api/v1/orgs", json={"name": "Acme"}, headers=bearer(owner["access_token"])
        )
        assert created.status_code == 201, created.text
        org_id = created.json()["id"]
        invited = await http.post(
            f"{a.url}/api/v1/orgs/{org_id}/invitations",
            json={"email": "deputy@example.com", "role": "admin"},
            headers=bearer(owner["access_token"]),
        )
        assert invited.status_code == 202, invited.text
        # The deputy joins by accepting, through the other worker.
        await mark_verified(fresh_database, "deputy@example.com")
        deputy = await login(http, b.url, "deputy@example.com")
        mine = await http.get(
            f"{b.url}/api/v1/auth/invitations", headers=bearer(deputy["access_token"])
        )
        [invitation] = mine.json()
        added = await http.post(
            f"{b.url}/api/v1/auth/invitations/accept",
            json={"invitation_id": invitation["id"]},
            headers=bearer(deputy["access_token"]),
        )
        assert added.status_code == 200, added.text
        switched = await http.post(
            f"{b.url}/api/v1/auth/switch-org",
            json={"org_id": org_id},
            headers=bearer(deputy["access_token"]),
        )
        assert switched.status_code == 200, switched.text
        token = switched.json()["access_token"]
        # A route whose role check is the request's principal (require_role), not a fresh
        # query of its own. Twice, to warm worker b's cache: the deputy is an admin there.
        keys = f"{b.url}/api/v1/api-keys"
        for _ in range(2):
            response = await http.get(keys, headers=bearer(token))
            assert response.status_code == 200, response.text

        demoted = await http.patch(
            f"{a.url}/api/v1/orgs/{org_id}/members/{added.json()['user_id']}",
            json={"role": "viewer"},
            headers=bearer(owner["access_token"]),
        )
        assert demoted.status_code == 200, demoted.text

        refused = await http.get(keys, headers=bearer(token))
        assert refused.status_code == 403, refused.text
