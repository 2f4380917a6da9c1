"""The limiter without HTTP: exactness under concurrency (memory and real Redis), the failure
policy against an unreachable Redis, the report's choice of headers, and the settings."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from redis.asyncio import Redis
from typer.testing import CliRunner

from authkeep import Settings
from authkeep.cli import app as cli
from authkeep.services.rate_limits import (
    LOGIN_UNAVAILABLE,
    Decision,
    LimiterUnavailable,
    LimitReport,
    RateLimits,
)
from authkeep.settings import InspectedSettings, find_problems
from servers import free_port


def storage_errors(rule: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "authkeep_rate_limit_storage_errors_total", {"rule": rule, "outcome": outcome}
    )
    return value or 0.0


async def test_concurrent_hits_never_over_admit(make_settings: Callable[..., Settings]) -> None:
    """100 simultaneous attempts against 5/minute: exactly 5 pass (memory lock; Redis Lua)."""
    limits = RateLimits.from_settings(make_settings(login_rate_limit="5/minute"), pepper=b"p")
    try:
        item = limits.config.login_email
        decisions = await asyncio.gather(
            *(limits.hit("login_email", item, "someone") for _ in range(100))
        )
        assert sum(1 for d in decisions if d is not None and d.allowed) == 5
        assert all(d is not None for d in decisions)
        refused = [d for d in decisions if d is not None and not d.allowed]
        assert all(d.remaining == 0 and 1 <= d.retry_after <= 60 for d in refused)
    finally:
        await limits.close()


async def test_global_limit_counts_per_key(make_settings: Callable[..., Settings]) -> None:
    limits = RateLimits.from_settings(make_settings(rate_limit_per_minute=3), pepper=b"p")
    try:
        first = await limits.hit_global("ip:192.0.2.1")
        assert first is not None
        assert (first.limit, first.remaining, first.allowed) == (3, 2, True)
        other = await limits.hit_global("ip:192.0.2.2")
        assert other is not None
        assert other.remaining == 2
    finally:
        await limits.close()


async def test_hashed_keys_hide_the_email_and_depend_on_the_secret() -> None:
    settings = Settings(env="test")
    one = RateLimits.from_settings(settings, pepper=b"one")
    two = RateLimits.from_settings(settings, pepper=b"two")
    try:
        assert one.hashed("user@example.com") == one.hashed("user@example.com")
        assert one.hashed("user@example.com") != two.hashed("user@example.com")
        assert "example" not in one.hashed("user@example.com")
    finally:
        await one.close()
        await two.close()


async def test_unreachable_redis_fails_open_for_global_and_closed_for_login(
    log_output: Any,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    limits = RateLimits.from_settings(Settings(env="test", redis_url=dead), pepper=b"p")
    before_open = storage_errors("global", "allowed")
    before_closed = storage_errors("login_email", "refused")
    try:
        for _ in range(3):
            assert await limits.hit_global("ip:192.0.2.1") is None
        with pytest.raises(LimiterUnavailable) as caught:
            await limits.hit("login_email", limits.config.login_email, "someone")
        assert caught.value.detail == LOGIN_UNAVAILABLE
        # Recording a failure never raises: the login's answer is already decided.
        await limits.record("login_ip_failures", (limits.config.login_ip_failures,), "ip")
    finally:
        await limits.close()
    assert storage_errors("global", "allowed") == before_open + 3
    assert storage_errors("login_email", "refused") == before_closed + 1
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    warnings = [e for e in events if e.get("event") == "rate_limiter_unavailable"]
    assert len(warnings) == 1  # once per outage, not once per request
    assert warnings[0]["level"] == "warning"


def test_the_report_keeps_the_tightest_decision() -> None:
    report = LimitReport()
    roomy = Decision("global", True, 60, 59, 60)
    tight = Decision("login_email", True, 5, 1, 40)
    tight_longer = Decision("login_ip_failures", True, 5, 1, 500)
    refused = Decision("login_email", False, 5, 0, 30)
    report.note(None)
    assert report.tightest is None
    for decision, expected in (
        (roomy, roomy),
        (tight, tight),
        (roomy, tight),
        (tight_longer, tight_longer),
        (refused, refused),
        (Decision("global", True, 60, 0, 10), refused),
    ):
        report.note(decision)
        assert report.tightest == expected


def test_disabled_limits_build_no_storage() -> None:
    limits = RateLimits.from_settings(Settings(env="test", rate_limit_enabled=False), pepper=b"")
    assert not limits.enabled


async def test_the_password_strength_limit_fails_closed() -> None:
    # Each meter call costs zxcvbn work: without its counter, one client could spend a core.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limits = RateLimits.from_settings(Settings(env="test", redis_url=dead), pepper=b"p")
    before = storage_errors("password_strength", "refused")
    try:
        with pytest.raises(LimiterUnavailable):
            await limits.enforce("password_strength", "ip:192.0.2.1")
        assert await limits.enforce("refresh", "ip:192.0.2.1") is None  # fails open
    finally:
        await limits.close()
    assert storage_errors("password_strength", "refused") == before + 1


# -- settings and check-config -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("login_rate_limit", "5 per fortnight"),
        ("login_rate_limit", "5/minute; 10/hour"),
        ("register_rate_limit", "lots"),
        ("password_strength_rate_limit", "30/minute; 100/hour"),
        ("login_account_failure_limits", "10 per 15 minutes; soon"),
    ],
)
def test_bad_limits_are_refused_naming_the_setting(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(env="test", **{field: value})
    assert f"AUTHKEEP_{field.upper()}" in str(caught.value)
    assert value not in str(caught.value).split("input_value")[0]


def test_account_tiers_beyond_nist_are_a_warning() -> None:
    def nist(settings: Settings) -> list[str]:
        return [
            p.level for p in find_problems(settings) if p.setting.endswith("ACCOUNT_FAILURE_LIMITS")
        ]

    assert nist(Settings(env="test")) == []
    assert nist(Settings(env="test", login_account_failure_limits="10 per 15 minutes")) == [
        "warning"
    ]
    assert nist(Settings(env="test", login_account_failure_limits="50 per 12 hours")) == []


def test_check_config_prints_every_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(InspectedSettings.model_fields):
        monkeypatch.delenv(f"AUTHKEEP_{name.upper()}", raising=False)
    monkeypatch.setenv("AUTHKEEP_REGISTER_RATE_LIMIT", "3 per hour")
    result = CliRunner().invoke(cli, ["check-config"])
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    for name in (
        "RATE_LIMIT_ENABLED",
        "RATE_LIMIT_PER_MINUTE",
        "LOGIN_RATE_LIMIT",
        "LOGIN_IP_FAILURE_LIMIT",
        "LOGIN_ACCOUNT_FAILURE_LIMITS",
        "LOGIN_KNOWN_CLIENT_DAYS",
        "REGISTER_RATE_LIMIT",
        "REFRESH_RATE_LIMIT",
        "PASSWORD_CHANGE_RATE_LIMIT",
        "PASSWORD_STRENGTH_RATE_LIMIT",
        "MFA_RATE_LIMIT",
        "EXPORT_RATE_LIMIT",
    ):
        assert f"AUTHKEEP_{name}" in lines, name
    assert lines["AUTHKEEP_REGISTER_RATE_LIMIT"].endswith("3 per hour")


async def test_forget_clears_every_tier_that_limits_counted(
    make_settings: Callable[..., Settings],
) -> None:
    """A success forgets the account's failure tiers: afterwards limits itself sees every
    tier empty (on Redis the windows go in one ``DEL``, built from limits' own keys)."""
    limits = RateLimits.from_settings(
        make_settings(login_account_failure_limits="3 per 15 minutes; 5 per hour; 9 per day"),
        pepper=b"p",
    )
    tiers = limits.config.login_account_failures
    try:
        for _ in range(2):
            await limits.record("login_account_failures", tiers, "account")
        before = [await limits.peek("login_account_failures", t, "account") for t in tiers]
        assert [d.remaining for d in before if d is not None] == [1, 3, 7]
        await limits.forget("login_account_failures", tiers, "account")
        after = [await limits.peek("login_account_failures", t, "account") for t in tiers]
        assert [d.remaining for d in after if d is not None] == [3, 5, 9]
    finally:
        await limits.close()


async def test_peek_many_answers_as_peek_does(make_settings: Callable[..., Settings]) -> None:
    """Several windows peeked at once (one Lua call on Redis) answer exactly what one peek
    each answers: counts, remaining and resets, empty windows included."""
    settings = make_settings(
        login_account_failure_limits="3 per 15 minutes; 5 per hour; 9 per day",
        login_ip_failure_limit="5 per 15 minutes",
    )
    limits = RateLimits.from_settings(settings, pepper=b"p")
    cfg = limits.config
    try:
        for _ in range(2):
            await limits.record("login_account_failures", cfg.login_account_failures, "acct")
        await limits.record("login_ip_failures", (cfg.login_ip_failures,), "192.0.2.9")
        checks: list[tuple[Any, Any, str]] = [
            ("login_ip_failures", cfg.login_ip_failures, "192.0.2.9"),
            *(("login_account_failures", t, "acct") for t in cfg.login_account_failures),
            ("login_account_failures", cfg.login_account_failures[0], "nobody"),
        ]
        together = await limits.peek_many(checks)
        one_by_one = [await limits.peek(rule, item, key) for rule, item, key in checks]
        assert [d.remaining for d in together if d is not None] == [4, 1, 3, 7, 3]
        for mine, theirs in zip(together, one_by_one, strict=True):
            assert mine is not None
            assert theirs is not None
            assert (mine.rule, mine.allowed, mine.limit, mine.remaining) == (
                theirs.rule,
                theirs.allowed,
                theirs.limit,
                theirs.remaining,
            )
            assert abs(mine.reset_after - theirs.reset_after) <= 1
    finally:
        await limits.close()


async def test_hit_shares_its_window_with_limits_own_calls(
    make_settings: Callable[..., Settings],
) -> None:
    """``hit`` (on Redis one Lua call counting and reading the window) writes and reads the
    window ``limits`` keeps: entries ``record`` adds (limits' acquire) count against ``hit``,
    ``peek`` (limits' window stats) sees ``hit``'s, and the Nth attempt is refused exactly."""
    limits = RateLimits.from_settings(make_settings(login_rate_limit="5/minute"), pepper=b"p")
    item = limits.config.login_email
    try:

        async def hit() -> tuple[bool, int]:
            decision = await limits.hit("login_email", item, "shared")
            assert decision is not None
            peeked = await limits.peek("login_email", item, "shared")
            assert peeked is not None
            assert peeked.remaining == decision.remaining
            assert abs(peeked.reset_after - decision.reset_after) <= 1
            assert 1 <= decision.retry_after <= 60
            return decision.allowed, decision.remaining

        await limits.record("login_email", (item,), "shared")
        await limits.record("login_email", (item,), "shared")
        assert await hit() == (True, 2)
        await limits.record("login_email", (item,), "shared")
        assert await hit() == (True, 0)
        assert await hit() == (False, 0)
        # limits' own acquire refuses too: the refused hit added no entry, the window is full.
        await limits.record("login_email", (item,), "shared")
        assert await hit() == (False, 0)
        # Another key's window is its own.
        other = await limits.hit("login_email", item, "other")
        assert other is not None
        assert (other.allowed, other.remaining) == (True, 4)
    finally:
        await limits.close()


@pytest.mark.redis
async def test_concurrent_hits_of_two_workers_never_over_admit(redis_available: str) -> None:
    """Two limiters (two workers, each its own Redis client and connections) hit one key
    together: exactly the limit gets through."""
    prefix = f"authkeep-test:{uuid.uuid4().hex[:12]}:"
    settings = Settings(
        env="test", redis_url=redis_available, redis_prefix=prefix, login_rate_limit="7/minute"
    )
    workers = [RateLimits.from_settings(settings, pepper=b"p") for _ in range(2)]
    try:
        item = workers[0].config.login_email
        decisions = await asyncio.gather(
            *(w.hit("login_email", item, "someone") for w in workers for _ in range(40))
        )
        assert sum(1 for d in decisions if d is not None and d.allowed) == 7
        peeked = await workers[1].peek("login_email", item, "someone")
        assert peeked is not None
        assert peeked.remaining == 0
    finally:
        for worker in workers:
            await worker.close()


async def test_peek_by_mark_answers_as_is_marked_then_peek_many(
    make_settings: Callable[..., Settings],
) -> None:
    """The mark and the windows it selects, read together (one Lua call on Redis), answer
    what ``is_marked`` and then ``peek_many`` of the selected windows answer."""
    settings = make_settings(
        login_account_failure_limits="3 per 15 minutes; 9 per day",
        login_ip_failure_limit="5 per 15 minutes",
    )
    limits = RateLimits.from_settings(settings, pepper=b"p")
    cfg = limits.config
    known = cfg.known_client
    assert known is not None
    tiers = cfg.login_account_failures
    try:
        await limits.record("login_ip_failures", (cfg.login_ip_failures,), "ip")
        for _ in range(2):
            await limits.record("login_account_failures", tiers, "acct")
        await limits.record("login_account_failures", tiers, "acct|ip")
        always: list[Any] = [("login_ip_failures", cfg.login_ip_failures, "ip")]
        pair: list[Any] = [("login_account_failures", t, "acct|ip") for t in tiers]
        account: list[Any] = [("login_account_failures", t, "acct") for t in tiers]
        mark: Any = ("login_known_client", known, "acct|ip")

        async def both() -> tuple[bool, list[tuple[str, bool, int, int]]]:
            marked, found = await limits.peek_by_mark(mark, always, pair, account)
            assert marked is await limits.is_marked(*mark)
            expected = await limits.peek_many([*always, *(pair if marked else account)])
            assert len(found) == len(expected)
            answers = []
            for mine, theirs in zip(found, expected, strict=True):
                assert mine is not None
                assert theirs is not None
                assert (mine.rule, mine.allowed, mine.remaining) == (
                    theirs.rule,
                    theirs.allowed,
                    theirs.remaining,
                )
                assert abs(mine.reset_after - theirs.reset_after) <= 1
                answers.append((mine.rule, mine.allowed, mine.limit, mine.remaining))
            return marked, answers

        assert await both() == (
            False,
            [
                ("login_ip_failures", True, 5, 4),
                ("login_account_failures", True, 3, 1),
                ("login_account_failures", True, 9, 7),
            ],
        )
        await limits.mark(*mark)  # limits' own fixed-window counter
        assert await both() == (
            True,
            [
                ("login_ip_failures", True, 5, 4),
                ("login_account_failures", True, 3, 2),
                ("login_account_failures", True, 9, 8),
            ],
        )
    finally:
        await limits.close()


async def test_forget_and_mark_clears_the_windows_and_sets_the_mark(
    make_settings: Callable[..., Settings],
) -> None:
    """What a successful login does, in one call on Redis: every window of each key forgotten
    (limits sees them empty), others untouched, and the mark set as ``mark`` sets it."""
    settings = make_settings(login_account_failure_limits="3 per 15 minutes; 9 per day")
    limits = RateLimits.from_settings(settings, pepper=b"p")
    cfg = limits.config
    known = cfg.known_client
    assert known is not None
    tiers = cfg.login_account_failures
    try:
        for key in ("acct", "acct|ip", "bystander"):
            await limits.record("login_account_failures", tiers, key)
        forgets: list[Any] = [
            ("login_account_failures", tiers, "acct|ip"),
            ("login_account_failures", tiers, "acct"),
        ]
        assert not await limits.is_marked("login_known_client", known, "acct|ip")
        await limits.forget_and_mark(forgets, ("login_known_client", known, "acct|ip"))
        assert await limits.is_marked("login_known_client", known, "acct|ip")
        assert not await limits.is_marked("login_known_client", known, "acct")

        async def remaining(key: str) -> list[int]:
            found = [await limits.peek("login_account_failures", t, key) for t in tiers]
            return [d.remaining for d in found if d is not None]

        assert await remaining("acct") == [3, 9]
        assert await remaining("acct|ip") == [3, 9]
        assert await remaining("bystander") == [2, 8]
        # Without a mark: the forgets alone.
        await limits.forget_and_mark([("login_account_failures", tiers, "bystander")])
        assert await remaining("bystander") == [3, 9]
    finally:
        await limits.close()


@pytest.mark.redis
async def test_forget_and_mark_keeps_the_marks_expiry_as_limits_does(redis_available: str) -> None:
    """The mark is limits' fixed-window counter: a later mark counts on the same window and
    does not extend it, whether set by ``mark`` or by ``forget_and_mark``."""
    prefix = f"authkeep-test:{uuid.uuid4().hex[:12]}:"
    settings = Settings(env="test", redis_url=redis_available, redis_prefix=prefix)
    limits = RateLimits.from_settings(settings, pepper=b"p")
    raw = Redis.from_url(redis_available)
    known = limits.config.known_client
    assert known is not None
    try:
        for key in ("by-mark", "by-forget-and-mark"):
            redis_key = f"{prefix}ratelimit:{known.key_for('login_known_client', key)}"

            async def set_mark(key: str = key) -> None:
                if key == "by-mark":
                    await limits.mark("login_known_client", known, key)
                else:
                    await limits.forget_and_mark([], ("login_known_client", known, key))

            await set_mark()
            # The item's whole period (30 days by default), set at creation.
            assert known.get_expiry() - 5 <= await raw.ttl(redis_key) <= known.get_expiry()
            await raw.expire(redis_key, 100)
            await set_mark()
            assert int(await raw.get(redis_key) or 0) == 2
            assert 0 < await raw.ttl(redis_key) <= 100
    finally:
        await raw.aclose()
        await limits.close()


async def test_record_all_counts_as_record_does_window_by_window(
    make_settings: Callable[..., Settings],
) -> None:
    """A failed login counted in one call (on Redis one script over the IP's window and the
    account's tiers) fills the same windows as one record per rule: each gains one entry per
    event, none more than its limit, and limits' own peek sees them."""
    settings = make_settings(
        login_account_failure_limits="3 per 15 minutes; 5 per day",
        login_ip_failure_limit="4 per 15 minutes",
    )
    limits = RateLimits.from_settings(settings, pepper=b"p")
    cfg = limits.config
    ip, account = f"203.0.113.{uuid.uuid4().int % 250}", uuid.uuid4().hex
    try:
        for _ in range(6):
            await limits.record_all(
                [
                    ("login_ip_failures", (cfg.login_ip_failures,), ip),
                    ("login_account_failures", cfg.login_account_failures, account),
                ]
            )
        windows = [("login_ip_failures", cfg.login_ip_failures, ip)] + [
            ("login_account_failures", tier, account) for tier in cfg.login_account_failures
        ]
        remaining = [
            (d.limit, d.remaining)
            for d in [await limits.peek(rule, item, key) for rule, item, key in windows]
            if d is not None
        ]
        assert remaining == [(4, 0), (3, 0), (5, 0)]
        # Nothing counted twice or for another key.
        other = await limits.peek("login_ip_failures", cfg.login_ip_failures, "198.51.100.1")
        assert other is not None
        assert other.remaining == 4
    finally:
        await limits.close()
