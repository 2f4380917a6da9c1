"""``POST /api/v1/auth/revoke`` (RFC 7009). Each test runs on SQLite and on PostgreSQL + Redis
(where the revocation reaches every worker through the shared store)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from audit_helpers import app_rows
from helpers import bearer, login, missing_security_headers, register
from session_helpers import claims_of

REVOKE = "/api/v1/auth/revoke"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"


async def assert_session_ended(http: httpx.AsyncClient, pair: dict[str, str]) -> None:
    assert (await http.get(ME, headers=bearer(pair["access_token"]))).status_code == 401
    refreshed = await http.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401


async def test_revoking_a_refresh_token_ends_its_session_at_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    pair, other = await login(client), await login(client)
    response = await client.post(
        REVOKE, data={"token": pair["refresh_token"], "token_type_hint": "refresh_token"}
    )
    assert response.status_code == 200
    assert response.headers["pragma"] == "no-cache"
    assert missing_security_headers(response) == []
    await assert_session_ended(client, pair)
    # Only that session: the user's other one goes on.
    assert (await client.get(ME, headers=bearer(other["access_token"]))).status_code == 200
    (event,) = await app_rows(app, "session.ended")
    assert event.entity_id == claims_of(pair["access_token"])["sid"]
    assert event.details == {"reason": "token_revoked", "sessions_ended": 1}


async def test_revoking_an_access_token_ends_its_session(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    response = await client.post(REVOKE, data={"token": pair["access_token"]})
    assert response.status_code == 200
    await assert_session_ended(client, pair)


async def test_a_wrong_or_unknown_hint_still_finds_the_token(client: httpx.AsyncClient) -> None:
    await register(client)
    first, second = await login(client), await login(client)
    wrong = await client.post(
        REVOKE, data={"token": first["access_token"], "token_type_hint": "refresh_token"}
    )
    unknown = await client.post(
        REVOKE, data={"token": second["refresh_token"], "token_type_hint": "id_token"}
    )
    assert wrong.status_code == unknown.status_code == 200
    await assert_session_ended(client, first)
    await assert_session_ended(client, second)


async def test_invalid_tokens_get_200_and_end_nothing(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    forged = pair["refresh_token"][:-3] + "abc"
    for token in ("junk", forged, "ak_abcdefghijkl_" + "x" * 43, pair["refresh_token"] + "."):
        response = await client.post(REVOKE, data={"token": token})
        assert response.status_code == 200, token
        assert response.json() == {}
    assert (await client.get(ME, headers=bearer(pair["access_token"]))).status_code == 200
    # Revoking twice is no error either (RFC 7009 §2.2).
    for _ in range(2):
        assert (await client.post(REVOKE, data={"token": pair["refresh_token"]})).status_code == 200


async def test_a_missing_token_is_invalid_request(client: httpx.AsyncClient) -> None:
    for data in ({}, {"token": ""}, {"token_type_hint": "refresh_token"}):
        response = await client.post(REVOKE, data=data)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
        assert response.headers["cache-control"] == "no-store"
    as_json = await client.post(REVOKE, json={"token": "x"})
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
