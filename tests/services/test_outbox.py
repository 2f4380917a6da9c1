"""The transactional outbox: enqueue in the caller's transaction, claim under a lease,
retry with backoff, dead letters, crash recovery and concurrent workers — on SQLite and on
PostgreSQL (as the app role)."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from authkeep.db import outbox as outbox_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.models import OutboxMessage
from authkeep.services.outbox import (
    Backoff,
    ClaimedMessage,
    DeliveryError,
    HandlerRegistry,
    Outbox,
    OutboxWorker,
    PermanentDeliveryError,
    RetrySchedule,
)

KIND = "test"


class Recorder:
    """A handler that records what it delivers; fails the first ``failures`` attempts."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or DeliveryError("test transport down")
        self.delivered: list[uuid.UUID] = []
        self.attempts = 0
        self.delay = 0.0

    async def deliver(self, message: ClaimedMessage) -> None:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.attempts <= self.failures:
            raise self.error
        self.delivered.append(message.id)

    def scrub(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"scrubbed": True}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def worker(
    db: Database, handler: Recorder, clock: Clock | None = None, **options: Any
) -> OutboxWorker:
    options.setdefault("backoff", Backoff(base_seconds=10, cap_seconds=100))
    return OutboxWorker(db, HandlerRegistry({KIND: handler}), clock=clock or utcnow, **options)


async def enqueue(db: Database, outbox: Outbox, count: int = 1, **options: Any) -> list[Any]:
    async with db.transaction() as conn:
        return [
            await outbox.enqueue(conn, KIND, {"n": n, "token": "secret-token"}, **options)
            for n in range(count)
        ]


async def row(db: Database, message_id: uuid.UUID) -> Any:
    async with db.reading() as conn:
        return (
            await conn.execute(select(OutboxMessage).where(OutboxMessage.id == message_id))
        ).one()


def dead_count() -> float:
    return (
        REGISTRY.get_sample_value("authkeep_outbox_messages_total", {"kind": KIND, "event": "dead"})
        or 0.0
    )


async def test_a_rolled_back_transaction_leaves_nothing_to_send(db: Database) -> None:
    outbox = Outbox()
    woken: list[int] = []
    outbox.add_listener(lambda: woken.append(1))
    handler = Recorder()

    async def failing_change() -> None:
        async with db.transaction() as conn:
            await outbox.enqueue(conn, KIND, {"n": 1})
            raise RuntimeError("change failed")

    with pytest.raises(RuntimeError, match="change failed"):
        await failing_change()
    assert await worker(db, handler).run_once() == 0
    assert handler.attempts == 0
    assert woken == []  # nor was the worker woken, nor the message counted as queued
    async with db.reading() as conn:
        assert await outbox_rows.count_by_status(conn) == {}


async def test_a_committed_message_is_delivered_once_and_scrubbed(db: Database) -> None:
    outbox = Outbox()
    woken: list[int] = []
    outbox.add_listener(lambda: woken.append(1))
    [message_id] = await enqueue(db, outbox)
    assert woken == [1]
    handler = Recorder()
    assert await worker(db, handler).run_once() == 1
    assert await worker(db, handler).run_once() == 0
    assert handler.delivered == [message_id]
    stored = await row(db, message_id)
    assert stored.status == "sent"
    assert stored.sent_at is not None
    assert stored.locked_by is None
    # The token in the payload does not outlive the delivery.
    assert stored.payload == {"scrubbed": True}


async def test_enqueue_outside_a_transaction_is_refused(db: Database) -> None:
    async with db.reading() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await Outbox().enqueue(conn, KIND, {})


async def test_a_dedup_key_makes_enqueue_idempotent(db: Database) -> None:
    outbox = Outbox()
    first = await enqueue(db, outbox, dedup_key="verify:42")
    second = await enqueue(db, outbox, dedup_key="verify:42")
    assert first[0] is not None
    assert second == [None]
    async with db.reading() as conn:
        assert await outbox_rows.count_by_status(conn) == {"pending": 1}


async def test_a_failure_is_retried_with_backoff_then_delivered(db: Database) -> None:
    clock = Clock()
    handler = Recorder(failures=2)
    delivery = worker(db, handler, clock)
    [message_id] = await enqueue(db, Outbox(clock=clock))

    assert await delivery.run_once() == 1
    first = await row(db, message_id)
    assert (first.status, first.attempts) == ("pending", 1)
    assert first.last_error == "test transport down"
    # Equal jitter: between half and all of base × 2^0.
    assert timedelta(seconds=5) <= first.next_attempt_at - clock.now <= timedelta(seconds=10)
    assert await delivery.run_once() == 0  # not due yet

    clock.now = first.next_attempt_at
    assert await delivery.run_once() == 1
    second = await row(db, message_id)
    assert second.attempts == 2
    # The second wait doubles: between half and all of base × 2^1.
    assert timedelta(seconds=10) <= second.next_attempt_at - clock.now <= timedelta(seconds=20)

    clock.now = second.next_attempt_at
    assert await delivery.run_once() == 1
    assert handler.delivered == [message_id]
    assert (await row(db, message_id)).status == "sent"


async def test_a_message_is_dead_after_the_last_attempt_and_counted(db: Database) -> None:
    clock = Clock()
    handler = Recorder(failures=100)
    delivery = worker(db, handler, clock, max_attempts=3)
    [message_id] = await enqueue(db, Outbox(clock=clock))
    before = dead_count()
    for _ in range(3):
        assert await delivery.run_once() == 1
        clock.advance(seconds=1000)
    assert await delivery.run_once() == 0
    stored = await row(db, message_id)
    assert (stored.status, stored.attempts) == ("dead", 3)
    assert stored.last_error == "test transport down"
    assert stored.payload == {"scrubbed": True}  # kept, but without its token
    assert dead_count() == before + 1


async def test_a_kinds_retry_schedule_sets_its_waits_and_its_last_attempt(
    db: Database,
) -> None:
    # Webhooks retry on the Standard Webhooks schedule, not the exponential backoff.
    clock = Clock()
    handler = Recorder(failures=100)
    delivery = worker(db, handler, clock, retry={KIND: RetrySchedule((7.0, 300.0))})
    [message_id] = await enqueue(db, Outbox(clock=clock))
    waits = []
    for _ in range(3):
        assert await delivery.run_once() == 1
        stored = await row(db, message_id)
        if stored.status == "pending":
            waits.append(stored.next_attempt_at - clock.now)
            clock.now = stored.next_attempt_at
    assert waits == [timedelta(seconds=7), timedelta(seconds=300)]
    stored = await row(db, message_id)
    assert (stored.status, stored.attempts) == ("dead", 3)


async def test_a_permanent_failure_is_dead_at_once(db: Database) -> None:
    handler = Recorder(failures=1, error=PermanentDeliveryError("recipient refused (550)"))
    [message_id] = await enqueue(db, Outbox())
    before = dead_count()
    assert await worker(db, handler).run_once() == 1
    stored = await row(db, message_id)
    assert (stored.status, stored.attempts) == ("dead", 1)
    assert dead_count() == before + 1


async def test_an_unexpected_error_is_stored_by_type_only(db: Database) -> None:
    # An arbitrary exception's text may quote a URL with a password: only its type is kept.
    handler = Recorder(failures=1, error=ValueError("postgresql://u:hunter2@db/x"))
    [message_id] = await enqueue(db, Outbox())
    await worker(db, handler).run_once()
    assert (await row(db, message_id)).last_error == "ValueError"


async def test_a_crashed_workers_message_is_delivered_once_after_its_lease(
    db: Database,
) -> None:
    clock = Clock()
    [message_id] = await enqueue(db, Outbox(clock=clock))
    # Worker "a" claims the message and dies without settling it.
    async with db.transaction() as conn:
        claimed = await outbox_rows.claim(
            conn,
            worker="a",
            now=clock.now,
            lease_until=clock.now + timedelta(seconds=60),
            limit=10,
            kinds=[KIND],
            max_attempts=5,
        )
    assert [m.id for m in claimed] == [message_id]

    handler = Recorder()
    survivor = worker(db, handler, clock, name="b", lease=timedelta(seconds=60))
    assert await survivor.run_once() == 0  # still leased to "a"
    clock.advance(seconds=61)
    assert await survivor.run_once() == 1
    assert await survivor.run_once() == 0
    assert handler.delivered == [message_id]
    stored = await row(db, message_id)
    assert (stored.status, stored.attempts) == ("sent", 2)
    # "a" coming back cannot settle what is no longer its own.
    async with db.transaction() as conn:
        assert not await outbox_rows.mark_sent(
            conn, message_id, worker="a", now=clock.now, payload={}
        )
        assert not await outbox_rows.renew(
            conn, message_id, worker="a", now=clock.now, until=clock.now
        )


async def test_a_crash_on_the_last_attempt_makes_the_message_dead(db: Database) -> None:
    clock = Clock()
    [message_id] = await enqueue(db, Outbox(clock=clock))
    async with db.transaction() as conn:
        await outbox_rows.claim(
            conn,
            worker="a",
            now=clock.now,
            lease_until=clock.now + timedelta(seconds=60),
            limit=10,
            kinds=[KIND],
            max_attempts=1,
        )
    clock.advance(seconds=61)
    before = dead_count()
    handler = Recorder()
    assert await worker(db, handler, clock, max_attempts=1).run_once() == 0
    assert handler.attempts == 0
    stored = await row(db, message_id)
    assert stored.status == "dead"
    assert stored.payload == {}
    assert dead_count() == before + 1


async def test_a_stopping_worker_finishes_the_message_in_flight_and_hands_back_the_rest(
    db: Database,
) -> None:
    stop = asyncio.Event()

    class StopAfterFirst(Recorder):
        async def deliver(self, message: ClaimedMessage) -> None:
            await super().deliver(message)
            stop.set()

    handler = StopAfterFirst()
    ids = await enqueue(db, Outbox(), count=5)
    assert await worker(db, handler, batch_size=5).run_once(stop) == 5
    assert len(handler.delivered) == 1
    async with db.reading() as conn:
        assert await outbox_rows.count_by_status(conn) == {"sent": 1, "pending": 4}
    for message_id in set(ids) - set(handler.delivered):
        stored = await row(db, message_id)
        assert (stored.attempts, stored.locked_by) == (0, None)


async def test_a_worker_leaves_kinds_it_has_no_handler_for(db: Database) -> None:
    async with db.transaction() as conn:
        await Outbox().enqueue(conn, "webhook", {"url": "https://example.com/hook"})
    handler = Recorder()
    assert await worker(db, handler).run_once() == 0
    async with db.reading() as conn:
        assert await outbox_rows.count_by_status(conn) == {"pending": 1}


async def test_the_loop_is_woken_by_a_commit_and_stops_on_request(db: Database) -> None:
    outbox = Outbox()
    handler = Recorder()
    # A poll interval far longer than the test: only the wake-up can deliver in time.
    delivery = worker(db, handler, poll_seconds=3600)
    outbox.add_listener(delivery.wake)
    stop = asyncio.Event()
    task = asyncio.create_task(delivery.run(stop))
    try:
        await asyncio.sleep(0)
        [message_id] = await enqueue(db, outbox)
        for _ in range(500):
            if handler.delivered:
                break
            await asyncio.sleep(0.01)
        assert handler.delivered == [message_id]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_concurrent_workers_deliver_each_message_exactly_once(backend: Any) -> None:
    databases = [Database(backend.database_url) for _ in range(4)]
    try:
        ids = set(await enqueue(databases[0], Outbox(), count=120))
        handler = Recorder()
        handler.delay = 0.001  # a real await inside each send, so the workers interleave
        workers = [worker(db, handler, batch_size=7) for db in databases]

        async def drain(delivery: OutboxWorker) -> None:
            while await delivery.run_once():
                pass

        await asyncio.gather(*(drain(w) for w in workers))
        counts = collections.Counter(handler.delivered)
        assert set(counts) == ids
        assert max(counts.values()) == 1
        async with databases[0].reading() as conn:
            assert await outbox_rows.count_by_status(conn) == {"sent": len(ids)}
    finally:
        for db in databases:
            await db.close()
