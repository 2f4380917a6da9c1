"""``POST /api/v1/auth/introspect`` (RFC 7662), for resource servers holding an API key.
Each test runs on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from authkeep.services.api_keys import new_key
from helpers import authkeep_of, bearer, login, register
from org_helpers import Person, add_member, create_org, sign_up
from session_helpers import claims_of

INTROSPECT = "/api/v1/auth/introspect"
KEYS = "/api/v1/api-keys"
INACTIVE = {"active": False}


async def api_key(http: httpx.AsyncClient, admin: Person, role: str = "viewer") -> str:
    """A new API key of ``admin``'s active organization."""
    created = await http.post(
        KEYS, json={"name": f"{role} resource server", "role": role}, headers=admin.auth
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


async def introspect(http: httpx.AsyncClient, key: str, token: str, **extra: str) -> dict[str, Any]:
    response = await http.post(
        INTROSPECT, data={"token": token, **extra}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    return dict(response.json())


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> tuple[Person, uuid.UUID, str]:
    """Alice, admin of Acme (her active organization), and a viewer API key of Acme."""
    alice = await sign_up(client, "alice@example.com")
    org_id = await create_org(client, alice, "Acme")
    return alice, org_id, await api_key(client, alice)


async def test_a_live_token_of_the_keys_organization_is_active_with_its_claims(
    client: httpx.AsyncClient, acme: tuple[Person, uuid.UUID, str]
) -> None:
    alice, org_id, key = acme
    answer = await introspect(client, key, alice.access, token_type_hint="access_token")
    claims = claims_of(alice.access)
    assert answer == {
        "active": True,
        "token_type": "bearer",
        "sub": str(alice.user_id),
        "username": "alice@example.com",
        "email": "alice@example.com",
        "email_verified": False,
        "iss": claims["iss"],
        "aud": claims["aud"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "jti": claims["jti"],
        "sid": claims["sid"],
        "org_id": str(org_id),
        "role": "admin",
    }
    # Either header carries the key.
    as_bearer = await client.post(INTROSPECT, data={"token": alice.access}, headers=bearer(key))
    assert as_bearer.json() == answer


async def test_the_role_shown_is_the_current_one(
    client: httpx.AsyncClient, acme: tuple[Person, uuid.UUID, str]
) -> None:
    alice, org_id, key = acme
    bob = await sign_up(client, "bob@example.com")
    await add_member(client, alice, org_id, bob, "editor")
    assert (await introspect(client, key, bob.access))["role"] == "editor"
    demoted = await client.patch(
        f"/api/v1/orgs/{org_id}/members/{bob.user_id}", json={"role": "viewer"}, headers=alice.auth
    )
    assert demoted.status_code == 200, demoted.text
    # The same token, whose role claim still says editor.
    assert claims_of(bob.access)["role"] == "editor"
    assert (await introspect(client, key, bob.access))["role"] == "viewer"


async def test_a_revoked_session_is_inactive_at_once(
    client: httpx.AsyncClient, acme: tuple[Person, uuid.UUID, str]
) -> None:
    alice, _org_id, key = acme
    assert (await introspect(client, key, alice.access))["active"] is True
    logout = await client.post("/api/v1/auth/logout", headers=alice.auth)
    assert logout.status_code == 204
    assert await introspect(client, key, alice.access) == INACTIVE


async def test_anything_else_is_inactive_and_says_nothing_more(
    client: httpx.AsyncClient, app: FastAPI, acme: tuple[Person, uuid.UUID, str]
) -> None:
    alice, _org_id, key = acme
    # Another tenant's live token, and a token without any organization.
    bob = await sign_up(client, "bob@example.com")
    await create_org(client, bob, "Bobco")
    await register(client, "carol@example.com")
    carol = await login(client, "carol@example.com")
    codec = authkeep_of(app).services.codec
    expired = codec.issue_access(
        user_id=str(alice.user_id),
        email=alice.email,
        session_id=claims_of(alice.access)["sid"],
        org_id=claims_of(alice.access)["org_id"],
        role="admin",
        now=datetime.now(UTC) - timedelta(hours=2),
    ).token
    for token in (
        bob.access,
        carol["access_token"],
        alice.refresh,  # a resource server never holds a refresh token
        expired,
        alice.access[:-4] + "AAAA",
        "junk",
        key,
    ):
        assert await introspect(client, key, token) == INACTIVE


async def test_only_a_valid_api_key_may_introspect(
    client: httpx.AsyncClient, acme: tuple[Person, uuid.UUID, str]
) -> None:
    alice, _org_id, key = acme
    revoked = await api_key(client, alice)
    listed = (await client.get(KEYS, headers=alice.auth)).json()
    revoked_id = next(k["id"] for k in listed if revoked.startswith(f"ak_{k['prefix']}_"))
    assert (await client.delete(f"{KEYS}/{revoked_id}", headers=alice.auth)).status_code == 204
    forged, _prefix = new_key()
    for headers in (
        {},
        bearer(alice.access),  # a user's session is no client credential
        {"X-API-Key": forged},
        {"X-API-Key": revoked},
        {"X-API-Key": key, **bearer(key)},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ):
        response = await client.post(INTROSPECT, data={"token": alice.access}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        assert body["error"] == "invalid_client"
        assert "active" not in body
        assert key not in response.text
        assert alice.access not in response.text


async def test_a_missing_token_is_invalid_request(
    client: httpx.AsyncClient, acme: tuple[Person, uuid.UUID, str]
) -> None:
    _alice, _org_id, key = acme
    response = await client.post(INTROSPECT, data={}, headers={"X-API-Key": key})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
