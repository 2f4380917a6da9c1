"""The MFA services without HTTP: the atomic decisions under concurrency (one TOTP step,
one recovery code, one finished login per token), on SQLite and PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from audit_helpers import app_rows
from authkeep import Settings
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.errors import InvalidToken
from authkeep.services.context import RequestInfo
from authkeep.services.mfa import MfaLimits
from authkeep.services.rate_limits import LimiterUnavailable, RateLimits
from authkeep.services.sessions import MfaPending
from helpers import PASSWORD, app_of, login, register
from mail_helpers import free_port
from mfa_helpers import code, enrol, mid_step
from session_helpers import claims_of, services

INFO = RequestInfo(ip="198.51.100.9", user_agent="tests")


async def enrolled_user(client: httpx.AsyncClient) -> tuple[uuid.UUID, str, list[str]]:
    user = await register(client)
    secret, codes = await enrol(client, (await login(client))["access_token"])
    return uuid.UUID(user["id"]), secret, codes


async def test_twenty_concurrent_checks_of_one_code_accept_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    totp = services(app_of(client)).totp
    with mid_step():
        user_id, secret, _ = await enrolled_user(client)
        same = code(secret, 1)
        results = await asyncio.gather(*(totp.verify(user_id, same, INFO) for _ in range(20)))
        assert sorted(results) == [False] * 19 + [True]
        # The step is spent: neither it nor an older one comes back.
        assert await totp.verify(user_id, same, INFO) is False
        assert await totp.verify(user_id, code(secret), INFO) is False
    outcomes = [r.outcome for r in await app_rows(app_of(client), "mfa.verify")]
    assert outcomes.count("success") == 1
    assert outcomes.count("failure") == 21


async def test_each_of_the_ten_recovery_codes_works_once(client: httpx.AsyncClient) -> None:
    found = services(app_of(client))
    with mid_step():
        user_id, _, codes = await enrolled_user(client)
        async with found.db.reading() as conn:
            user = await user_rows.get_by_id(conn, found.envelope, user_id)
        assert user is not None
        for typed in codes:
            async with found.db.transaction() as conn:
                assert await found.recovery_codes.use(conn, user, typed, INFO, utcnow()) is True
            async with found.db.transaction() as conn:
                assert await found.recovery_codes.use(conn, user, typed, INFO, utcnow()) is False
    remaining = [
        r.details["remaining"] for r in await app_rows(app_of(client), "mfa.recovery_code_used")
    ]
    assert remaining == list(range(9, -1, -1))


async def test_an_mfa_token_finishes_once_under_concurrency(client: httpx.AsyncClient) -> None:
    """Two requests with valid factors race on one mfa_token: one session, one 401."""
    found = services(app_of(client))
    with mid_step():
        await enrolled_user(client)
        pending = await found.login_throttle.login("alice@example.com", PASSWORD, INFO)
        assert isinstance(pending, MfaPending)

        async def always(_conn: object, _user: object) -> bool:
            return True

        results = await asyncio.gather(
            *(
                found.mfa_logins.finish(pending.mfa_token, INFO, factor="otp", verify=always)
                for _ in range(5)
            ),
            return_exceptions=True,
        )
    pairs = [r for r in results if not isinstance(r, BaseException)]
    assert len(pairs) == 1
    assert all(isinstance(r, InvalidToken) for r in results if isinstance(r, BaseException))
    assert claims_of(pairs[0].access_token)["amr"] == ["pwd", "otp"]


async def test_a_passkey_finish_adds_its_methods(client: httpx.AsyncClient) -> None:
    found = services(app_of(client))
    with mid_step():
        await enrolled_user(client)
        pending = await found.login_throttle.login("alice@example.com", PASSWORD, INFO)
        assert isinstance(pending, MfaPending)
        assert await found.mfa_logins.user_of(pending.mfa_token)

        async def ok(_conn: object, _user: object) -> bool:
            return True

        pair = await found.mfa_logins.finish(
            pending.mfa_token, INFO, factor="hwk", verify=ok, extra_amr=("user",)
        )
    claims = claims_of(pair.access_token)
    assert claims["amr"] == ["pwd", "hwk", "user"]
    assert claims["acr"] == "aal2"
    with pytest.raises(InvalidToken):
        await found.mfa_logins.user_of(pending.mfa_token)


async def test_the_mfa_limit_fails_closed_without_its_storage() -> None:
    """Without its counters nothing would bound the guessing of six digits: 503, no check."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limits = RateLimits.from_settings(Settings(env="test", redis_url=dead), pepper=b"p")
    try:
        with pytest.raises(LimiterUnavailable):
            await MfaLimits(limits).admit(uuid.uuid4(), "192.0.2.1")
    finally:
        await limits.close()
