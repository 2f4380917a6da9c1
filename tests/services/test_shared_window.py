"""The global limit on Redis (``services/shared_window.py``) against a real Redis: the stated
overshoot bound with four independent limiters (four workers) hammering one key, exactness
for small limits, the same keys and arithmetic as ``limits``, refusals answered from memory,
and the failure policy of the locally answered path."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import limits
import pytest
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import REGISTRY

from authkeep import Settings
from authkeep.services.rate_limits import Decision, RateLimits, limiter_redis
from authkeep.services.shared_window import MAX_BLOCK, SharedWindowLimit, _Window
from servers import RedisProcess, free_port

pytestmark = pytest.mark.redis

WORKERS = 4
KEY = "user:6b7f3c1e-0000-4000-8000-000000000001"


def build(redis_url: str, prefix: str, per_minute: int) -> RateLimits:
    """One worker's limiter (its own Redis client), as ``authkeep serve`` builds it."""
    settings = Settings(
        env="test", redis_url=redis_url, redis_prefix=prefix, rate_limit_per_minute=per_minute
    )
    return RateLimits.from_settings(settings, pepper=b"pepper")


@pytest.fixture
def prefix() -> str:
    return f"authkeep-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def workers(redis_available: str, prefix: str) -> AsyncIterator[list[RateLimits]]:
    """Four limiters on one Redis, limit 1000 a minute (a local block of 10 each)."""
    built = [build(redis_available, prefix, 1000) for _ in range(WORKERS)]
    try:
        yield built
    finally:
        for worker in built:
            await worker.close()


def shared(worker: RateLimits) -> SharedWindowLimit:
    found = worker._shared_global
    assert found is not None, "on Redis the global limit is the shared window"
    return found


async def hammer(worker: RateLimits, attempts: int, concurrency: int) -> list[Decision]:
    """``attempts`` requests of one key from ``concurrency`` concurrent clients."""
    decisions: list[Decision] = []

    async def client(count: int) -> None:
        for _ in range(count):
            decision = await worker.hit_global(KEY)
            assert decision is not None, "Redis is up: every decision is Redis's or bounded"
            decisions.append(decision)
            await asyncio.sleep(0)  # let the other workers' clients in between

    share, extra = divmod(attempts, concurrency)
    await asyncio.gather(*(client(share + (i < extra)) for i in range(concurrency)))
    return decisions


async def test_four_workers_admit_at_least_the_limit_and_at_most_the_stated_bound(
    workers: list[RateLimits],
) -> None:
    """The documented bound: admitted per window <= limit + workers x block, and >= limit
    when demand exceeds it (here 6x the limit, from four workers at once)."""
    limit = 1000
    block = shared(workers[0]).block
    assert block == limit // 100  # 1 % of the limit per worker, as docs/rate-limits.md says
    runs = await asyncio.gather(*(hammer(worker, 1500, 32) for worker in workers))
    admitted = sum(d.allowed for run in runs for d in run)
    assert limit <= admitted <= limit + WORKERS * block
    # Every refusal tells the client how long to wait, and that nothing is left.
    refused = [d for run in runs for d in run if not d.allowed]
    assert len(refused) == 6000 - admitted
    assert all(d.remaining == 0 and 1 <= d.retry_after <= 60 for d in refused)
    # The count each worker reports never goes below zero nor above the limit.
    assert all(0 <= d.remaining < limit for run in runs for d in run)


async def test_small_limits_are_exact_across_workers(redis_available: str, prefix: str) -> None:
    """Below a limit of 100 no request is admitted before Redis counted it: exactly 20."""
    built = [build(redis_available, prefix, 20) for _ in range(WORKERS)]
    try:
        assert all(shared(worker).block == 0 for worker in built)
        runs = await asyncio.gather(*(hammer(worker, 50, 10) for worker in built))
    finally:
        for worker in built:
            await worker.close()
    assert sum(d.allowed for run in runs for d in run) == 20


async def test_one_worker_is_exact_even_with_a_block(redis_available: str, prefix: str) -> None:
    worker = build(redis_available, prefix, 1000)
    try:
        decisions = await hammer(worker, 1500, 64)
    finally:
        await worker.close()
    assert sum(d.allowed for d in decisions) == 1000


async def test_the_block_is_capped(redis_available: str, prefix: str) -> None:
    worker = build(redis_available, prefix, 10_000_000)
    try:
        assert shared(worker).block == MAX_BLOCK
    finally:
        await worker.close()


async def test_limits_reads_and_writes_the_same_window(redis_available: str, prefix: str) -> None:
    """Same keys, same arithmetic as limits' sliding-window counter: a rolling deploy mixing
    old and new workers shares one budget, and the headers agree with limits' own stats."""
    worker = build(redis_available, prefix, 10)
    assert worker._client is not None
    # limits' own storage on the worker's connections (closed with the worker).
    storage = RedisStorage(
        redis_available,
        implementation="redispy",
        key_prefix=prefix + "ratelimit",
        connection_pool=worker._client.connection_pool,
    )
    theirs = SlidingWindowCounterRateLimiter(storage)
    item = limits.RateLimitItemPerMinute(10)
    try:
        mine = [await worker.hit_global(KEY) for _ in range(3)]
        assert [d.remaining for d in mine if d is not None] == [9, 8, 7]
        stats = await theirs.get_window_stats(item, "global", KEY)
        assert stats.remaining == 7
        # A sliding window's reset is when its oldest counted hit leaves it: at most a
        # minute ahead, and possibly this very instant (hits made at a window boundary).
        assert -1 < stats.reset_time - time.time() <= 60
        for _ in range(4):
            assert await theirs.hit(item, "global", KEY)
        after = await worker.hit_global(KEY)
        assert after is not None
        assert (after.allowed, after.remaining) == (True, 2)
        assert 0 < after.reset_after <= 60
    finally:
        await worker.close()


async def test_refusals_are_answered_from_memory_until_the_window_frees_a_slot(
    redis_available: str, prefix: str
) -> None:
    """A client flooding past its limit costs no Redis call until its Retry-After; then
    Redis is asked again and admits once the window has room."""
    client = limiter_redis(redis_available)
    errors: list[BaseException] = []
    window = SharedWindowLimit(
        client,
        key_prefix=prefix + "ratelimit",
        item=limits.parse("3/second"),
        namespace="global",
        on_error=errors.append,
    )
    calls = 0
    script = window._script

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)  # type: ignore[arg-type]

    window._script = counting  # type: ignore[assignment]
    try:
        answers = [await window.hit(KEY) for _ in range(4)]
        assert [a.allowed for a in answers] == [True, True, True, False]
        assert answers[3].reset_after == 1
        before = calls
        flood = [window.hit_locally(KEY) for _ in range(100)]
        assert all(a is not None and not a.allowed for a in flood)
        assert calls == before
        deadline = time.monotonic() + 10
        while (local := window.hit_locally(KEY)) is not None:
            assert not local.allowed
            assert time.monotonic() < deadline, "the refusal outlived its own Retry-After"
            await asyncio.sleep(0.05)
        while not (await window.hit(KEY)).allowed:
            assert time.monotonic() < deadline, "the window never freed a slot"
            await asyncio.sleep(0.05)
    finally:
        await window.close()
        await client.aclose()
    assert errors == []


async def test_stale_windows_are_forgotten() -> None:
    """Memory follows the keys of the last second: a window nobody hit is swept, unless it
    still refuses (until its reset) or owes Redis requests."""
    client = limiter_redis(f"redis://127.0.0.1:{free_port()}/0")  # never contacted here
    window = SharedWindowLimit(
        client,
        key_prefix="sweep:ratelimit",
        item=limits.parse("1000/minute"),
        namespace="global",
        on_error=lambda exc: None,
    )
    now = time.monotonic()
    entries = {name: _Window() for name in ("fresh", "stale", "refused", "owed")}
    entries["fresh"].learnt_at = now
    entries["refused"].refuse_until = now + 30
    entries["owed"].pending = 1
    window._windows = dict(entries)
    window._sweep(now)
    assert set(window._windows) == {"fresh", "refused", "owed"}
    await client.aclose()


def global_allowed_without_storage() -> float:
    value = REGISTRY.get_sample_value(
        "authkeep_rate_limit_storage_errors_total", {"rule": "global", "outcome": "allowed"}
    )
    return value or 0.0


@pytest.mark.slow
async def test_a_redis_outage_stops_local_answers_and_fails_open(
    private_redis: RedisProcess,
) -> None:
    """Requests a worker admits ahead of Redis stop as soon as Redis fails: the failed
    background flush forgets every local window, and the global limit's policy (fail open,
    counted) answers until Redis is back; then counting resumes."""
    worker = build(private_redis.url, "outage:", 1000)
    try:
        first = await worker.hit_global(KEY)
        assert first is not None
        assert first.allowed
        assert shared(worker).hit_locally(KEY) is not None  # a busy key is answered here
        await asyncio.to_thread(private_redis.stop)
        before = global_allowed_without_storage()
        answers = [await worker.hit_global(KEY) for _ in range(50)]
        await asyncio.sleep(0.1)  # the background flush meets the dead Redis
        answers += [await worker.hit_global(KEY) for _ in range(50)]
        # At most a block was answered from memory before the outage was noticed ...
        assert sum(a is not None for a in answers) <= shared(worker).block
        # ... everything after it went by the policy: allowed, counted.
        assert global_allowed_without_storage() >= before + 100 - shared(worker).block
        await asyncio.to_thread(private_redis.start)
        deadline = time.monotonic() + 15
        while (answer := await worker.hit_global(KEY)) is None:
            assert time.monotonic() < deadline, "the limiter never came back"
            await asyncio.sleep(0.1)
        assert answer.allowed
    finally:
        await worker.close()
