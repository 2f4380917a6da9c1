"""The idle timeout beside the absolute session lifetime (issue 12, defect 3): each refresh
token lives until the idle timeout from its issue, never past the session's absolute end, and
both limits are enforced by the server on refresh and shown in the sessions list. The clock
is moved with time-machine; each test runs on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import time_machine

from authkeep import Settings
from helpers import bearer, login, register
from org_helpers import create_org, sign_up, switch
from session_helpers import SESSIONS, claims_of, refresh, sid_of, started

START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
IDLE = timedelta(days=7)
LIFETIME = timedelta(days=14)


def when(value: str) -> datetime:
    """A datetime of a JSON body."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def exp_of(pair: dict[str, Any]) -> datetime:
    """When the refresh token of ``pair`` expires, by its own claim."""
    return datetime.fromtimestamp(claims_of(pair["refresh_token"])["exp"], UTC)


async def listed(http: httpx.AsyncClient, pair: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The caller's sessions by id, as ``GET /sessions`` shows them."""
    response = await http.get(SESSIONS, headers=bearer(pair["access_token"]))
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()}


async def test_refresh_before_idle_expiry_works_and_pushes_it_forward(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (_, http):
            await register(http)
            pair = await login(http)
            assert exp_of(pair) == START + IDLE
            session = (await listed(http, pair))[str(sid_of(pair))]
            assert when(session["idle_expires_at"]) == START + IDLE
            assert when(session["expires_at"]) == START + LIFETIME

            clock.shift(IDLE - timedelta(minutes=1))
            first = await refresh(http, pair["refresh_token"])

            assert first.status_code == 200, first.text
            now = START + IDLE - timedelta(minutes=1)
            assert exp_of(first.json()) == now + IDLE
            session = (await listed(http, first.json()))[str(sid_of(pair))]
            assert when(session["idle_expires_at"]) == now + IDLE
            assert when(session["expires_at"]) == START + LIFETIME
            # Past the first idle deadline, but the refresh moved it: the session lives on.
            clock.shift(IDLE - timedelta(minutes=1))
            second = await refresh(http, first.json()["refresh_token"])
            assert second.status_code == 200, second.text


async def test_refresh_after_idle_expiry_fails_and_the_session_is_no_longer_listed(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (_, http):
            await register(http)
            abandoned = await login(http)

            clock.shift(IDLE + timedelta(seconds=1))
            response = await refresh(http, abandoned["refresh_token"])

            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            # Well inside the absolute lifetime, yet over: not among the live sessions.
            fresh = await login(http)
            assert set(await listed(http, fresh)) == {str(sid_of(fresh))}


async def test_idle_timeout_is_enforced_by_the_server_not_only_by_the_token_exp(
    make_settings: Callable[..., Settings],
) -> None:
    # A token issued while the idle timeout was the whole lifetime carries a 14-day exp; once
    # the operator lowers the timeout, an idle session must end anyway.
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings(session_idle_timeout=LIFETIME)) as (_, http):
            await register(http)
            pair = await login(http)
        assert exp_of(pair) == START + LIFETIME

        clock.shift(timedelta(days=2))
        async with started(make_settings(session_idle_timeout=timedelta(days=1))) as (_, http):
            response = await refresh(http, pair["refresh_token"])

            assert response.status_code == 401


async def test_absolute_lifetime_ends_a_regularly_refreshed_session(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (_, http):
            await register(http)
            pair = await login(http)
            for _ in range(4):  # days 3, 6, 9 and 12: never idle for long
                clock.shift(timedelta(days=3))
                response = await refresh(http, pair["refresh_token"])
                assert response.status_code == 200, response.text
                pair = response.json()
            # Refreshed on day 12, the token still stops at the absolute end, not on day 19.
            assert exp_of(pair) == START + LIFETIME
            session = (await listed(http, pair))[str(sid_of(pair))]
            assert when(session["idle_expires_at"]) == START + LIFETIME

            clock.move_to(START + LIFETIME - timedelta(minutes=1))
            last = await refresh(http, pair["refresh_token"])
            assert last.status_code == 200, last.text
            assert exp_of(last.json()) == START + LIFETIME

            clock.shift(timedelta(minutes=2))
            response = await refresh(http, last.json()["refresh_token"])
            assert response.status_code == 401


async def test_switching_organization_does_not_keep_an_idle_session_alive(
    make_settings: Callable[..., Settings],
) -> None:
    # Each switch mints a fresh access token: switching every 25 minutes would otherwise
    # keep a session going with no refresh at all, past its idle timeout (and its end).
    settings = make_settings(session_idle_timeout=timedelta(hours=1))
    with time_machine.travel(START, tick=False) as clock:
        async with started(settings) as (_, http):
            alice = await sign_up(http, "alice@example.com")
            org = await create_org(http, alice)
            clock.shift(timedelta(minutes=25))
            assert (await switch(http, alice, org)).status_code == 200
            clock.shift(timedelta(minutes=25))
            assert (await switch(http, alice, org)).status_code == 200

            clock.shift(timedelta(minutes=25))  # 75 minutes without a refresh
            response = await switch(http, alice, org)

            assert response.status_code == 401
