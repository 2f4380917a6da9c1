"""The delivery worker: claims due messages under a lease, hands each to its kind's handler,
and settles it — sent, retried later with backoff, or dead after the last attempt.

Guarantees (details in ``docs/email.md``):

* **Nothing is lost.** A message stays in the table until it is sent or, after
  ``max_attempts`` failures, marked dead — logged at error level and counted in
  ``authkeep_outbox_messages_total{event="dead"}``. A worker that dies mid-send leaves its
  message leased; when the lease runs out another worker claims it again.
* **Never two senders at once.** Claims lock rows (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL); a message is sent only while its lease has at least the send timeout left, and
  the send is cut off at that timeout, so a stalled worker cannot send after another one took
  over; settling is fenced by ``locked_by``. Delivery is at-least-once (a crash after the
  server accepted the message but before it was marked sent means one more attempt), and
  each message keeps one identity across attempts (its id, an email's ``Message-ID``).
* **Payloads are opened here**, just before their handler runs (sealed with the master
  data-key ring, bound to their row: ``authkeep.db.outbox``); plain ones, queued before
  encryption, are delivered as they are. One that does not open — copied from another row,
  or sealed with a data key no longer in the ring — is marked dead at once with that reason:
  no retry can open it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from authkeep import metrics
from authkeep.db import outbox as outbox_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database, is_unavailable
from authkeep.db.outbox import ClaimedMessage
from authkeep.security.envelope import Envelope, SealedValueError
from authkeep.services.outbox.backoff import Backoff, RetrySchedule
from authkeep.services.outbox.handlers import (
    DeliveryError,
    HandlerRegistry,
    PermanentDeliveryError,
)

log = structlog.get_logger("authkeep.outbox")

UNREADABLE = (
    "the payload does not open: sealed for another row, or with a data key that is not in "
    "AUTHKEEP_DATA_KEYS"
)


def default_worker_name() -> str:
    """Host, process and a random part: unique per worker, readable in ``locked_by``."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def describe(exc: BaseException) -> str:
    """A description of a failure that is safe to store and log: a handler's own
    :class:`DeliveryError` text, else only the exception's type (an arbitrary exception's
    text may quote a connection string or a server's answer)."""
    if isinstance(exc, DeliveryError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no answer within the send timeout"
    return type(exc).__name__


class OutboxWorker:
    """Delivers the outbox. Many may run at once, in one process or in many."""

    def __init__(
        self,
        db: Database,
        handlers: HandlerRegistry,
        *,
        name: str | None = None,
        batch_size: int = 20,
        lease: timedelta = timedelta(seconds=60),
        max_attempts: int = 12,
        poll_seconds: float = 1.0,
        backoff: Backoff | None = None,
        retry: Mapping[str, RetrySchedule] | None = None,
        clock: Callable[[], datetime] = utcnow,
        envelope: Envelope | None = None,
    ) -> None:
        self.name = (name or default_worker_name())[:64]
        self._db = db
        self._handlers = handlers
        self._batch_size = batch_size
        self._lease = lease
        # Half the lease: a send that started with this much lease left ends (or is cut
        # off) before the lease does, so no other worker can be sending it at the same time.
        self.send_timeout = lease / 2
        self._max_attempts = max_attempts
        self._poll_seconds = poll_seconds
        self._backoff = backoff or Backoff()
        # Kinds with a schedule of their own (webhooks); every other kind backs off
        # exponentially. ``max_attempts`` caps every kind.
        self._retry = dict(retry or {})
        self._clock = clock
        # Opens sealed payloads and seals what stays once a message is settled.
        self._envelope = envelope
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for messages now instead of at the next poll (after an enqueue commits)."""
        self._wake.set()

    async def run_once(self, stop: asyncio.Event | None = None) -> int:
        """Claim one batch and deliver it; return how many messages were claimed. When
        ``stop`` is set, the message in flight is finished and the rest handed back."""
        for source in self._handlers.sources:
            await source()
        kinds = list(self._handlers)
        now = self._clock()
        async with self._db.reading() as conn:
            if not await outbox_rows.has_due(
                conn, now=now, kinds=kinds, max_attempts=self._max_attempts + 1
            ):
                return 0
        async with self._db.transaction() as conn:
            buried = await outbox_rows.bury_exhausted(
                conn, now=now, max_attempts=self._max_attempts
            )
            claimed = await outbox_rows.claim(
                conn,
                worker=self.name,
                now=now,
                lease_until=now + self._lease,
                limit=self._batch_size,
                kinds=kinds,
                max_attempts=self._max_attempts,
            )
        for message_id, kind in buried:
            metrics.OUTBOX_MESSAGES.labels(kind, "dead").inc()
            log.error(
                "outbox_message_dead",
                message_id=str(message_id),
                kind=kind,
                reason="lease expired on the last attempt",
            )
        lease_until = now + self._lease
        for index, message in enumerate(claimed):
            if stop is not None and stop.is_set():
                rest = [m.id for m in claimed[index:]]
                async with self._db.transaction() as conn:
                    await outbox_rows.release(conn, rest, worker=self.name)
                break
            lease_until = await self._deliver(message, lease_until)
        return len(claimed)

    async def _deliver(self, message: ClaimedMessage, lease_until: datetime) -> datetime:
        now = self._clock()
        if now + self.send_timeout >= lease_until:
            # Not enough lease left for a whole send: extend it first, or give up the
            # message if it is no longer ours.
            lease_until = now + self._lease
            async with self._db.transaction() as conn:
                held = await outbox_rows.renew(
                    conn, message.id, worker=self.name, now=now, until=lease_until
                )
            if not held:
                log.warning("outbox_lease_lost", message_id=str(message.id), kind=message.kind)
                return lease_until
        try:
            message = replace(
                message,
                payload=outbox_rows.open_payload(self._envelope, message.id, message.payload),
            )
        except SealedValueError:
            await self._failed(replace(message, payload={}), PermanentDeliveryError(UNREADABLE))
            return lease_until
        handler = self._handlers[message.kind]
        try:
            async with asyncio.timeout(self.send_timeout.total_seconds()):
                await handler.deliver(message)
        except Exception as exc:  # any failure of a handler is one failed attempt, not a crash
            await self._failed(message, exc)
        else:
            async with self._db.transaction() as conn:
                settled = await outbox_rows.mark_sent(
                    conn,
                    message.id,
                    worker=self.name,
                    now=self._clock(),
                    payload=handler.scrub(message.payload),
                    envelope=self._envelope,
                )
            metrics.OUTBOX_MESSAGES.labels(message.kind, "sent").inc()
            log.info(
                "outbox_sent",
                message_id=str(message.id),
                kind=message.kind,
                attempts=message.attempts,
                settled=settled,
            )
        return lease_until

    async def _failed(self, message: ClaimedMessage, exc: Exception) -> None:
        error = describe(exc)
        permanent = isinstance(exc, PermanentDeliveryError)
        schedule = self._retry.get(message.kind)
        last = self._max_attempts
        if schedule is not None:
            last = min(last, schedule.max_attempts)
        dead = permanent or message.attempts >= last
        wait = (schedule or self._backoff).delay(message.attempts)
        retry_at = None if dead else self._clock() + wait
        handler = self._handlers[message.kind]
        async with self._db.transaction() as conn:
            await outbox_rows.mark_failed(
                conn,
                message.id,
                worker=self.name,
                error=error,
                retry_at=retry_at,
                payload=handler.scrub(message.payload) if dead else None,
                envelope=self._envelope,
            )
        metrics.OUTBOX_MESSAGES.labels(message.kind, "failed").inc()
        if dead:
            metrics.OUTBOX_MESSAGES.labels(message.kind, "dead").inc()
            log.error(
                "outbox_message_dead",
                message_id=str(message.id),
                kind=message.kind,
                attempts=message.attempts,
                error=error,
                reason="permanent failure" if permanent else "no attempt left",
            )
        else:
            log.warning(
                "outbox_attempt_failed",
                message_id=str(message.id),
                kind=message.kind,
                attempts=message.attempts,
                error=error,
                retry_at=retry_at.isoformat() if retry_at else None,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then return once the message in flight is settled.
        A database outage is logged and waited out, never fatal."""
        log.info("outbox_worker_started", worker=self.name, kinds=sorted(self._handlers))
        while not stop.is_set():
            # Cleared before looking, so a commit during the cycle still cuts the pause short.
            self._wake.clear()
            try:
                claimed = await self.run_once(stop)
            except Exception as exc:  # the database is down or restarting: wait, then retry
                if is_unavailable(exc):
                    # An outage is expected weather, not a bug: one line, no traceback.
                    log.warning(
                        "outbox_worker_cycle_failed",
                        worker=self.name,
                        error=type(exc).__name__,
                        reason="database_unavailable",
                    )
                else:
                    log.warning("outbox_worker_cycle_failed", worker=self.name, exc_info=True)
                claimed = 0
            if claimed >= self._batch_size:
                continue  # more may be due: no pause while a backlog drains
            await self._pause(stop)
        log.info("outbox_worker_stopped", worker=self.name)

    async def _pause(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=self._poll_seconds, return_when="FIRST_COMPLETED")
        finally:
            for waiting in waits:
                waiting.cancel()
