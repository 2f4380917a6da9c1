"""Revocation when Redis fails: a private ``redis-server`` is stopped and started under a
running app (on SQLite and on PostgreSQL). Revoked tokens stay rejected throughout (the
database answers while Redis is down), no request ever gets a 500, and once Redis is back the
revocations it missed — or forgot by restarting empty — are published to it again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from authkeep import Settings
from helpers import bearer, login, register
from servers import RedisProcess
from session_helpers import LOGOUT, claims_of, me, refresh, started

pytestmark = pytest.mark.slow

DEADLINE = 15.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until true (bounded: this is about outcome, never about timing)."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.05)


async def published(redis_url: str, prefix: str, *sids: str) -> bool:
    """Whether Redis holds a revocation key for every one of ``sids``."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        return bool(
            await client.exists(*(f"{prefix}revoked:sid:{sid}" for sid in sids)) == len(sids)
        )
    finally:
        await client.aclose()


async def test_revocations_survive_a_redis_outage(
    make_settings: Callable[..., Settings], private_redis: RedisProcess
) -> None:
    settings = make_settings(redis_url=private_redis.url, rate_limit_enabled=False)
    prefix = settings.redis_prefix
    async with started(settings) as (_app, http):
        await register(http)
        before, kept, during = [await login(http) for _ in range(3)]
        assert (await http.post(LOGOUT, headers=bearer(before["access_token"]))).status_code == 204
        before_sid = claims_of(before["access_token"])["sid"]
        during_sid = claims_of(during["access_token"])["sid"]

        private_redis.stop()

        # The database answers instead: what was revoked stays revoked, the rest works.
        assert (await me(http, before["access_token"])).status_code == 401
        assert (await me(http, kept["access_token"])).status_code == 200
        # A logout while Redis is down still ends the session at once.
        assert (await http.post(LOGOUT, headers=bearer(during["access_token"]))).status_code == 204
        assert (await me(http, during["access_token"])).status_code == 401
        assert (await refresh(http, during["refresh_token"])).status_code == 401
        assert (await me(http, kept["access_token"])).status_code == 200
        fresh = await login(http)
        assert (await me(http, fresh["access_token"])).status_code == 200

        private_redis.start()  # empty: a restart without persistence forgets every key

        # Without any further request, the missed revocation and those Redis forgot are
        # published again (the background retry), so workers that ask Redis alone see them.
        await eventually(
            lambda: published(private_redis.url, prefix, before_sid, during_sid),
            "revocations republished to Redis",
        )
        for pair in (before, during):
            assert (await me(http, pair["access_token"])).status_code == 401
        assert (await me(http, kept["access_token"])).status_code == 200

    # Another worker that never saw the outage trusts Redis alone, and rejects them too.
    async with started(settings) as (_app, other):
        for pair in (before, during):
            assert (await me(other, pair["access_token"])).status_code == 401
        assert (await me(other, kept["access_token"])).status_code == 200


async def test_redis_restarted_empty_between_requests_is_noticed(
    make_settings: Callable[..., Settings], private_redis: RedisProcess
) -> None:
    # No request sees the outage: Redis simply comes back without its keys. The marker key
    # read alongside the session key tells the worker to republish before it answers.
    settings = make_settings(redis_url=private_redis.url, rate_limit_enabled=False)
    async with started(settings) as (_app, http):
        await register(http)
        ended, kept = [await login(http) for _ in range(2)]
        assert (await http.post(LOGOUT, headers=bearer(ended["access_token"]))).status_code == 204
        assert (await me(http, ended["access_token"])).status_code == 401

        private_redis.stop()
        private_redis.start()

        assert (await me(http, ended["access_token"])).status_code == 401
        assert (await me(http, kept["access_token"])).status_code == 200
        assert await published(
            private_redis.url, settings.redis_prefix, claims_of(ended["access_token"])["sid"]
        )


async def test_requests_while_redis_is_down_never_fail(
    make_settings: Callable[..., Settings], private_redis: RedisProcess
) -> None:
    settings = make_settings(redis_url=private_redis.url, rate_limit_enabled=False)
    async with started(settings) as (_app, http):
        await register(http)
        pair = await login(http)
        private_redis.stop()

        statuses: list[int] = []
        for _ in range(5):
            statuses.append((await me(http, pair["access_token"])).status_code)
            rotated = await refresh(http, pair["refresh_token"])
            statuses.append(rotated.status_code)
            pair = {**pair, **rotated.json()}
        responses = await asyncio.gather(*(me(http, pair["access_token"]) for _ in range(20)))
        statuses += [r.status_code for r in responses]
        private_redis.start()
        statuses.append((await me(http, pair["access_token"])).status_code)

        assert set(statuses) == {200}, statuses
