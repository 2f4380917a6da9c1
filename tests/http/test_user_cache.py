"""The authenticator keeps users in memory between requests; a change to a user's status or
role must still apply on the very next request (see authkeep.services.authn)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import httpx
from fastapi import FastAPI

from helpers import bearer, login, register


async def test_status_change_reaches_a_cached_user_even_if_no_session_was_revoked(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    services = app.state.authkeep.services
    user = await register(client)
    token = (await login(client))["access_token"]
    for _ in range(2):  # cached from the second request on (see the test below)
        assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200

    # Deactivation also ends every session; silence that, so that only the cache
    # invalidation stands between the stale cached user and the next request.
    async def lost(_session_ids: Iterable[uuid.UUID]) -> None:
        return None

    services.accounts._publish = lost
    await services.accounts.set_active(uuid.UUID(user["id"]), False)

    assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 401


async def test_repeated_reads_are_served_from_memory(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    # The hot path makes no database round trip once the user is cached: with the database
    # gone, a cached user still authenticates (the revocation store still answers).
    services = app.state.authkeep.services
    await register(client)
    token = (await login(client))["access_token"]
    # Twice: on Redis the very first check after start resynchronises, and nothing is cached
    # from a request whose freshness nobody could vouch for.
    for _ in range(2):
        assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200

    class Gone:
        def reading(self) -> None:
            raise AssertionError("the database was read on a cached request")

    real, services.authenticator._db = services.authenticator._db, Gone()
    try:
        for _ in range(3):
            response = await client.get("/api/v1/auth/me", headers=bearer(token))
            assert response.status_code == 200
    finally:
        services.authenticator._db = real
