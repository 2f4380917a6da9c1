"""Rotating ``AUTHKEEP_SECRET_KEY`` across two ``authkeep serve`` processes (PostgreSQL +
Redis), restarted with the rotated settings as a rolling deploy would: tokens and API keys
issued before the rotation keep working on both, new tokens carry the new kid, and once the
previous secret is removed its tokens are refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from authkeep.security.key_ring import kid_of
from conftest import TEST_SECRET, pg_async_url
from helpers import PASSWORD, bearer
from servers import Server, fresh_pg_database, start_server, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

NEW_SECRET = "rotated-" + "Qw3rTy7uIoP1aSdF9gHjKlZx5cVbNm2" * 2


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_pg_database("authkeep_rot") as name:
        yield name


def _start(env: dict[str, str], workdir: Path, tag: str) -> tuple[Server, Server]:
    servers = [start_server(env, workdir, f"{tag}-{name}") for name in ("a", "b")]
    try:
        for server in servers:
            wait_healthy(server)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers[0], servers[1]


def _stop(servers: tuple[Server, Server]) -> None:
    for server in servers:
        server.stop()


def _login(base: str, email: str) -> dict[str, str]:
    response = httpx.post(
        base + "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _key_authenticates(base: str, key: str) -> bool:
    """authkeep's own routes are for people: a valid key gets 403 there, a wrong one 401."""
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    statuses = [
        httpx.get(base + "/api/v1/orgs", headers={"X-API-Key": k}, timeout=30).status_code
        for k in (key, tampered)
    ]
    assert statuses[1] == 401
    return statuses[0] == 403


def _me(base: str, token: str) -> int:
    return httpx.get(base + "/api/v1/auth/me", headers=bearer(token), timeout=30).status_code


def test_rotation_keeps_tokens_and_api_keys_working_on_every_worker(
    database: str, redis_available: str, tmp_path: Path
) -> None:
    base_env = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_DATABASE_URL": pg_async_url(database),
        "AUTHKEEP_REDIS_URL": redis_available,
        "AUTHKEEP_REDIS_PREFIX": f"authkeep-rot:{uuid.uuid4().hex[:12]}:",
        "AUTHKEEP_HASH_WORKERS": "1",
        "AUTHKEEP_ARGON2_MEMORY_KIB": "8192",
        "AUTHKEEP_ARGON2_TIME_COST": "1",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
    }
    email = "rotor@example.com"

    # Before: the old secret alone.
    servers = _start({**base_env, "AUTHKEEP_SECRET_KEY": TEST_SECRET}, tmp_path, "old")
    try:
        a, b = servers
        registered = httpx.post(
            a.url + "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD},
            timeout=30,
        )
        assert registered.status_code in (201, 202), registered.text
        old = _login(a.url, email)
        assert jwt.get_unverified_header(old["access_token"])["kid"] == kid_of(TEST_SECRET)
        org = httpx.post(
            b.url + "/api/v1/orgs",
            json={"name": "Rotors"},
            headers=bearer(old["access_token"]),
            timeout=30,
        )
        assert org.status_code == 201, org.text
        org_id = org.json()["id"]
        switched = httpx.post(
            b.url + "/api/v1/auth/switch-org",
            json={"org_id": org_id},
            headers=bearer(old["access_token"]),
            timeout=30,
        )
        assert switched.status_code == 200, switched.text
        created = httpx.post(
            a.url + "/api/v1/api-keys",
            json={"name": "bot", "role": "viewer"},
            headers=bearer(switched.json()["access_token"]),
            timeout=30,
        )
        assert created.status_code == 201, created.text
        api_key = created.json()["key"]
        assert _key_authenticates(a.url, api_key)
    finally:
        _stop(servers)

    # Rotated: the new secret signs, the old one still verifies, on both workers.
    rotated_env = {
        **base_env,
        "AUTHKEEP_SECRET_KEY": NEW_SECRET,
        "AUTHKEEP_PREVIOUS_SECRET_KEYS": TEST_SECRET,
    }
    servers = _start(rotated_env, tmp_path, "rotated")
    try:
        a, b = servers
        for server in servers:
            assert _me(server.url, old["access_token"]) == 200
            assert _key_authenticates(server.url, api_key)
        refreshed = httpx.post(
            b.url + "/api/v1/auth/refresh",
            json={"refresh_token": old["refresh_token"]},
            timeout=30,
        )
        assert refreshed.status_code == 200, refreshed.text
        new = _login(b.url, email)
        for token in (refreshed.json()["access_token"], new["access_token"]):
            assert jwt.get_unverified_header(token)["kid"] == kid_of(NEW_SECRET)
            assert _me(a.url, token) == 200
    finally:
        _stop(servers)

    # The previous secret removed (after the longest token lifetime): its tokens are refused.
    servers = _start({**base_env, "AUTHKEEP_SECRET_KEY": NEW_SECRET}, tmp_path, "removed")
    try:
        for server in servers:
            assert _me(server.url, old["access_token"]) == 401
            assert _me(server.url, new["access_token"]) == 200
            assert _key_authenticates(server.url, api_key)
    finally:
        _stop(servers)
