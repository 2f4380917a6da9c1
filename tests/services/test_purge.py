"""``Sessions.purge`` on both backends: what goes, what stays, and that theft is still caught
after a purge."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from authkeep import Settings
from authkeep.db.base import utcnow
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
