"""``Sessions.purge`` on both backends: what goes, what stays, and that theft is still caught
after a purge."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from authkeep import Settings
from authkeep.db.base import utcnow
from authkeep.db.models import AuthSession, RefreshToken
from authkeep.services import sessions as sessions_module
from helpers import bearer, login, register
from session_helpers import (
    LOGOUT,
    family,
    me,
    refresh,
    rows,
    services,
    set_session,
    set_token,
    sid_of,
    started,
)


async def session_ids(app: FastAPI) -> set[uuid.UUID]:
    found = await rows(app, "SELECT id FROM auth_sessions")
    return {
        row["id"] if isinstance(row["id"], uuid.UUID) else uuid.UUID(row["id"]) for row in found
    }


async def test_purge_deletes_what_has_ended_and_keeps_the_rest(
    make_settings: Callable[..., Settings], log_output: io.StringIO
) -> None:
    async with started(make_settings(refresh_reuse_interval_seconds=0)) as (app, http):
        await register(http)
        now = utcnow()
        live = await login(http)
        live_next = (await refresh(http, live["refresh_token"])).json()
        expired = await login(http)
        await set_session(app, expired, expires_at=now - timedelta(days=1))
        just_expired = await login(http)
        await set_session(app, just_expired, expires_at=now - timedelta(seconds=30))
        revoked_long_ago = await login(http)
        await http.post(LOGOUT, headers=bearer(revoked_long_ago["access_token"]))
        await set_session(app, revoked_long_ago, revoked_at=now - timedelta(hours=2))
        revoked_now = await login(http)
        await http.post(LOGOUT, headers=bearer(revoked_now["access_token"]))
        stale = await login(http)
        stale_next = (await refresh(http, stale["refresh_token"])).json()
        await set_token(app, stale["refresh_token"], expires_at=now - timedelta(seconds=1))

        purged = await services(app).sessions.purge()

        # Sessions: the long-expired and the long-revoked. Tokens: theirs, and the expired one.
        assert purged == (2, 3)
        assert await session_ids(app) == {
            sid_of(p) for p in (live, just_expired, revoked_now, stale)
        }
        assert len(await family(app, str(sid_of(live)))) == 2  # the spent token stays
        assert len(await family(app, str(sid_of(stale)))) == 1
        assert (await refresh(http, stale_next["refresh_token"])).status_code == 200
        # A revocation younger than the access tokens it covers is still enforced.
        assert (await me(http, revoked_now["access_token"])).status_code == 401
        # Nothing left to do: a second purge is a no-op.
        assert await services(app).sessions.purge() == (0, 0)

        # The spent token survived the purge, so its replay is still caught as theft.
        replay = await refresh(http, live["refresh_token"])
        assert replay.status_code == 401
        assert (await me(http, live_next["access_token"])).status_code == 401
        assert (await refresh(http, live_next["refresh_token"])).status_code == 401
    assert "refresh_token_reuse_detected" in log_output.getvalue()


async def test_purge_works_through_many_batches(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions_module, "PURGE_BATCH", 2)
    await register(client)
    now = utcnow()
    keep = await login(client)
    for _ in range(5):
        ended = await login(client)
        await set_session(app, ended, expires_at=now - timedelta(days=1))
    for _ in range(3):
        rotated = (await refresh(client, keep["refresh_token"])).json()
        await set_token(app, keep["refresh_token"], expires_at=now - timedelta(seconds=1))
        keep = {**keep, **rotated}

    assert await services(app).sessions.purge() == (5, 8)
    assert await session_ids(app) == {sid_of(keep)}
    assert (await refresh(client, keep["refresh_token"])).status_code == 200


async def test_a_purge_of_many_batches_removes_everything_ended_and_nothing_live(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 18: the purge of a million ended sessions runs in short transactions of
    # PURGE_BATCH rows; here ten batches and more, every kind of row interleaved.
    monkeypatch.setattr(sessions_module, "PURGE_BATCH", 40)
    rests: list[float] = []

    async def rest(seconds: float) -> None:
        rests.append(seconds)

    monkeypatch.setattr(sessions_module, "_rest", rest)
    user_id = uuid.UUID((await register(client))["id"])
    real = await login(client)
    now = utcnow()
    shapes = {
        # (expires_at, revoked_at): purged?
        "expired long ago": ((now - timedelta(days=1), None), True),
        # The grace is the longest access-token life (30 minutes here) and the leeway.
        "revoked long ago": ((now + timedelta(days=1), now - timedelta(hours=2)), True),
        "expired within the grace": ((now - timedelta(minutes=1), None), False),
        "revoked within the grace": ((now + timedelta(days=1), now - timedelta(minutes=1)), False),
        "live": ((now + timedelta(days=1), None), False),
    }
    plan = ["expired long ago"] * 230 + ["revoked long ago"] * 90 + ["live"] * 60
    plan += ["expired within the grace"] * 9 + ["revoked within the grace"] * 9
    sessions: list[dict[str, Any]] = []
    tokens: list[dict[str, Any]] = []
    doomed: set[uuid.UUID] = set()
    for kind in sorted(plan, key=lambda _: uuid.uuid4()):  # interleaved
        (expires_at, revoked_at), gone = shapes[kind]
        sid = uuid.uuid4()
        if gone:
            doomed.add(sid)
        sessions.append(
            {
                "id": sid,
                "user_id": user_id,
                "created_at": now - timedelta(days=2),
                "last_used_at": now - timedelta(days=2),
                "expires_at": expires_at,
                "revoked_at": revoked_at,
            }
        )
        # Each session's current token, and on the live ones an older token that expired
        # (the purge deletes it alone): expired tokens span batches too.
        token_expiry = [expires_at]
        if kind == "live":
            token_expiry.append(now - timedelta(seconds=1))
        for expiry in token_expiry:
            jti = uuid.uuid4().hex
            tokens.append(
                {
                    "jti": jti,
                    "user_id": user_id,
                    "session_id": sid,
                    "token_hash": jti * 2,
                    "created_at": now - timedelta(days=2),
                    "expires_at": expiry,
                    "revoked_at": revoked_at,
                }
            )
    async with services(app).db.transaction() as conn:
        await conn.execute(insert(AuthSession), sessions)
        await conn.execute(insert(RefreshToken), tokens)
    kept_tokens = {
        t["jti"] for t in tokens if t["session_id"] not in doomed and t["expires_at"] > now
    }

    purged = await services(app).sessions.purge()

    assert purged == (len(doomed), len(tokens) - len(kept_tokens))
    assert len(doomed) > 5 * 40  # many batches of sessions, and of expired tokens alone
    assert purged[1] - len(doomed) > 40
    # A rest after every full batch (as long as the batch took: PURGE_PAUSE 1), none after
    # the last: the purge leaves the database to the logins half of the time.
    assert len(rests) >= len(doomed) // 40
    assert all(seconds > 0 for seconds in rests)
    assert await session_ids(app) == {s["id"] for s in sessions} - doomed | {sid_of(real)}
    left = {row["jti"] for row in await rows(app, "SELECT jti FROM refresh_tokens")}
    assert left - kept_tokens == {t["jti"] for t in await family(app, str(sid_of(real)))}
    assert await services(app).sessions.purge() == (0, 0)
    # The real session, live all along, still refreshes.
    assert (await refresh(client, real["refresh_token"])).status_code == 200
