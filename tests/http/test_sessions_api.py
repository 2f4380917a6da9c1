"""``GET /api/v1/auth/sessions`` and ``DELETE /api/v1/auth/sessions/{id}`` on both backends."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from authkeep.services.context import USER_AGENT_MAX
from helpers import PASSWORD, bearer, client_for, login, register
from session_helpers import SESSIONS, claims_of, me, refresh


async def test_sessions_lists_live_sessions_and_marks_the_current(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    long_agent = "Mozilla/5.0 " + "x" * 1000
    first = (
        await client.post(
            "/api/v1/auth/login",
            json={"email": "alice@example.com", "password": PASSWORD},
            headers={"User-Agent": long_agent},
        )
    ).json()
    async with client_for(app, peer=("198.51.100.9", 5000)) as elsewhere:
        second = await login(elsewhere)
    ended = await login(client)
    await client.post("/api/v1/auth/logout", headers=bearer(ended["access_token"]))

    response = await client.get(SESSIONS, headers=bearer(first["access_token"]))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    listed = {item["id"]: item for item in response.json()}
    first_sid = claims_of(first["access_token"])["sid"]
    second_sid = claims_of(second["access_token"])["sid"]
    assert set(listed) == {first_sid, second_sid}
    assert listed[first_sid]["current"] is True
    assert listed[second_sid]["current"] is False
    assert listed[first_sid]["user_agent"] == long_agent[:USER_AGENT_MAX]
    assert listed[first_sid]["ip"] == "203.0.113.7"
    assert listed[second_sid]["ip"] == "198.51.100.9"
    assert set(listed[first_sid]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "idle_expires_at",
        "ip",
        "user_agent",
        "current",
    }
    # From the other session's point of view, it is the current one.
    mirrored = await client.get(SESSIONS, headers=bearer(second["access_token"]))
    assert {item["id"] for item in mirrored.json() if item["current"]} == {second_sid}


async def test_refresh_updates_last_used(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    before = (await client.get(SESSIONS, headers=bearer(pair["access_token"]))).json()[0]

    rotated = (await refresh(client, pair["refresh_token"])).json()

    after = (await client.get(SESSIONS, headers=bearer(rotated["access_token"]))).json()
    assert [item["id"] for item in after] == [before["id"]]
    assert after[0]["last_used_at"] >= before["last_used_at"]
    assert after[0]["created_at"] == before["created_at"]


async def test_delete_session_ends_that_one_only(client: httpx.AsyncClient) -> None:
    await register(client)
    current = await login(client)
    other = await login(client)
    other_sid = claims_of(other["access_token"])["sid"]

    response = await client.delete(
        f"{SESSIONS}/{other_sid}", headers=bearer(current["access_token"])
    )

    assert response.status_code == 204
    assert (await me(client, other["access_token"])).status_code == 401
    assert (await refresh(client, other["refresh_token"])).status_code == 401
    assert (await me(client, current["access_token"])).status_code == 200
    listed = (await client.get(SESSIONS, headers=bearer(current["access_token"]))).json()
    assert [item["id"] for item in listed] == [claims_of(current["access_token"])["sid"]]
    # Ending it twice: it is no longer a live session.
    again = await client.delete(f"{SESSIONS}/{other_sid}", headers=bearer(current["access_token"]))
    assert again.status_code == 404


async def test_delete_current_session_is_a_logout(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    sid = claims_of(pair["access_token"])["sid"]

    response = await client.delete(f"{SESSIONS}/{sid}", headers=bearer(pair["access_token"]))

    assert response.status_code == 204
    assert (await me(client, pair["access_token"])).status_code == 401


async def test_delete_someone_elses_or_unknown_session_is_404(client: httpx.AsyncClient) -> None:
    await register(client)
    await register(client, "mallory@example.com")
    alice = await login(client)
    mallory = await login(client, "mallory@example.com")
    alice_sid = claims_of(alice["access_token"])["sid"]

    for target in (alice_sid, str(uuid.uuid4())):
        response = await client.delete(
            f"{SESSIONS}/{target}", headers=bearer(mallory["access_token"])
        )
        assert response.status_code == 404
        assert response.json() == {"detail": "Session not found"}
    # Alice's session is untouched.
    assert (await me(client, alice["access_token"])).status_code == 200
    malformed = await client.delete(f"{SESSIONS}/not-a-uuid", headers=bearer(alice["access_token"]))
    assert malformed.status_code == 422


async def test_sessions_routes_need_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get(SESSIONS)).status_code == 401
    assert (await client.delete(f"{SESSIONS}/{uuid.uuid4()}")).status_code == 401
