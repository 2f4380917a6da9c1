"""Ending sessions over HTTP: logout, logout-all, password change, deactivation and deletion
take effect on the very next request, for access and refresh tokens alike. Each test runs on
SQLite (in-process revocations) and on PostgreSQL + Redis."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from helpers import PASSWORD, bearer, login, register
from session_helpers import (
    LOGOUT,
    LOGOUT_ALL,
    claims_of,
    me,
    refresh,
    rows,
    services,
    session_id_param,
    user_id_of,
)
from session_helpers import PASSWORD as PASSWORD_ROUTE

NEW_PASSWORD = "a different horse, staple battery"


async def test_logout_kills_access_and_refresh_token_at_once(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    other = await login(client)
    assert (await me(client, pair["access_token"])).status_code == 200

    response = await client.post(LOGOUT, headers=bearer(pair["access_token"]))

    assert response.status_code == 204
    assert (await me(client, pair["access_token"])).status_code == 401
    assert (await refresh(client, pair["refresh_token"])).status_code == 401
    # A second logout with the dead token is a 401, not a crash.
    assert (await client.post(LOGOUT, headers=bearer(pair["access_token"]))).status_code == 401
    # Only that session ended.
    assert (await me(client, other["access_token"])).status_code == 200
    assert (await refresh(client, other["refresh_token"])).status_code == 200


async def test_logout_also_ends_tokens_refreshed_from_the_session(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    pair = await login(client)
    rotated = (await refresh(client, pair["refresh_token"])).json()

    assert (await client.post(LOGOUT, headers=bearer(pair["access_token"]))).status_code == 204

    assert (await me(client, rotated["access_token"])).status_code == 401
    assert (await refresh(client, rotated["refresh_token"])).status_code == 401


async def test_logout_all_ends_every_session(client: httpx.AsyncClient) -> None:
    await register(client)
    await register(client, "bob@example.com")
    pairs = [await login(client) for _ in range(3)]
    bob = await login(client, "bob@example.com")

    response = await client.post(LOGOUT_ALL, headers=bearer(pairs[1]["access_token"]))

    assert response.status_code == 204
    for pair in pairs:
        assert (await me(client, pair["access_token"])).status_code == 401
        assert (await refresh(client, pair["refresh_token"])).status_code == 401
    assert (await me(client, bob["access_token"])).status_code == 200
    # Logging in again starts afresh.
    assert (await me(client, (await login(client))["access_token"])).status_code == 200


async def test_password_change_ends_every_other_session(client: httpx.AsyncClient) -> None:
    await register(client)
    current = await login(client)
    others = [await login(client) for _ in range(2)]

    response = await client.post(
        PASSWORD_ROUTE,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )

    assert response.status_code == 204
    for pair in others:
        assert (await me(client, pair["access_token"])).status_code == 401
        assert (await refresh(client, pair["refresh_token"])).status_code == 401
    assert (await me(client, current["access_token"])).status_code == 200
    assert (await refresh(client, current["refresh_token"])).status_code == 200
    old = await client.post(
        "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert old.status_code == 401
    assert (
        await me(client, (await login(client, password=NEW_PASSWORD))["access_token"])
    ).is_success


async def test_wrong_current_password_ends_nothing(client: httpx.AsyncClient) -> None:
    await register(client)
    current = await login(client)
    other = await login(client)

    response = await client.post(
        PASSWORD_ROUTE,
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )

    assert response.status_code == 422
    assert (await me(client, other["access_token"])).status_code == 200


async def test_deactivated_user_tokens_die_at_once(client: httpx.AsyncClient, app: FastAPI) -> None:
    await register(client)
    pairs = [await login(client) for _ in range(2)]
    accounts = services(app).accounts

    await accounts.set_active(user_id_of(pairs[0]), False)

    for pair in pairs:
        assert (await me(client, pair["access_token"])).status_code == 401
        assert (await refresh(client, pair["refresh_token"])).status_code == 401
    assert (
        await client.post(
            "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
    ).status_code == 401
    # Reactivation does not resurrect the old sessions; a new login works.
    await accounts.set_active(user_id_of(pairs[0]), True)
    for pair in pairs:
        assert (await me(client, pair["access_token"])).status_code == 401
        assert (await refresh(client, pair["refresh_token"])).status_code == 401
    assert (await me(client, (await login(client))["access_token"])).status_code == 200


async def test_deleted_user_tokens_die_at_once(client: httpx.AsyncClient, app: FastAPI) -> None:
    await register(client)
    pair = await login(client)

    await services(app).accounts.soft_delete(user_id_of(pair))

    assert (await me(client, pair["access_token"])).status_code == 401
    assert (await refresh(client, pair["refresh_token"])).status_code == 401
    reasons = await rows(
        app,
        "SELECT revoked_reason FROM auth_sessions WHERE id = :sid",
        sid=session_id_param(app, claims_of(pair["access_token"])["sid"]),
    )
    assert reasons == [{"revoked_reason": "deleted"}]
