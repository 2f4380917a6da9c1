"""The refresh grace window, narrowed (issue 12, defect 4): a spent refresh token replayed
inside the window gets its successor back only while that successor is unused and only for
the User-Agent of the rotation; anything else is theft (session revoked, audited). Each test
runs on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from audit_helpers import app_rows
from authkeep import Settings
from authkeep.services.audit import Action
from helpers import client_for, login, register
from session_helpers import REFRESH, claims_of, family, me, set_token, started

APP = "ExampleApp/3.1 (iPhone; iOS 17.4)"
OTHER = "curl/8.5.0"


async def refresh_as(http: httpx.AsyncClient, token: str, agent: str) -> httpx.Response:
    """POST /refresh with ``token`` from a client announcing itself as ``agent``."""
    return await http.post(REFRESH, json={"refresh_token": token}, headers={"User-Agent": agent})


async def assert_theft(
    app: FastAPI, http: httpx.AsyncClient, pair: dict[str, Any], successor: str, reason: str
) -> None:
    """The session of ``pair`` is revoked whole, and one theft was audited for ``reason``."""
    assert (await refresh_as(http, successor, APP)).status_code == 401
    assert (await me(http, pair["access_token"])).status_code == 401
    stored = await family(app, claims_of(pair["access_token"])["sid"])
    assert stored
    assert all(row["revoked_at"] is not None for row in stored)
    (event,) = await app_rows(app, Action.REFRESH_REUSE)
    assert event.outcome == "failure"
    assert event.entity_id == claims_of(pair["access_token"])["sid"]
    assert event.details == {"sessions_revoked": 1, "reason": reason}


async def test_a_genuine_retry_gets_the_same_pair_even_from_another_network(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client)
    pair = await login(client)
    first = await refresh_as(client, pair["refresh_token"], APP)

    # The response was lost; the phone retries from another network (a new IP address).
    async with client_for(app, peer=("198.51.100.23", 41000)) as roaming:
        retry = await refresh_as(roaming, pair["refresh_token"], APP)

    assert first.status_code == retry.status_code == 200
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert (await refresh_as(client, retry.json()["refresh_token"], APP)).status_code == 200
    assert await app_rows(app, Action.REFRESH_REUSE) == []


async def test_replay_from_another_user_agent_inside_the_window_is_theft(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client)
    pair = await login(client)
    rotated = await refresh_as(client, pair["refresh_token"], APP)
    assert rotated.status_code == 200

    replay = await refresh_as(client, pair["refresh_token"], OTHER)

    assert replay.status_code == 401
    assert replay.headers["www-authenticate"] == "Bearer"
    assert rotated.json()["refresh_token"] not in replay.text
    await assert_theft(app, client, pair, rotated.json()["refresh_token"], "user_agent_mismatch")


async def test_replay_after_the_successor_was_used_is_theft(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client)
    pair = await login(client)
    successor = (await refresh_as(client, pair["refresh_token"], APP)).json()
    newest = await refresh_as(client, successor["refresh_token"], APP)
    assert newest.status_code == 200

    # Same User-Agent, seconds later: but someone already used the successor.
    replay = await refresh_as(client, pair["refresh_token"], APP)

    assert replay.status_code == 401
    await assert_theft(app, client, pair, newest.json()["refresh_token"], "successor_used")


async def test_replay_after_the_window_is_theft(
    make_settings: Callable[..., Settings],
) -> None:
    async with started(make_settings(refresh_reuse_interval_seconds=0)) as (app, http):
        await register(http)
        pair = await login(http)
        successor = (await refresh_as(http, pair["refresh_token"], APP)).json()

        replay = await refresh_as(http, pair["refresh_token"], APP)

        assert replay.status_code == 401
        await assert_theft(app, http, pair, successor["refresh_token"], "outside_grace_window")


async def test_a_token_rotated_before_the_upgrade_gets_no_grace(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    # Rows spent before migration 0006 record no User-Agent: nothing proves "same client".
    await register(client)
    pair = await login(client)
    successor = (await refresh_as(client, pair["refresh_token"], APP)).json()
    await set_token(app, pair["refresh_token"], rotated_agent_hash=None)

    replay = await refresh_as(client, pair["refresh_token"], APP)

    assert replay.status_code == 401
    await assert_theft(app, client, pair, successor["refresh_token"], "user_agent_mismatch")


async def test_simultaneous_refreshes_from_two_clients_end_the_session(
    make_settings: Callable[..., Settings],
) -> None:
    # One token, presented at once by the app and by something else: whichever wins the
    # rotation, the other's request is theft and the family dies; never two live successors.
    async with started(make_settings(rate_limit_enabled=False)) as (app, http):
        await register(http)
        pair = await login(http)
        agents = [APP, OTHER] * 10

        responses = await asyncio.gather(
            *(refresh_as(http, pair["refresh_token"], agent) for agent in agents)
        )

        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 401}, {r.status_code: r.text for r in responses}
        assert 401 in statuses
        successors = {r.json()["refresh_token"] for r in responses if r.status_code == 200}
        assert len(successors) <= 1
        stored = await family(app, claims_of(pair["access_token"])["sid"])
        assert len(stored) == 2
        assert all(row["revoked_at"] is not None for row in stored)
        for successor in successors:
            assert (await refresh_as(http, successor, APP)).status_code == 401
        assert (await me(http, pair["access_token"])).status_code == 401


async def test_simultaneous_retries_from_one_client_share_one_pair(
    make_settings: Callable[..., Settings],
) -> None:
    async with started(make_settings(rate_limit_enabled=False)) as (app, http):
        await register(http)
        pair = await login(http)

        responses = await asyncio.gather(
            *(refresh_as(http, pair["refresh_token"], APP) for _ in range(20))
        )

        assert [r.status_code for r in responses] == [200] * 20
        assert len({r.json()["refresh_token"] for r in responses}) == 1
        assert await app_rows(app, Action.REFRESH_REUSE) == []
        assert (
            await refresh_as(http, responses[0].json()["refresh_token"], APP)
        ).status_code == 200
