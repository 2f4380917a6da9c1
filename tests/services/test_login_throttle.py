"""LoginThrottle without HTTP, on memory storage and on real Redis: the per-email count, the
known client's own tiers and what a success forgets and marks, the Redis round trips of one
successful login, and the failure policy when Redis is gone (before the password check: 503;
during it: the answer stands, nothing raises)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from redis.asyncio.connection import Connection

from authkeep import Settings
from authkeep.errors import InvalidCredentials, RateLimited
from authkeep.services.context import RequestInfo
from authkeep.services.login_throttle import LoginThrottle
from authkeep.services.rate_limits import (
    LOGIN_UNAVAILABLE,
    LimiterUnavailable,
    LimitReport,
    RateLimits,
)
from authkeep.services.sessions import Sessions
from servers import RedisProcess, free_port

EMAIL = "owner@example.com"
PASSWORD = "the right password"
OWNER = RequestInfo(ip="192.0.2.10")
SIGNED_IN = cast(Any, object())


class FakeSessions:
    """:meth:`Sessions.login` as LoginThrottle sees it: the right password signs in, any other
    is InvalidCredentials; ``during`` runs inside each password check."""

    def __init__(self) -> None:
        self.calls = 0
        self.during: Callable[[], Awaitable[None]] | None = None

    async def login(self, email: str, password: str, info: RequestInfo) -> Any:
        self.calls += 1
        if self.during is not None:
            await self.during()
        if password != PASSWORD:
            raise InvalidCredentials
        return SIGNED_IN


def throttle_on(settings: Settings) -> tuple[LoginThrottle, FakeSessions, RateLimits]:
    limits = RateLimits.from_settings(settings, pepper=b"pepper")
    sessions = FakeSessions()
    return LoginThrottle(limits, cast(Sessions, sessions)), sessions, limits


def attacker(n: int) -> RequestInfo:
    return RequestInfo(ip=f"198.51.100.{n}")


async def outcome(
    throttle: LoginThrottle, password: str, info: RequestInfo, email: str = EMAIL
) -> str:
    """``ok``, ``401`` or ``429``: what the client would be answered."""
    try:
        await throttle.login(email, password, info)
    except InvalidCredentials:
        return "401"
    except RateLimited:
        return "429"
    return "ok"


@pytest.fixture
async def on_private_redis(
    private_redis: RedisProcess,
) -> AsyncIterator[tuple[LoginThrottle, FakeSessions, RateLimits]]:
    settings = Settings(
        env="test",
        redis_url=private_redis.url,
        redis_prefix=f"authkeep-test:{uuid.uuid4().hex[:12]}:",
        challenge_after_failures=0,
    )
    built = throttle_on(settings)
    try:
        yield built
    finally:
        await built[2].close()


@pytest.fixture
def sent(private_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every request sent to the private Redis from now on: a command, a script or a
    pipeline is one ``send_packed_command`` on a connection."""
    found: list[bytes] = []
    send = Connection.send_packed_command

    async def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        if self.port == private_redis.port:
            found.append(bytes(command if isinstance(command, bytes) else b"".join(command)))
        await send(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    return found


async def test_the_email_limit_refuses_exactly_the_attempt_after_the_limit(
    make_settings: Callable[..., Settings],
) -> None:
    """Wrong and right passwords alike: three attempts a minute, the fourth refused before
    its password is looked at, with the per-email rule and its wait."""
    throttle, sessions, limits = throttle_on(make_settings(login_rate_limit="3/minute"))
    try:
        remaining = []
        for password in ("wrong", PASSWORD, "wrong"):
            report = LimitReport()
            with contextlib.suppress(InvalidCredentials):
                await throttle.login(EMAIL, password, OWNER, report)
            assert report.tightest is not None
            assert report.tightest.rule == "login_email"
            remaining.append(report.tightest.remaining)
        assert remaining == [2, 1, 0]
        with pytest.raises(RateLimited) as refused:
            await throttle.login(EMAIL, PASSWORD, OWNER)
        assert refused.value.limit == "login_email"
        assert 1 <= refused.value.retry_after <= 60
        assert sessions.calls == 3
    finally:
        await limits.close()


async def test_a_known_clients_success_forgets_both_tiers_and_it_keeps_its_own(
    make_settings: Callable[..., Settings],
) -> None:
    """The owner signed in before (the pair is marked): attackers who exhaust the account's
    tiers do not lock the owner out; the owner's failures count on the pair's tiers; and the
    owner's next success forgets the failures of both the pair and the account."""
    settings = make_settings(login_account_failure_limits="3 per hour")
    throttle, _sessions, limits = throttle_on(settings)
    try:
        assert await outcome(throttle, PASSWORD, OWNER) == "ok"
        for n in range(1, 4):
            assert await outcome(throttle, "guess", attacker(n)) == "401"
        assert await outcome(throttle, PASSWORD, attacker(9)) == "429"
        for _ in range(2):
            assert await outcome(throttle, "typo", OWNER) == "401"
        assert await outcome(throttle, PASSWORD, OWNER) == "ok"
        # The account's failures are forgotten: an unknown client gets its password checked.
        assert await outcome(throttle, "guess", attacker(9)) == "401"
        # The pair's too: two more typos would make four within the hour without it.
        for _ in range(2):
            assert await outcome(throttle, "typo", OWNER) == "401"
        assert await outcome(throttle, PASSWORD, OWNER) == "ok"
    finally:
        await limits.close()


async def test_a_step_up_success_forgets_the_failures_as_a_login_success_does(
    make_settings: Callable[..., Settings],
) -> None:
    """The password re-check behind a session (step-up) counts with the logins' lock-out;
    proven right, it forgets the known client's tiers and the account's, as a login does."""
    settings = make_settings(login_account_failure_limits="3 per hour")
    throttle, _sessions, limits = throttle_on(settings)

    async def right() -> bool:
        return True

    try:
        assert await outcome(throttle, PASSWORD, OWNER) == "ok"
        for n in range(1, 4):
            assert await outcome(throttle, "guess", attacker(n)) == "401"
        assert await outcome(throttle, PASSWORD, attacker(9)) == "429"
        assert await throttle.reauthenticate(EMAIL, OWNER, right)
        # The account's failures are forgotten: an unknown client's password is checked.
        assert await outcome(throttle, "guess", attacker(9)) == "401"
    finally:
        await limits.close()


async def test_an_unknown_clients_success_marks_it_known(
    make_settings: Callable[..., Settings],
) -> None:
    """Before its first success a client counts on the account's tiers; after it, on its own."""
    settings = make_settings(login_account_failure_limits="2 per hour")
    throttle, _sessions, limits = throttle_on(settings)
    try:
        for n in (1, 2):
            assert await outcome(throttle, "guess", attacker(n), "first@example.com") == "401"
        # Not known yet: locked out with everyone else.
        assert await outcome(throttle, PASSWORD, OWNER, "first@example.com") == "429"
        assert await outcome(throttle, PASSWORD, OWNER) == "ok"
        for n in (1, 2):
            assert await outcome(throttle, "guess", attacker(n)) == "401"
        assert await outcome(throttle, PASSWORD, attacker(3)) == "429"
        assert await outcome(throttle, PASSWORD, OWNER) == "ok"
    finally:
        await limits.close()


@pytest.mark.redis
async def test_a_successful_login_is_at_most_four_redis_round_trips(
    on_private_redis: tuple[LoginThrottle, FakeSessions, RateLimits],
    sent: list[bytes],
) -> None:
    """Every request the limiter sends to Redis (a command, a script, a pipeline) is one
    ``send_packed_command`` on a connection: a known client's successful login, the costliest
    (two tiers keys to forget), makes three, and the global limit's hit a fourth."""
    throttle, _sessions, limits = on_private_redis
    # The first request connects and loads the scripts, and its login makes the client known.
    assert await limits.hit_global(f"ip:{OWNER.ip}") is not None
    assert await outcome(throttle, PASSWORD, OWNER) == "ok"
    assert sent
    sent.clear()
    assert await limits.hit_global(f"ip:{OWNER.ip}") is not None  # the middleware's
    assert len(sent) == 1, sent
    assert await outcome(throttle, PASSWORD, OWNER) == "ok"
    assert len(sent) <= 4, sent


@pytest.mark.redis
async def test_a_failed_login_is_at_most_four_redis_round_trips(
    on_private_redis: tuple[LoginThrottle, FakeSessions, RateLimits],
    sent: list[bytes],
) -> None:
    """A password spray's cost to the server: the global hit, the look-up, the per-email
    count and one call that counts the failure against the client IP and the account's
    tiers (one per window before)."""
    throttle, _sessions, limits = on_private_redis
    assert await limits.hit_global(f"ip:{OWNER.ip}") is not None
    assert await outcome(throttle, "wrong", OWNER) == "401"  # connects, loads the scripts
    sent.clear()
    assert await limits.hit_global(f"ip:{OWNER.ip}") is not None
    assert await outcome(throttle, "wrong", OWNER) == "401"
    assert len(sent) <= 4, sent


@pytest.mark.redis
async def test_without_redis_a_login_fails_closed_before_the_password_check() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    throttle, sessions, limits = throttle_on(Settings(env="test", redis_url=dead))
    try:
        for password in (PASSWORD, "wrong"):
            with pytest.raises(LimiterUnavailable) as caught:
                await throttle.login(EMAIL, password, OWNER)
            assert caught.value.detail == LOGIN_UNAVAILABLE
        assert sessions.calls == 0
    finally:
        await limits.close()


@pytest.mark.redis
async def test_redis_lost_during_the_password_check_changes_no_answer(
    on_private_redis: tuple[LoginThrottle, FakeSessions, RateLimits],
    private_redis: RedisProcess,
) -> None:
    """Redis stops while the password is checked: the success is still a success (forgetting
    and marking never raise) and the failure still a 401 (recording never raises); the next
    login fails closed."""
    throttle, sessions, _limits = on_private_redis

    async def stop() -> None:
        await asyncio.to_thread(private_redis.stop)

    sessions.during = stop
    assert await outcome(throttle, PASSWORD, OWNER) == "ok"
    await asyncio.to_thread(private_redis.start)
    await asyncio.sleep(1.1)  # past the breaker's pause, so Redis is asked again
    assert await outcome(throttle, "wrong", OWNER) == "401"
    sessions.during = None
    with pytest.raises(LimiterUnavailable):
        await throttle.login(EMAIL, PASSWORD, OWNER)
    assert sessions.calls == 2
