"""Rate limits on the ``limits`` library, shared by the HTTP layer and the services.

Every rule is a ``limits`` item read from settings (``limits`` notation, e.g. ``5/minute``);
no window arithmetic is written here. Rules, their key and what happens when the storage
(Redis) does not answer:

===========================  ==================================  =========================
rule                         counted per                         storage unreachable
===========================  ==================================  =========================
``global``                   user id (verified token) or IP      open: allowed, logged
``login_email``              keyed hash of the normalised email  closed: 503
``login_ip_failures``        client IP (failed logins only)      closed: 503
``login_account_failures``   account (progressive tiers)         closed: 503
``register``                 client IP                           closed: 503
``refresh``                  client IP                           open: allowed, logged
``password_change``          user id                             closed: 503
``password_strength``        client IP                           closed: 503
``mail_recipient``           keyed hash of the recipient address closed: 503
``mail_ip``                  client IP (requests that send mail) closed: 503
``mfa``                      user id, and client IP (each code)  closed: 503
``export``                   user id                             closed: 503
===========================  ==================================  =========================

Limits that stand between an attacker and a password check (login, password change), a
second-factor code (``mfa``: a million codes fall to an unlimited guesser in days) or an
enumeration oracle (register answers 409 for a taken email) fail closed, and so does the
password-strength meter's (each call costs zxcvbn work, and the meter is useless while
register refuses anyway); the others fail open, because refusing every request while Redis
is down would turn a cache outage into a full outage. See ``docs/rate-limits.md`` for the
numbers and why. The mail limits fail closed too: without their counters, the open mail flows
(register, forgot-password, resend) would let anyone flood any inbox from our server.

``mail_recipient`` is counted before the service knows whether the address has an account,
and the same way either way; when it is spent the email is skipped, never the answer (a 429
keyed on an address would tell anyone that it was mailed recently, e.g. that its owner just
asked for a reset).

Strategies: the global limit, hit by every request, uses the sliding-window counter (two
counters per key); on Redis it is batched per event-loop turn and partly answered from
memory, within a stated overshoot (:mod:`authkeep.services.shared_window`). The others use
the moving window, exact under any concurrency (an atomic Lua script on Redis, a lock in
memory), so concurrent logins across workers can never over-admit.

Decisions are reported, not rendered: a :class:`LimitReport` collects what a request met and
the HTTP layer turns the tightest into ``RateLimit-*`` headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import limits
import structlog
from cryptography.hazmat.primitives import serialization
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from limits.util import WindowStats
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from authkeep import metrics
from authkeep.errors import DependencyUnavailable, RateLimited
from authkeep.security.keys import KeyRing
from authkeep.services.shared_window import SharedWindowLimit
from authkeep.settings import Settings
from authkeep.tls import redis_tls_options

__all__ = [
    "LOGIN_UNAVAILABLE",
    "Decision",
    "LimitConfig",
    "LimitReport",
    "LimiterUnavailable",
    "RateLimits",
    "RouteRule",
    "Rule",
    "pepper_from",
]

log = structlog.get_logger("authkeep.rate_limits")

Rule = Literal[
    "global",
    "login_email",
    "login_ip_failures",
    "login_account_failures",
    "login_known_client",
    "register",
    "refresh",
    "password_change",
    "password_strength",
    "mail_recipient",
    "mail_ip",
    "mfa",
    "export",
]
RouteRule = Literal["register", "refresh", "password_change", "password_strength"]

LOGIN_UNAVAILABLE = "Login temporarily unavailable: rate limiter unreachable"
_UNAVAILABLE = "Temporarily unavailable: rate limiter unreachable"
_FAIL_OPEN: frozenset[Rule] = frozenset({"global", "refresh"})
_LOGIN_RULES: frozenset[Rule] = frozenset(
    {"login_email", "login_ip_failures", "login_account_failures", "login_known_client"}
)

# A dead Redis must cost milliseconds: a refused connection fails at once, a black-holed one
# after this timeout, and then the breaker below skips Redis for RETRY_INTERVAL.
REDIS_TIMEOUT = 0.5
RETRY_INTERVAL = 1.0

# Everything a storage call can raise when Redis is unreachable or misbehaving. Some limits
# methods wrap errors in StorageError, others let redis-py's through.
_STORAGE_ERRORS = (RedisError, StorageError, OSError, TimeoutError)

T = TypeVar("T")
_Check = tuple[Rule, RateLimitItem, str]

# limits' moving_window.lua as a Lua function: the oldest entry of a window still inside it
# (newest entries first, so a binary search over the first ``limit`` for the last one at or
# after ``target``) and how many are inside; '' and 0 for an empty window. The scripts below
# prepend it, so that each answers in one call what limits answers in one call per window.
_WINDOW_LUA = """
local function window(key, target, limit)
    local low, high, result = 0, limit - 1, nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local value = tonumber(redis.call('lindex', key, mid))
        if value and value >= target then
            result = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    if result then
        return redis.call('lindex', key, result), result + 1
    end
    return '', 0
end
"""

# Several windows in one call: KEYS[i] with ARGV[2i-1] (the oldest timestamp still inside its
# window) and ARGV[2i] (its limit). One comma-separated string answers: per key the oldest
# entry (empty when none) and the count.
_PEEK_SCRIPT = (
    _WINDOW_LUA
    + """
local out = {}
for i = 1, #KEYS do
    local oldest, count = window(KEYS[i], tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]))
    out[#out + 1] = oldest
    out[#out + 1] = tostring(count)
end
return table.concat(out, ',')
"""
)

# A mark and the windows it selects, in one call. KEYS[1] is the mark (limits' fixed-window
# counter: set once it holds ARGV[1]); then the windows, each with two ARGV from ARGV[4] on
# as in _PEEK_SCRIPT: the first ARGV[2] always peeked, the next ARGV[3] only when the mark is
# set, the rest only when it is not. Answers '1' or '0' (the mark), then the peeked windows as
# _PEEK_SCRIPT does.
_PEEK_BY_MARK_SCRIPT = (
    _WINDOW_LUA
    + """
local marked = tonumber(redis.call('get', KEYS[1]) or '0') >= tonumber(ARGV[1])
local always, when_marked = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {marked and '1' or '0'}
for w = 1, #KEYS - 1 do
    if w <= always or marked == (w <= always + when_marked) then
        local target, limit = tonumber(ARGV[2 + 2 * w]), tonumber(ARGV[3 + 2 * w])
        local oldest, count = window(KEYS[w + 1], target, limit)
        out[#out + 1] = oldest
        out[#out + 1] = tostring(count)
    end
end
return table.concat(out, ',')
"""
)

# limits' acquire_moving_window.lua for one entry (KEYS[1]; ARGV: timestamp, limit, expiry),
# then its moving_window.lua on the same key at the same timestamp: what
# MovingWindowRateLimiter's hit and get_window_stats do in two calls, on the same list (one
# timestamp per entry, newest first, trimmed to the limit, expiring with the window), so that
# limits' own calls see every entry. Answers the outcome ('1' or '0'), the oldest entry still
# inside the window and the count.
_ACQUIRE_LUA = """
local function acquire(key, timestamp, limit, expiry)
    if limit < 1 then
        return false
    end
    local entry = redis.call('lindex', key, limit - 1)
    if entry and tonumber(entry) >= timestamp - expiry then
        return false
    end
    redis.call('lpush', key, timestamp)
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
    return true
end
"""
_HIT_SCRIPT = (
    _WINDOW_LUA
    + _ACQUIRE_LUA
    + """
local key = KEYS[1]
local timestamp = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local allowed = acquire(key, timestamp, limit, expiry) and '1' or '0'
local oldest, count = window(key, timestamp - expiry, limit)
return table.concat({allowed, oldest, tostring(count)}, ',')
"""
)

# Events (failed logins) counted against several windows in one call: the acquire above on
# KEYS[i] with ARGV[2i] (limit) and ARGV[2i+1] (expiry), all at ARGV[1]; what record does
# with one limits call per window.
_RECORD_SCRIPT = (
    _ACQUIRE_LUA
    + """
local timestamp = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    acquire(key, timestamp, tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
end
return #KEYS
"""
)

# Windows cleared and a mark set in one call: DEL of every key but the last, then limits'
# incr_expire.lua on the last (ARGV: expiry, amount; the expiry is set when the counter is
# created, never extended), as forget and mark do.
_FORGET_AND_MARK_SCRIPT = """
if #KEYS > 1 then
    redis.call('del', unpack(KEYS, 1, #KEYS - 1))
end
local amount = tonumber(ARGV[2])
local current = redis.call('incrby', KEYS[#KEYS], amount)
if tonumber(current) == amount then
    redis.call('expire', KEYS[#KEYS], ARGV[1])
end
return current
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """One rule's answer for one key: allowed or not, and the quota left."""

    rule: Rule
    allowed: bool
    limit: int
    remaining: int
    reset_after: int
    """Whole seconds until the window frees a slot (0 when nothing is counted)."""

    @property
    def retry_after(self) -> int:
        """Seconds a refused client should wait (at least 1)."""
        return max(1, self.reset_after)

    def refusal(self, detail: str | None = None, *, key: str | None = None) -> RateLimited:
        """The domain error for this (refused) decision."""
        return RateLimited(self.retry_after, detail, limit=self.rule, key=key)


class LimitReport:
    """The decisions one request met, so that the HTTP layer can report the tightest.

    A refused decision beats any allowed one; among the rest the one with the least quota
    left (then the longest wait) wins — that is what a client must respect.
    """

    __slots__ = ("tightest",)

    def __init__(self) -> None:
        self.tightest: Decision | None = None

    def note(self, decision: Decision | None) -> None:
        """Remember ``decision`` if it is tighter than what was seen so far."""
        if decision is None:
            return
        current = self.tightest
        if current is None or _tightness(decision) < _tightness(current):
            self.tightest = decision


def _tightness(decision: Decision) -> tuple[bool, int, int]:
    return (decision.allowed, decision.remaining, -decision.reset_after)


class LimiterUnavailable(DependencyUnavailable):
    """The rate-limit storage does not answer and this rule fails closed."""

    detail = _UNAVAILABLE


def _parse_one(value: str) -> RateLimitItem:
    return limits.parse(value)


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """The rules, parsed from settings."""

    enabled: bool
    global_limit: RateLimitItem
    login_email: RateLimitItem
    login_ip_failures: RateLimitItem
    login_account_failures: tuple[RateLimitItem, ...]
    known_client: RateLimitItem | None
    register: RateLimitItem
    refresh: RateLimitItem
    password_change: RateLimitItem
    password_strength: RateLimitItem
    mail_recipient: RateLimitItem
    mail_ip: RateLimitItem
    mfa: RateLimitItem
    export: RateLimitItem

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitConfig:
        """Parse every limit of ``settings`` (they were validated when loaded)."""
        days = settings.login_known_client_days
        return cls(
            enabled=settings.rate_limit_enabled,
            global_limit=limits.RateLimitItemPerMinute(settings.rate_limit_per_minute),
            login_email=_parse_one(settings.login_rate_limit),
            login_ip_failures=_parse_one(settings.login_ip_failure_limit),
            login_account_failures=tuple(limits.parse_many(settings.login_account_failure_limits)),
            known_client=limits.RateLimitItemPerDay(1, days) if days else None,
            register=_parse_one(settings.register_rate_limit),
            refresh=_parse_one(settings.refresh_rate_limit),
            password_change=_parse_one(settings.password_change_rate_limit),
            password_strength=_parse_one(settings.password_strength_rate_limit),
            mail_recipient=_parse_one(settings.mail_recipient_rate_limit),
            mail_ip=_parse_one(settings.mail_ip_rate_limit),
            mfa=_parse_one(settings.mfa_rate_limit),
            export=_parse_one(settings.export_rate_limit),
        )

    def route(self, rule: RouteRule) -> RateLimitItem:
        """The item of a per-route rule."""
        item: RateLimitItem = getattr(self, rule)
        return item


def pepper_from(keys: KeyRing) -> bytes:
    """Secret bytes, shared by every worker, for hashing limit keys (the signing key's).

    Limit keys land in Redis, where anyone with access to the cache could read them; hashing
    an email with a server secret keeps the address out of it, and unlike a plain hash it
    cannot be reversed by hashing a list of known addresses.
    """
    material = keys.current.signing_material
    if isinstance(material, bytes):
        return material
    return bytes(
        material.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _redis_storage_uri(url: str) -> str:
    # limits picks its client from the scheme; a bare unix:// would select valkey.
    if url.startswith("unix://"):
        return "redis+unix://" + url.removeprefix("unix://")
    return url


def limiter_redis(url: str, *, ca_file: Path | None = None) -> Redis:
    """The limiter's own Redis client: short timeouts, one immediate retry; ``rediss://`` is
    verified TLS (``ca_file``: AUTHKEEP_REDIS_SSL_CA_FILE), as the service's own client.

    The retry lets a pooled connection that died with a Redis restart be replaced at once
    instead of failing one request; the short timeouts bound what a black-holed Redis costs.
    """
    return Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
        **redis_tls_options(url, ca_file),
    )


class RateLimits:
    """Every rate limit of one authkeep instance, with its storage and failure policy."""

    def __init__(
        self,
        config: LimitConfig,
        storage: Storage | None,
        *,
        global_storage: Storage | None = None,
        pepper: bytes = b"",
        client: Redis | None = None,
        redis_key_prefix: str | None = None,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.config = config
        self._pepper = pepper
        self._client = client
        self._redis_key_prefix = redis_key_prefix
        self._peek_script = client.register_script(_PEEK_SCRIPT) if client is not None else None
        self._peek_by_mark_script = (
            client.register_script(_PEEK_BY_MARK_SCRIPT) if client is not None else None
        )
        self._hit_script = client.register_script(_HIT_SCRIPT) if client is not None else None
        self._record_script = client.register_script(_RECORD_SCRIPT) if client is not None else None
        self._forget_and_mark_script = (
            client.register_script(_FORGET_AND_MARK_SCRIPT) if client is not None else None
        )
        self._retry_interval = retry_interval
        self._down_until = 0.0
        self._down = False
        self._storages: list[Storage] = []
        self._moving: RateLimiter | None = None
        self._fixed: RateLimiter | None = None
        self._sliding: RateLimiter | None = None
        if config.enabled and storage is not None:
            shared = global_storage if global_storage is not None else storage
            self._storages = [storage] if shared is storage else [storage, shared]
            self._moving = MovingWindowRateLimiter(storage)
            self._fixed = FixedWindowRateLimiter(storage)
            self._sliding = SlidingWindowCounterRateLimiter(shared)
        # On Redis the global limit, met by every request, is batched and partly answered
        # from memory (services/shared_window.py: same algorithm and keys, bounded overshoot).
        self._shared_global: SharedWindowLimit | None = None
        if self._sliding is not None and client is not None and redis_key_prefix is not None:
            self._shared_global = SharedWindowLimit(
                client,
                key_prefix=redis_key_prefix,
                item=config.global_limit,
                namespace="global",
                on_error=self._mark_down,
            )

    @classmethod
    def from_settings(cls, settings: Settings, *, pepper: bytes) -> RateLimits:
        """Redis storage when ``AUTHKEEP_REDIS_URL`` is set (shared by every worker), else
        memory (this process only); nothing at all when rate limiting is disabled."""
        config = LimitConfig.from_settings(settings)
        if not config.enabled:
            return cls(config, None, pepper=pepper)
        if settings.redis_url is None:
            # Two memory storages: limits' in-memory expiry pass walks every moving-window
            # key, so the many global keys (one per client) are kept out of its way.
            return cls(config, MemoryStorage(), global_storage=MemoryStorage(), pepper=pepper)
        url = settings.redis_url.get_secret_value()
        client = limiter_redis(url, ca_file=settings.redis_ssl_ca_file)
        # Share our client's pool: redis-py then uses its timeouts and retry policy.
        options = cast(dict[str, Any], {"connection_pool": client.connection_pool})
        key_prefix = settings.redis_prefix + "ratelimit"
        storage = RedisStorage(
            _redis_storage_uri(url), implementation="redispy", key_prefix=key_prefix, **options
        )
        return cls(config, storage, pepper=pepper, client=client, redis_key_prefix=key_prefix)

    @property
    def enabled(self) -> bool:
        """False when ``AUTHKEEP_RATE_LIMIT_ENABLED=false``: every check allows."""
        return self._moving is not None

    def hashed(self, value: str) -> str:
        """A keyed hash of ``value`` (an email key): stable across workers, not reversible
        without the server's signing key."""
        return hmac.new(self._pepper, value.encode(), hashlib.sha256).hexdigest()[:32]

    async def close(self) -> None:
        """Release the storage (memory timers, the Redis pool)."""
        if self._shared_global is not None:
            await self._shared_global.close()
        for storage in self._storages:
            timer = getattr(storage, "timer", None)
            if timer is not None and not timer.done():
                timer.cancel()
        if self._client is not None:
            await self._client.aclose()

    # -- storage calls, with the failure policy -------------------------------------------

    async def _call(self, rule: Rule, operation: Callable[[], Awaitable[T]]) -> T | None:
        """Run a storage operation; None when the storage is down and ``rule`` fails open,
        LimiterUnavailable when it fails closed."""
        if self._down and time.monotonic() < self._down_until:
            self._unavailable(rule)
            return None
        try:
            result = await operation()
        except _STORAGE_ERRORS as exc:
            self._mark_down(exc)
            self._unavailable(rule)
            return None
        if self._down:
            self._down = False
            log.info("rate_limiter_recovered")
        return result

    def _mark_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_interval
        if not self._down:
            self._down = True
            # Once per outage, not per request: an outage must not also flood the log.
            log.warning(
                "rate_limiter_unavailable",
                error=type(exc).__name__,
                policy="global and refresh limits allow (fail open); login, register, "
                "password-change, password-strength, mail, MFA and export limits refuse with 503 "
                "(fail closed)",
            )

    def _unavailable(self, rule: Rule) -> None:
        """Count a decision taken without the storage; raise if ``rule`` fails closed."""
        if rule in _FAIL_OPEN:
            metrics.RATE_LIMIT_STORAGE_ERRORS.labels(rule, "allowed").inc()
            return
        metrics.RATE_LIMIT_STORAGE_ERRORS.labels(rule, "refused").inc()
        raise LimiterUnavailable(LOGIN_UNAVAILABLE if rule in _LOGIN_RULES else _UNAVAILABLE)

    @staticmethod
    def _decision(rule: Rule, item: RateLimitItem, allowed: bool, stats: Any) -> Decision:
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        return Decision(rule, allowed, item.amount, max(0, int(stats.remaining)), reset_after)

    @classmethod
    def _window_decisions(
        cls, checks: Sequence[_Check], parts: Sequence[bytes], now: float
    ) -> list[Decision | None]:
        """The decisions of _WINDOW_LUA's answers (oldest entry, count: two parts a check)."""
        found: list[Decision | None] = []
        for index, (rule, item, _) in enumerate(checks):
            oldest, count = parts[2 * index], int(parts[2 * index + 1])
            # As limits' MovingWindowRateLimiter.get_window_stats: the window resets one
            # expiry after its oldest entry (now, when empty).
            start = float(oldest) if oldest else now
            stats = WindowStats(start + item.get_expiry(), item.amount - count)
            found.append(cls._decision(rule, item, stats.remaining > 0, stats))
        return found

    def _redis_key(self, prefix: str, check: _Check) -> str:
        # limits' own key for the window: its Redis storage prefixes ``item.key_for(...)``
        # with ``<prefix>:`` (tests/services/test_rate_limits.py checks both see the same).
        rule, item, key = check
        return f"{prefix}:{item.key_for(rule, key)}"

    async def _hit(
        self, limiter: RateLimiter, rule: Rule, item: RateLimitItem, key: str
    ) -> Decision | None:
        async def operation() -> Decision:
            allowed = await limiter.hit(item, rule, key)
            stats = await limiter.get_window_stats(item, rule, key)
            return self._decision(rule, item, allowed, stats)

        return await self._counted(rule, operation)

    async def _hit_redis(
        self, script: AsyncScript, prefix: str, rule: Rule, item: RateLimitItem, key: str
    ) -> Decision | None:
        """:meth:`_hit` on the moving window in one Redis call (_HIT_SCRIPT) instead of two."""
        keys = [self._redis_key(prefix, (rule, item, key))]

        async def operation() -> Decision:
            now = time.time()
            expiry = item.get_expiry()
            reply: bytes = await script(keys=keys, args=[now, item.amount, expiry])
            allowed, oldest, count = reply.split(b",")
            start = float(oldest) if oldest else now
            stats = WindowStats(start + expiry, item.amount - int(count))
            return self._decision(rule, item, allowed == b"1", stats)

        return await self._counted(rule, operation)

    async def _counted(
        self, rule: Rule, operation: Callable[[], Awaitable[Decision]]
    ) -> Decision | None:
        decision = await self._call(rule, operation)
        if decision is not None and not decision.allowed:
            metrics.RATE_LIMITED.labels(rule).inc()
        return decision

    # -- what callers use -----------------------------------------------------------------

    async def hit_global(self, key: str) -> Decision | None:
        """Count one request against the global limit; None when not limited (disabled, or
        the storage is down: this limit fails open)."""
        if self._sliding is None:
            return None
        shared = self._shared_global
        if shared is None:
            return await self._hit(self._sliding, "global", self.config.global_limit, key)
        if self._down and time.monotonic() < self._down_until:
            self._unavailable("global")
            return None
        # Most requests of a busy key are answered here, without an await.
        answer = shared.hit_locally(key)
        if answer is None:
            answer = await self._call("global", partial(shared.hit, key))
            if answer is None:
                return None
        decision = Decision(
            "global", answer.allowed, shared.limit, answer.remaining, answer.reset_after
        )
        if not answer.allowed:
            metrics.RATE_LIMITED.labels("global").inc()
        return decision

    async def hit(self, rule: Rule, item: RateLimitItem, key: str) -> Decision | None:
        """Count one attempt against a moving-window rule (None when disabled or failing
        open); LimiterUnavailable when the storage is down and ``rule`` fails closed."""
        if self._moving is None:
            return None
        script, prefix = self._hit_script, self._redis_key_prefix
        if script is not None and prefix is not None:
            # One round trip for the count and the window's state (the RateLimit-* headers).
            return await self._hit_redis(script, prefix, rule, item, key)
        return await self._hit(self._moving, rule, item, key)

    async def peek(self, rule: Rule, item: RateLimitItem, key: str) -> Decision | None:
        """The state of a moving-window rule without counting anything."""
        moving = self._moving
        if moving is None:
            return None

        async def operation() -> Decision:
            stats = await moving.get_window_stats(item, rule, key)
            return self._decision(rule, item, stats.remaining > 0, stats)

        return await self._call(rule, operation)

    async def peek_all(self, checks: Iterable[tuple[Rule, RateLimitItem, str]]) -> list[Decision]:
        """:meth:`peek` several rules (on Redis in one round trip: :meth:`peek_many`)."""
        found = await self.peek_many(list(checks))
        return [decision for decision in found if decision is not None]

    async def peek_many(
        self, checks: Sequence[tuple[Rule, RateLimitItem, str]]
    ) -> list[Decision | None]:
        """:meth:`peek` several moving-window rules, answers in the same order. On Redis one
        Lua call answers them all (a login peeks four windows before its password check:
        one round trip instead of four); LimiterUnavailable when the storage is down and
        one of the rules fails closed."""
        script, prefix = self._peek_script, self._redis_key_prefix
        if self._moving is None or script is None or prefix is None or len(checks) < 2:
            return [await self.peek(rule, item, key) for rule, item, key in checks]
        keys = [f"{prefix}:{item.key_for(rule, key)}" for rule, item, key in checks]

        async def operation() -> list[Decision | None]:
            now = time.time()
            args: list[float] = []
            for _, item, _ in checks:
                args += [now - item.get_expiry(), item.amount]
            reply: bytes = await script(keys=keys, args=args)
            return self._window_decisions(checks, reply.split(b","), now)

        # The strictest policy among the rules decides when Redis does not answer.
        closed = [rule for rule, _, _ in checks if rule not in _FAIL_OPEN]
        answer = await self._call(closed[0] if closed else checks[0][0], operation)
        return answer if answer is not None else [None] * len(checks)

    async def peek_by_mark(
        self,
        mark: _Check,
        always: Sequence[_Check],
        if_marked: Sequence[_Check],
        otherwise: Sequence[_Check],
    ) -> tuple[bool, list[Decision | None]]:
        """Whether ``mark`` is set (:meth:`is_marked`), and :meth:`peek_many` of ``always``
        followed by ``if_marked`` or ``otherwise`` accordingly. On Redis one Lua call reads
        the mark and the windows it selects (a login: one round trip instead of two);
        LimiterUnavailable when the storage is down and one of the rules fails closed."""
        script, prefix = self._peek_by_mark_script, self._redis_key_prefix
        if self._moving is None or script is None or prefix is None:
            marked = await self.is_marked(*mark)
            chosen = if_marked if marked else otherwise
            return marked, await self.peek_many([*always, *chosen])
        windows = [*always, *if_marked, *otherwise]
        keys = [self._redis_key(prefix, check) for check in (mark, *windows)]

        async def operation() -> tuple[bool, list[Decision | None]]:
            now = time.time()
            args: list[float] = [mark[1].amount, len(always), len(if_marked)]
            for _, item, _ in windows:
                args += [now - item.get_expiry(), item.amount]
            reply: bytes = await script(keys=keys, args=args)
            parts = reply.split(b",")
            marked = parts[0] == b"1"
            chosen = [*always, *(if_marked if marked else otherwise)]
            return marked, self._window_decisions(chosen, parts[1:], now)

        # The strictest policy among the rules decides when Redis does not answer; the mark's
        # rule first, so an outage is counted under the rule the look-up alone would name.
        rules = [mark[0], *(rule for rule, _, _ in windows)]
        closed = [rule for rule in rules if rule not in _FAIL_OPEN]
        answer = await self._call(closed[0] if closed else rules[0], operation)
        if answer is None:
            return False, [None] * (len(always) + len(otherwise))
        return answer

    async def record(self, rule: Rule, items: Sequence[RateLimitItem], key: str) -> None:
        """Count an event (a failed login) against ``items``; never raises — the answer to
        the request is already decided, and a missing count is the lesser evil."""
        await self.record_all([(rule, items, key)])

    async def record_all(self, counts: Sequence[tuple[Rule, Sequence[RateLimitItem], str]]) -> None:
        """:meth:`record` several (rule, windows, key) at once: on Redis in one call (a
        failed login counts against the client IP's window and the account's tiers: one
        round trip instead of four). Never raises."""
        moving = self._moving
        checks = [(rule, item, key) for rule, items, key in counts for item in items]
        if moving is None or not checks:
            return
        script, prefix = self._record_script, self._redis_key_prefix
        if script is not None and prefix is not None:
            keys = [self._redis_key(prefix, check) for check in checks]

            async def together() -> int:
                args: list[float] = [time.time()]
                for _, item, _ in checks:
                    args += [item.amount, item.get_expiry()]
                return int(await script(keys=keys, args=args))

            with contextlib.suppress(LimiterUnavailable):
                await self._call(checks[0][0], together)
            return
        for rule, item, key in checks:

            async def operation(
                rule: Rule = rule, item: RateLimitItem = item, key: str = key
            ) -> bool:
                return await moving.hit(item, rule, key)

            try:
                await self._call(rule, operation)
            except LimiterUnavailable:
                return

    async def forget(self, rule: Rule, items: Sequence[RateLimitItem], key: str) -> None:
        """Clear ``key``'s windows for ``items`` (never raises); on Redis in one ``DEL``."""
        moving = self._moving
        if moving is None:
            return
        client, prefix = self._client, self._redis_key_prefix
        if client is not None and prefix is not None and items:
            # One round trip instead of one per tier (a successful login forgets up to six
            # windows). The keys are limits' own for the moving window: its storage prefixes
            # ``item.key_for(...)`` with ``<prefix>:`` (tests/services/test_rate_limits.py
            # checks that limits then sees the windows empty).
            keys = [f"{prefix}:{item.key_for(rule, key)}" for item in items]

            async def delete() -> int:
                return int(await client.delete(*keys))

            with contextlib.suppress(LimiterUnavailable):
                await self._call(rule, delete)
            return
        for item in items:

            async def operation(item: RateLimitItem = item) -> bool:
                await moving.clear(item, rule, key)
                return True

            try:
                await self._call(rule, operation)
            except LimiterUnavailable:
                return

    async def mark(self, rule: Rule, item: RateLimitItem, key: str) -> None:
        """Remember ``key`` for ``item``'s period (a one-slot fixed window used as an expiring
        marker); never raises."""
        fixed = self._fixed
        if fixed is None:
            return

        async def operation() -> bool:
            return await fixed.hit(item, rule, key)

        try:
            await self._call(rule, operation)
        except LimiterUnavailable:
            return

    async def forget_and_mark(
        self,
        forgets: Sequence[tuple[Rule, Sequence[RateLimitItem], str]],
        mark: _Check | None = None,
    ) -> None:
        """:meth:`forget` each of ``forgets`` (rule, items, key), then :meth:`mark` ``mark``
        (a successful login: its failures forgotten, its client address remembered). On Redis
        in one round trip (one Lua call: DEL, then limits' own counter update); never
        raises."""
        client, prefix = self._client, self._redis_key_prefix
        script = self._forget_and_mark_script
        if self._moving is None or client is None or script is None or prefix is None:
            for rule, items, key in forgets:
                await self.forget(rule, items, key)
            if mark is not None:
                await self.mark(*mark)
            return
        keys = [
            self._redis_key(prefix, (rule, item, key))
            for rule, items, key in forgets
            for item in items
        ]
        if mark is not None:
            keys.append(self._redis_key(prefix, mark))
        if not keys:
            return

        async def operation() -> int:
            if mark is None:
                return int(await client.delete(*keys))
            # As limits' FixedWindowRateLimiter.hit: one unit, the expiry set at creation.
            return int(await script(keys=keys, args=[mark[1].get_expiry(), 1]))

        rule = forgets[0][0] if forgets else cast(_Check, mark)[0]
        with contextlib.suppress(LimiterUnavailable):
            await self._call(rule, operation)

    async def is_marked(self, rule: Rule, item: RateLimitItem, key: str) -> bool:
        """Whether :meth:`mark` was called for ``key`` within ``item``'s period."""
        fixed = self._fixed
        if fixed is None:
            return False

        async def operation() -> bool:
            return not await fixed.test(item, rule, key)

        return bool(await self._call(rule, operation))

    async def enforce(
        self, rule: RouteRule, key: str, report: LimitReport | None = None
    ) -> Decision | None:
        """Count one request against a per-route rule; RateLimited when over the limit."""
        decision = await self.hit(rule, self.config.route(rule), key)
        if report is not None:
            report.note(decision)
        if decision is not None and not decision.allowed:
            log.info("rate_limited", rule=rule, retry_after=decision.retry_after)
            raise decision.refusal(key=key)
        return decision
