"""A sliding-window counter in Redis that costs a request almost nothing: the global limit.

The global limit (``AUTHKEEP_RATE_LIMIT_PER_MINUTE``) is met by every request, so on Redis
its price is paid on every read. ``limits`` asks Redis twice per request (the hit, then the
window's state for the headers), each a Lua round trip through redis-py: that halved the
throughput of an authenticated read. :class:`SharedWindowLimit` keeps ``limits``' algorithm,
keys and arithmetic (the sliding-window counter: two counters per key, the previous window
weighted by the share of it still inside the last minute), and changes only *when* Redis is
asked:

1. **One round trip for many requests.** Every request that must ask Redis joins a batch;
   the batch leaves on the next event-loop turn as ONE call of a Lua script that counts and
   answers for every key in it (the revocation check batches its ``MGET`` the same way). The
   script does for each key exactly what ``limits``' ``acquire_sliding_window.lua`` and
   ``sliding_window.lua`` do together, atomically, so the headers come with the hit.
2. **A small local allowance per key.** A worker that learnt a key's window from Redis less
   than :data:`FRESH_SECONDS` ago may admit up to ``block`` further requests of that key
   without asking (while the window, as last seen, has room for them); they are added to
   Redis in the background, every :data:`FLUSH_SECONDS`, all keys in one call. ``block`` is
   1 % of the limit, at most :data:`MAX_BLOCK`: 0 below a limit of 100, so small limits
   (the default 60 a minute) are exact — every request is counted by Redis before it is
   answered.
3. **Refusals from memory.** Once Redis said a key's window is full, this worker refuses
   that key without asking until the moment the window frees a slot (the ``Retry-After`` it
   announced). A client flooding past its limit then costs a dictionary look-up.

**The bound.** Each worker holds at most ``block`` admitted requests per key that Redis has
not counted yet, and admits locally only while its last answer from Redis, minus those,
leaves room. So with ``W`` workers (processes, on any number of hosts) sharing one Redis,
the requests admitted for a key in a window are at most ``limit + W × block``, i.e. at most
``W`` % over (never more than ``W × MAX_BLOCK``); and no request is refused while Redis has
room for it — a refusal is always Redis's answer, at most as old as its own ``Retry-After``
— so when demand exceeds the limit, at least ``limit`` are admitted. With one worker the
count is exact. ``tests/services/test_shared_window.py`` proves both against a real Redis
with four independent limiters.

**When Redis fails,** :meth:`SharedWindowLimit.hit` raises what redis-py raised (the caller,
:class:`~authkeep.services.rate_limits.RateLimits`, applies the global limit's policy: fail
open, logged once); a background flush that fails reports to ``on_error`` and forgets every
local window, so that nothing is admitted from memory until Redis answers again. Requests
admitted locally but not yet counted are then lost from the count, as every hit during an
outage is.

The script touches several keys in one call: it needs a single Redis (or a single shard),
as the revocation ``MGET`` already does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

from limits import RateLimitItem
from redis.asyncio import Redis

__all__ = ["FLUSH_SECONDS", "FRESH_SECONDS", "MAX_BLOCK", "SharedWindowLimit", "WindowAnswer"]

FRESH_SECONDS = 1.0
"""How long a window read from Redis may be used to admit requests locally."""
FLUSH_SECONDS = 0.1
"""How often locally admitted requests are added to Redis (one call for every key); sooner
for a key once half its block is owed."""
MAX_BLOCK = 100
"""The most requests of one key that one worker admits before Redis has counted them."""
BLOCK_SHARE = 100
"""``block`` = limit // BLOCK_SHARE (1 %), capped at :data:`MAX_BLOCK`."""

# For each key (KEYS: previous window, current window; ARGV after the expiry in seconds and
# the limit: requests already admitted here, requests waiting for an answer), in one atomic
# call: limits' acquire_sliding_window.lua (shift an expired window, weigh, count) and
# sliding_window.lua (the state, for the headers). Admitted requests are added
# unconditionally (they were answered already); waiting ones only while the weighted count
# has room — each exactly as limits' acquire would answer one at a time. Per key it answers
# granted, previous count, previous ttl ms, current count, current ttl ms: all in ONE string,
# comma-separated (redis-py's pure-Python parser reads an array element by element, which
# cost more than the rest of the batch).
_SCRIPT = """
local expiry = tonumber(ARGV[1]) * 1000
local limit = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS, 2 do
    local previous_key = KEYS[i]
    local current_key = KEYS[i + 1]
    local add = tonumber(ARGV[i + 2])
    local want = tonumber(ARGV[i + 3])
    local current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous_key)) or 0
    local previous_ttl = tonumber(redis.call('pttl', previous_key))
    local current_count = tonumber(redis.call('get', current_key)) or 0
    if previous_ttl < 0 then
        previous_ttl = 0
    end
    local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count + add
    local granted = math.max(0, math.min(want, limit - weighted))
    local total = add + granted
    if total > 0 then
        if redis.call('exists', current_key) == 1 then
            redis.call('incrby', current_key, total)
        else
            redis.call('set', current_key, total, 'PX', expiry * 2)
        end
    end
    current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl < 0 then
        current_ttl = 0
    end
    out[#out + 1] = granted
    out[#out + 1] = previous_count
    out[#out + 1] = previous_ttl
    out[#out + 1] = current_count + total
    out[#out + 1] = current_ttl
end
return table.concat(out, ',')
"""


class WindowAnswer:
    """One decision: allowed or not, the quota left and whole seconds until a slot frees."""

    __slots__ = ("allowed", "remaining", "reset_after")

    def __init__(self, allowed: bool, remaining: int, reset_after: int) -> None:
        self.allowed = allowed
        self.remaining = remaining
        self.reset_after = reset_after


class _Window:
    """What this worker knows of one key's window, and what it owes Redis."""

    __slots__ = (
        "current",
        "current_until",
        "inflight",
        "learnt_at",
        "pending",
        "previous",
        "previous_until",
        "refuse_until",
        "reset_at",
        "used",
        "waiters",
    )

    def __init__(self) -> None:
        self.previous = 0
        self.previous_until = 0.0  # monotonic: when the previous window's counter expires
        self.current = 0
        self.current_until = 0.0
        self.learnt_at = -math.inf  # monotonic: when Redis last answered for this key
        self.refuse_until = 0.0  # monotonic: Redis said "full" until then
        self.used = 0  # the weighted count Redis answered (it only decays afterwards)
        self.reset_at = 0.0  # monotonic: when, as answered, the window frees a slot
        self.pending = 0  # admitted here, not sent to Redis yet
        self.inflight = 0  # admitted here, sent, not answered yet
        self.waiters: list[asyncio.Future[WindowAnswer]] = []


class SharedWindowLimit:
    """One sliding-window rule (``item``) in Redis, shared by every worker, batched.

    Args:
        client: the limiter's Redis client.
        key_prefix: the Redis key prefix of ``limits``' storage (``<prefix>ratelimit``), so
            that both read and write the same keys.
        item: the limit (amount per window).
        namespace: the rule's name inside the key (``global``).
        on_error: told when a background flush fails (the caller logs the outage once).
        block: requests per key a worker may admit ahead of Redis (default: 1 % of the
            limit, at most :data:`MAX_BLOCK`).
    """

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str,
        item: RateLimitItem,
        namespace: str,
        on_error: Callable[[BaseException], None],
        block: int | None = None,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._script = client.register_script(_SCRIPT)
        self._prefix = key_prefix + ":"
        self._item = item
        self._namespace = namespace
        self._limit = item.amount
        self._expiry = item.get_expiry()
        self._on_error = on_error
        self.block = min(item.amount // BLOCK_SHARE, MAX_BLOCK) if block is None else block
        self._flush_seconds = flush_seconds
        self._windows: dict[str, _Window] = {}
        self._dirty: dict[str, _Window] = {}  # keys with something to send
        self._urgent = False  # a request waits: flush on the next turn, not on the timer
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = time.monotonic() + FRESH_SECONDS

    @property
    def limit(self) -> int:
        """Requests allowed per window."""
        return self._limit

    # -- the two paths of a hit -----------------------------------------------------------

    def hit_locally(self, key: str) -> WindowAnswer | None:
        """The answer for one request of ``key`` without asking Redis, or None when Redis
        must be asked (:meth:`hit`)."""
        window = self._windows.get(key)
        if window is None:
            return None
        now = time.monotonic()
        if now < window.refuse_until:
            return WindowAnswer(False, 0, math.ceil(window.refuse_until - now))
        unconfirmed = window.pending + window.inflight
        if unconfirmed >= self.block or now - window.learnt_at >= FRESH_SECONDS:
            return None
        # The count as Redis answered it, less than a second ago: the window has only
        # decayed since, so this can refuse a request too early (then Redis is asked),
        # never admit one too many.
        used = window.used + unconfirmed
        if used >= self._limit:
            return None
        window.pending += 1
        self._dirty[key] = window
        if 2 * (unconfirmed + 1) >= self.block:
            # Half the block owed: send it now, so that the answer is back before the rest
            # of the block is spent and a busy key never waits for Redis.
            self._schedule(urgent=True)
        elif self._timer is None and self._task is None:
            self._schedule(urgent=False)
        reset_at = window.reset_at
        if reset_at <= now:  # a slot was freed since the answer: the next one's time
            reset_at = window.reset_at = now + self._reset_after(window, now, unconfirmed + 1)
        return WindowAnswer(True, self._limit - used - 1, math.ceil(reset_at - now))

    async def hit(self, key: str) -> WindowAnswer:
        """Count one request of ``key`` in Redis (batched with every other request of this
        event-loop turn); raises what redis-py raises when Redis fails."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        future: asyncio.Future[WindowAnswer] = asyncio.get_running_loop().create_future()
        window.waiters.append(future)
        self._dirty[key] = window
        self._schedule(urgent=True)
        return await future

    # -- arithmetic, as limits' SlidingWindowCounterRateLimiter does it --------------------

    def _weighted(self, window: _Window, now: float) -> int:
        previous_left = max(0.0, window.previous_until - now)
        return math.floor(window.previous * previous_left / self._expiry) + window.current

    def _reset_after(self, window: _Window, now: float, extra: int) -> float:
        """Seconds until the window frees a slot (limits' get_window_stats), counting
        ``extra`` requests of this worker that Redis has not counted yet."""
        current = window.current + extra
        previous = window.previous
        if not (previous or current):
            return 0.0
        expiry = self._expiry
        soonest = math.inf
        if previous:
            soonest = max(0.0, window.previous_until - now) % (expiry / previous)
        if current:
            # The current counter lives two windows from its first hit; its window ends one
            # window before the counter expires (limits: ``ttl % expiry``, which reads 0
            # instead of a whole window at the very first millisecond). No counter yet: the
            # first hit starts a whole window.
            left = window.current_until - now if window.current_until > now else expiry
            soonest = min(soonest, left - expiry if left > expiry else left)
        return soonest

    # -- flushing ---------------------------------------------------------------------------

    def _schedule(self, *, urgent: bool) -> None:
        if urgent:
            self._urgent = True
        if self._task is not None:
            return  # the running flush schedules the next one when it ends
        loop = asyncio.get_running_loop()
        if self._urgent:
            if not self._soon:
                self._soon = True
                # The next turn, not now: every request of this turn joins the same call.
                loop.call_soon(self._start)
        elif self._timer is None:
            self._timer = loop.call_later(self._flush_seconds, self._start)

    def _start(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None or not self._dirty:
            return
        self._urgent = False
        batch, self._dirty = self._dirty, {}
        self._task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if self._dirty:
            self._schedule(urgent=self._urgent)

    async def _flush(self, batch: dict[str, _Window]) -> None:
        keys: list[str] = []
        args: list[int] = [self._expiry, self._limit]
        sent: list[tuple[_Window, list[asyncio.Future[WindowAnswer]]]] = []
        for key, window in batch.items():
            current_key = self._prefix + "{" + self._item.key_for(self._namespace, key) + "}"
            keys += [current_key + "/-1", current_key]
            waiters, window.waiters = window.waiters, []
            args += [window.pending, len(waiters)]
            window.inflight += window.pending
            window.pending = 0
            sent.append((window, waiters))
        try:
            reply: bytes = await self._script(keys=keys, args=args)
        except BaseException as exc:
            self._forget_all()
            for _, waiters in sent:
                for future in waiters:
                    if not future.done():  # its request may have been cancelled meanwhile
                        future.set_exception(exc)
            if isinstance(exc, Exception):
                self._on_error(exc)
                return
            raise
        now = time.monotonic()
        values = [int(value) for value in reply.split(b",")]
        for index, (window, waiters) in enumerate(sent):
            granted, previous, previous_ttl, current, current_ttl = values[
                5 * index : 5 * index + 5
            ]
            window.inflight = 0
            window.previous, window.current = previous, current
            window.previous_until = now + previous_ttl / 1000
            window.current_until = now + current_ttl / 1000
            window.learnt_at = now
            used = window.used = self._weighted(window, now)
            free_in = self._reset_after(window, now, 0)
            window.reset_at = now + free_in
            if used >= self._limit:
                window.refuse_until = now + free_in
            reset_after = math.ceil(free_in)
            for position, future in enumerate(waiters):
                if future.done():
                    continue
                if position < granted:
                    remaining = max(0, self._limit - used + granted - position - 1)
                    future.set_result(WindowAnswer(True, remaining, reset_after))
                else:
                    future.set_result(WindowAnswer(False, 0, reset_after))
        if now >= self._next_sweep:
            self._sweep(now)

    def _forget_all(self) -> None:
        # Redis failed: nothing may be admitted from memory until it answers again (the
        # caller's breaker decides meanwhile), and what was owed to it is lost.
        for window in self._windows.values():
            window.learnt_at = -math.inf
            window.refuse_until = 0.0
            window.pending = window.inflight = 0

    def _sweep(self, now: float) -> None:
        # Windows are kept while they can answer locally; others are dropped, so memory
        # follows the keys of the last second (and those refused until their reset).
        self._next_sweep = now + FRESH_SECONDS
        self._windows = {
            key: window
            for key, window in self._windows.items()
            if window.waiters
            or window.pending
            or window.inflight
            or now - window.learnt_at < FRESH_SECONDS
            or now < window.refuse_until
        }

    async def close(self) -> None:
        """Send what was admitted locally (best effort), then stop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._dirty:
            batch, self._dirty = self._dirty, {}
            with contextlib.suppress(Exception):
                await self._flush(batch)
