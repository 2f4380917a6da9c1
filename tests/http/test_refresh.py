"""Refresh-token rotation over HTTP: rotation, the grace window, theft detection, token types,
storage as hashes, and 50 simultaneous refreshes with one token. Each test runs on SQLite and
on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from authkeep import Settings
from authkeep.db.base import Base
from authkeep.db.engine import Database
from conftest import Backend
from helpers import bearer, login, register
from session_helpers import claims_of, family, me, refresh, rows, started


async def test_refresh_rotates_and_spends_the_old_token(client: httpx.AsyncClient) -> None:
    await register(client)
    first = await login(client)

    response = await refresh(client, first["refresh_token"])

    assert response.status_code == 200
    second = response.json()
    assert second["token_type"] == "bearer"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert claims_of(second["access_token"])["sid"] == claims_of(first["access_token"])["sid"]
    assert (await me(client, second["access_token"])).status_code == 200
    # The successor rotates in turn: a chain of refreshes is one session.
    third = await refresh(client, second["refresh_token"])
    assert third.status_code == 200
    assert (
        claims_of(third.json()["refresh_token"])["sid"] == claims_of(first["access_token"])["sid"]
    )


async def test_retry_inside_grace_window_gets_the_same_successor(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    pair = await login(client)

    first = await refresh(client, pair["refresh_token"])
    retry = await refresh(client, pair["refresh_token"])

    assert first.status_code == 200
    assert retry.status_code == 200
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    # The retry did not count as theft: the session and its successor live on.
    assert (await me(client, retry.json()["access_token"])).status_code == 200
    assert (await me(client, pair["access_token"])).status_code == 200
    assert (await refresh(client, first.json()["refresh_token"])).status_code == 200


async def test_reuse_after_grace_window_revokes_the_family(
    make_settings: Callable[..., Settings], log_output: io.StringIO
) -> None:
    async with started(make_settings(refresh_reuse_interval_seconds=0)) as (app, http):
        await register(http)
        pair = await login(http)
        rotated = await refresh(http, pair["refresh_token"])
        assert rotated.status_code == 200
        successor = rotated.json()

        replay = await refresh(http, pair["refresh_token"])

        assert replay.status_code == 401
        assert replay.headers["www-authenticate"] == "Bearer"
        # The thief and the victim share the family: all of it is dead, at once.
        assert (await refresh(http, successor["refresh_token"])).status_code == 401
        assert (await me(http, successor["access_token"])).status_code == 401
        assert (await me(http, pair["access_token"])).status_code == 401
        stored = await family(app, claims_of(pair["access_token"])["sid"])
        assert all(row["revoked_at"] is not None for row in stored)
        # Other sessions of the same user are not the thief's: they keep working.
        other = await login(http)
        assert (await me(http, other["access_token"])).status_code == 200

    events = [json.loads(line) for line in log_output.getvalue().splitlines() if line]
    reuse = [e for e in events if e.get("event") == "refresh_token_reuse_detected"]
    assert len(reuse) == 1
    assert reuse[0]["session_id"] == claims_of(pair["access_token"])["sid"]
    assert reuse[0]["level"] == "warning"
    assert pair["refresh_token"] not in log_output.getvalue()


async def test_refresh_token_is_not_an_access_token(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)

    as_access = await client.get("/api/v1/auth/me", headers=bearer(pair["refresh_token"]))
    as_refresh = await refresh(client, pair["access_token"])

    assert as_access.status_code == 401
    assert as_refresh.status_code == 401
    # Neither misuse spent or revoked anything.
    assert (await refresh(client, pair["refresh_token"])).status_code == 200


async def test_garbage_and_forged_refresh_tokens_are_401(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    header, payload, signature = pair["refresh_token"].split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"

    for token in ("not-a-jwt", forged, pair["refresh_token"] + "x"):
        response = await refresh(client, token)
        assert response.status_code == 401, token
        assert token not in response.text


async def test_refresh_tokens_are_stored_only_as_hashes(
    client: httpx.AsyncClient, app: FastAPI, backend: Backend
) -> None:
    await register(client)
    pair = await login(client)
    rotated = (await refresh(client, pair["refresh_token"])).json()

    stored = await rows(app, "SELECT jti, token_hash FROM refresh_tokens")
    digests = {row["token_hash"] for row in stored}
    for token in (pair["refresh_token"], rotated["refresh_token"]):
        assert hashlib.sha256(token.encode()).hexdigest() in digests
    # No column of any table holds a token, nor its signature (the part that makes it usable).
    secrets = [pair["refresh_token"], rotated["refresh_token"]]
    secrets += [token.rsplit(".", 1)[1] for token in secrets]
    # Read as the schema owner: the app's own role may not read every table.
    owner = Database(backend.owner_url or backend.database_url)
    try:
        async with owner.reading() as conn:
            for table in Base.metadata.sorted_tables:
                dump = repr((await conn.execute(text(f'SELECT * FROM "{table.name}"'))).all())
                assert not any(secret in dump for secret in secrets), table.name
    finally:
        await owner.close()
    if backend.name == "sqlite":
        path = Path(backend.database_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert not any(secret.encode() in raw for secret in secrets)


async def _fifty_refreshes(
    http: httpx.AsyncClient, token: str
) -> tuple[list[httpx.Response], set[str]]:
    responses = await asyncio.gather(*(refresh(http, token) for _ in range(50)))
    successors = {r.json()["refresh_token"] for r in responses if r.status_code == 200}
    return list(responses), successors


async def test_fifty_simultaneous_refreshes_share_one_successor(
    make_settings: Callable[..., Settings],
) -> None:
    async with started(make_settings(rate_limit_enabled=False)) as (app, http):
        await register(http)
        pair = await login(http)
        sid = claims_of(pair["access_token"])["sid"]

        responses, successors = await _fifty_refreshes(http, pair["refresh_token"])

        assert [r.status_code for r in responses] == [200] * 50, {
            r.status_code: r.text for r in responses
        }
        assert len(successors) == 1
        (successor,) = successors
        stored = await family(app, sid)
        original = next(
            row
            for row in stored
            if row["token_hash"] == hashlib.sha256(pair["refresh_token"].encode()).hexdigest()
        )
        live = [row for row in stored if row["spent_at"] is None and row["revoked_at"] is None]
        assert len(stored) == 2
        assert len(live) == 1
        assert live[0]["token_hash"] == hashlib.sha256(successor.encode()).hexdigest()
        assert original["spent_at"] is not None
        assert original["successor_jti"] == live[0]["jti"] == claims_of(successor)["jti"]
        # The session survived the storm: the successor works.
        assert (await refresh(http, successor)).status_code == 200


async def test_fifty_simultaneous_replays_without_grace_end_the_session_cleanly(
    make_settings: Callable[..., Settings],
) -> None:
    # Without a grace window every loser is a replay: one winner, the rest 401 and the whole
    # family revoked — never a 500 and never a second live successor.
    settings = make_settings(rate_limit_enabled=False, refresh_reuse_interval_seconds=0)
    async with started(settings) as (app, http):
        await register(http)
        pair = await login(http)
        sid = claims_of(pair["access_token"])["sid"]

        responses, successors = await _fifty_refreshes(http, pair["refresh_token"])

        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [401] * 49
        assert len(successors) == 1
        stored = await family(app, sid)
        assert len(stored) == 2
        assert all(row["revoked_at"] is not None for row in stored)
        assert (await refresh(http, successors.pop())).status_code == 401
        assert (await me(http, pair["access_token"])).status_code == 401
