"""The revocation stores on their own: memory, and Redis (a private ``redis-server`` this test
may stop and start) — marker-based resynchronisation, background republishing, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from authkeep.errors import DependencyUnavailable
from authkeep.services.revocation import MemoryRevocations, RedisRevocations
from authkeep.wiring import make_redis
from servers import RedisProcess


async def test_memory_store_remembers_for_the_ttl_only() -> None:
    store = MemoryRevocations(ttl_seconds=60)
    await store.revoke(["a", "b"])
    store.load([("c", 30.0), ("gone", -1.0)])

    assert await store.is_revoked("a")
    assert await store.is_revoked("c")
    assert not await store.is_revoked("gone")
    assert not await store.is_revoked("other")
    await store.close()


class Database:
    """Stands in for the sessions table: what a resync would read."""

    def __init__(self) -> None:
        self.revoked: list[tuple[str, int]] = []
        self.reads = 0

    async def recent(self) -> list[tuple[str, int]]:
        self.reads += 1
        return list(self.revoked)


@pytest.fixture
async def store(private_redis: RedisProcess) -> AsyncIterator[tuple[RedisRevocations, Database]]:
    database = Database()
    redis = make_redis(private_redis.url)
    revocations = RedisRevocations(
        redis, prefix="t:", ttl_seconds=60, resync=database.recent, retry_seconds=0.05
    )
    try:
        yield revocations, database
    finally:
        await revocations.close()
        await redis.aclose()


async def revoked(revocations: RedisRevocations, session_id: str) -> bool:
    """The revocation half of a check (the user is irrelevant here)."""
    return (await revocations.check(session_id, "someone"))[0]


async def until(condition: Callable[[], Awaitable[Any]], what: str) -> None:
    deadline = time.monotonic() + 10
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(what)
        await asyncio.sleep(0.02)


async def test_resync_happens_once_then_one_round_trip_per_check(
    store: tuple[RedisRevocations, Database],
) -> None:
    revocations, database = store
    database.revoked = [("old", 30)]

    assert await revoked(revocations, "old")  # first use: Redis had no marker
    assert not await revoked(revocations, "fresh")
    await revocations.revoke(["new"])
    assert await revoked(revocations, "new")

    assert database.reads == 1


async def test_restart_that_loses_every_key_is_noticed(
    store: tuple[RedisRevocations, Database], private_redis: RedisProcess
) -> None:
    revocations, database = store
    await revocations.revoke(["s1"])
    database.revoked = [("s1", 30)]
    assert await revoked(revocations, "s1")

    private_redis.stop()
    private_redis.start()

    assert await revoked(revocations, "s1")
    assert database.reads == 2


async def test_down_then_back_publishes_pending_without_traffic(
    store: tuple[RedisRevocations, Database], private_redis: RedisProcess
) -> None:
    revocations, _database = store
    assert not await revoked(revocations, "warm-up")
    private_redis.stop()

    await revocations.revoke(["while-down"])  # does not raise: kept for later
    with pytest.raises(DependencyUnavailable):
        await revoked(revocations, "while-down")
    private_redis.start()

    checker = make_redis(private_redis.url)
    try:
        await until(
            lambda: checker.exists("t:revoked:sid:while-down"), "pending revocation republished"
        )
    finally:
        await checker.aclose()
    assert await revoked(revocations, "while-down")


async def test_close_stops_the_background_retry(
    store: tuple[RedisRevocations, Database], private_redis: RedisProcess
) -> None:
    revocations, _database = store
    private_redis.stop()
    await revocations.revoke(["x"])
    task = revocations._retry_task
    assert task is not None
    assert not task.done()

    await revocations.close()

    assert task.done()


async def test_memory_stamp_changes_only_for_the_changed_user() -> None:
    store = MemoryRevocations(ttl_seconds=60)
    _, alice = await store.check("s", "alice")
    _, bob = await store.check("s", "bob")

    await store.users_changed(["alice"])

    assert (await store.check("s", "alice"))[1] != alice
    assert (await store.check("s", "bob"))[1] == bob


async def test_redis_stamp_follows_user_changes_and_restarts(
    store: tuple[RedisRevocations, Database], private_redis: RedisProcess
) -> None:
    revocations, _database = store
    # The first check resynchronises (no marker yet): nobody can vouch for a cached user.
    assert await revocations.check("s", "alice") == (False, None)
    revoked, before = await revocations.check("s", "alice")
    assert not revoked
    assert before is not None
    assert (await revocations.check("s", "alice"))[1] == before  # stable while nothing changes
    _, bob = await revocations.check("s", "bob")

    await revocations.users_changed(["alice"])
    _, after = await revocations.check("s", "alice")
    assert after not in (None, before)
    assert (await revocations.check("s", "bob"))[1] == bob

    # A restart loses the counters: "alice" would read 0 again. The new generation written
    # by the resync keeps every stamp handed out before from matching.
    private_redis.stop()
    private_redis.start()
    assert (await revocations.check("s", "alice"))[1] is None
    _, restarted = await revocations.check("s", "alice")
    assert restarted not in (None, before, after)
    assert (await revocations.check("s", "bob"))[1] != bob


async def test_a_lost_user_change_forces_a_new_generation(
    store: tuple[RedisRevocations, Database], private_redis: RedisProcess
) -> None:
    revocations, _database = store
    await revocations.check("s", "alice")
    _, before = await revocations.check("s", "alice")
    private_redis.stop()

    await revocations.users_changed(["alice"])  # does not raise; this worker is degraded
    with pytest.raises(DependencyUnavailable):
        await revocations.check("s", "alice")
    private_redis.start()

    async def vouched_again() -> bool:
        try:
            stamp = (await revocations.check("s", "alice"))[1]
        except DependencyUnavailable:
            return False
        return stamp is not None

    await until(vouched_again, "stamps handed out again after recovery")
    assert (await revocations.check("s", "alice"))[1] != before


async def test_concurrent_checks_share_round_trips_and_get_their_own_answers(
    store: tuple[RedisRevocations, Database],
) -> None:
    revocations, _database = store
    await revocations.check("warm-up", "u")  # the first check resynchronises
    await revocations.revoke([f"s{i}" for i in range(0, 60, 3)])
    await revocations.users_changed(["u7"])
    calls = 0
    real_mget = revocations._redis.mget

    async def counting_mget(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real_mget(*args, **kwargs)

    revocations._redis.mget = counting_mget  # type: ignore[method-assign]
    results = await asyncio.gather(*(revocations.check(f"s{i}", f"u{i}") for i in range(60)))

    assert [revoked for revoked, _ in results] == [i % 3 == 0 for i in range(60)]
    stamps = [stamp for _, stamp in results]
    assert stamps[7] is not None
    assert stamps[7].endswith(":1")
    assert all(
        stamp is not None and stamp.endswith(":0") for i, stamp in enumerate(stamps) if i != 7
    )
    assert calls < 60  # batched: far fewer round trips than checks
