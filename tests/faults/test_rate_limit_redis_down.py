"""Rate limits when Redis fails: a private ``redis-server`` is stopped under a running app
(with traffic in flight) and started again, on SQLite and on PostgreSQL. Revocations under
the same fault: ``tests/http/test_revocation_redis_down.py``.

While it is down, login limits fail closed (503 with a clear detail), the global limit fails
open (requests proceed; a warning is logged and a metric counts them), and no request gets a
500. Once it is back (empty: no persistence), the limits count again — without restarting
authkeep.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from authkeep import Settings
from authkeep.services.rate_limits import LOGIN_UNAVAILABLE
from helpers import PASSWORD, bearer, client_for, login, register
from servers import RedisProcess
from session_helpers import started

DEADLINE = 15.0
JWKS = "/.well-known/jwks.json"
LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
BACKGROUND_PEER = ("198.51.100.77", 41000)

pytestmark = pytest.mark.slow
OTHER_PEER = ("198.51.100.78", 41000)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until true (bounded: this is about outcome, never about timing)."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.05)


def global_allowed_without_storage() -> float:
    value = REGISTRY.get_sample_value(
        "authkeep_rate_limit_storage_errors_total", {"rule": "global", "outcome": "allowed"}
    )
    return value or 0.0


async def post_login(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(LOGIN, json={"email": "alice@example.com", "password": PASSWORD})


async def test_redis_outage_closes_logins_opens_the_global_limit_and_recovers(
    make_settings: Callable[..., Settings], private_redis: RedisProcess, log_output: Any
) -> None:
    settings = make_settings(
        redis_url=private_redis.url,
        rate_limit_per_minute=20,
        login_rate_limit="3/minute",
        register_rate_limit="5/hour",
        refresh_rate_limit="100/minute",
    )
    statuses: list[int] = []
    async with started(settings) as (app, http):
        await register(http)
        pair = await login(http)

        # Traffic from another address runs through the whole outage and the recovery.
        done = asyncio.Event()

        async def background() -> None:
            async with client_for(app, BACKGROUND_PEER) as other:
                while not done.is_set():
                    statuses.append((await other.get(JWKS)).status_code)
                    await asyncio.sleep(0.005)

        traffic = asyncio.create_task(background())
        try:
            await asyncio.sleep(0.05)
            await asyncio.to_thread(private_redis.stop)
            counted_before = global_allowed_without_storage()

            # Login limits fail closed, on both login routes.
            refused = await post_login(http)
            assert refused.status_code == 503
            assert refused.json() == {"detail": LOGIN_UNAVAILABLE}
            # A hint for well-behaved clients (and load balancers) of when to come back.
            assert int(refused.headers["retry-after"]) >= 1
            form = {"grant_type": "password", "username": "alice@example.com", "password": PASSWORD}
            oauth2 = await http.post(TOKEN, data=form)
            assert oauth2.status_code == 503
            assert oauth2.json()["error"] == "temporarily_unavailable"
            # Registration too (it sends mail: its limits guard inboxes); refresh fails open.
            new = {"email": "bob@example.com", "password": PASSWORD}
            assert (await http.post("/api/v1/auth/register", json=new)).status_code == 503
            rotated = await http.post(
                "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
            )
            assert rotated.status_code == 200
            # The global limit fails open: well past its 20 per minute, nothing is refused.
            for _ in range(30):
                assert (await http.get(JWKS)).status_code == 200
            me = await http.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
            assert me.status_code == 200
            assert global_allowed_without_storage() >= counted_before + 30

            await asyncio.to_thread(private_redis.start)

            # Recovery without a restart: logins are counted again ...
            async def login_answers() -> bool:
                return (await post_login(http)).status_code != 503

            await eventually(login_answers, "logins accepted again once Redis is back")
            for _ in range(3):
                last = await post_login(http)
                if last.status_code == 429:
                    break
            assert last.status_code == 429
            assert int(last.headers["retry-after"]) >= 1
            # ... and so is the global limit.
            async with client_for(app, OTHER_PEER) as other:
                answers = [(await other.get(JWKS)).status_code for _ in range(25)]
            assert 429 in answers
            assert answers.index(429) in (20, 21)
        finally:
            done.set()
            await traffic
    assert statuses, "the background traffic never ran"
    assert 500 not in statuses
    assert set(statuses) <= {200, 429}
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    names = [event.get("event") for event in events]
    assert "rate_limiter_unavailable" in names
    assert "rate_limiter_recovered" in names
    warning = next(e for e in events if e.get("event") == "rate_limiter_unavailable")
    assert warning["level"] == "warning"
    assert "unhandled_error" not in names
