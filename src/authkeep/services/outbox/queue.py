"""Enqueueing: a message is a row written on the caller's connection, inside the caller's
transaction, so it exists exactly when the change that causes it commits.

::

    async with db.transaction() as conn:
        user = await user_rows.insert_user(conn, ...)
        await outbox.enqueue(conn, "email", {...}, dedup_key=f"verify:{user.id}")
    # committed: the message is there, and the in-process worker is woken up

A rolled-back transaction leaves no message, so no email ever announces a change that did not
happen (and no change commits without its email, as with a send after the commit).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import metrics
from authkeep.db import after_commit
from authkeep.db import outbox as outbox_rows
from authkeep.db.base import utcnow
from authkeep.security.envelope import Envelope

log = structlog.get_logger("authkeep.outbox")


class Outbox:
    """Writes messages into the outbox. ``listeners`` are called (without arguments) after
    a transaction that enqueued something commits: the in-process worker's wake-up. The
    transaction must be one of :meth:`authkeep.db.engine.Database.transaction` (or
    ``tenant_transaction``); in another, listeners are not called and the workers find
    the message at their next poll.

    Payloads are sealed with ``envelope`` (the master data-key ring, bound to the row:
    ``authkeep.db.outbox``); an outbox built without one (tests, tools) stores them plain."""

    def __init__(
        self, *, clock: Callable[[], datetime] = utcnow, envelope: Envelope | None = None
    ) -> None:
        self._clock = clock
        self._envelope = envelope
        self._listeners: list[Callable[[], None]] = []

    @property
    def envelope(self) -> Envelope | None:
        """What seals the payloads (and the webhook deliveries written with them)."""
        return self._envelope

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each commit that added a message."""
        self._listeners.append(listener)

    async def enqueue(
        self,
        conn: AsyncConnection,
        kind: str,
        payload: Mapping[str, Any],
        *,
        dedup_key: str | None = None,
        delay: timedelta | None = None,
    ) -> uuid.UUID | None:
        """Add a message on ``conn``, in its open transaction; return its id, or None when
        ``dedup_key`` was used before (the message is already queued or sent: idempotent).

        ``payload`` must be JSON; ``delay`` holds the message back that long.
        """
        if not conn.in_transaction():
            # Outside a transaction the row would commit on its own, before (or without)
            # the change it announces.
            raise RuntimeError("enqueue inside the transaction of the change that causes it")
        now = self._clock()
        message_id = await outbox_rows.insert_message(
            conn,
            kind=kind,
            payload=payload,
            dedup_key=dedup_key,
            now=now,
            available_at=now + delay if delay else None,
            envelope=self._envelope,
        )
        if message_id is not None:
            self._after_commit(conn, kind)
        return message_id

    def announce(self, conn: AsyncConnection, kind: str, count: int = 1) -> None:
        """Count ``count`` messages of ``kind`` written on ``conn`` by other means than
        :meth:`enqueue` (the webhook events, several rows in one statement) and wake the
        listeners, once the transaction has committed."""
        self._after_commit(conn, kind, count)

    def wake_after_commit(self, conn: AsyncConnection) -> None:
        """Wake the listeners once ``conn``'s transaction has committed, counting nothing:
        it wrote what a worker turns into messages (an audit row with webhook events)."""
        self._after_commit(conn, None)

    def _after_commit(self, conn: AsyncConnection, kind: str | None, count: int = 1) -> None:
        def committed() -> None:
            if kind is not None:
                metrics.OUTBOX_MESSAGES.labels(kind, "queued").inc(count)
            for listener in self._listeners:
                try:
                    listener()
                except Exception:  # a wake-up that fails must not fail the committed change
                    log.warning("outbox_listener_failed", exc_info=True)

        # After the commit, not at SQLAlchemy's "commit" event (which fires before it): a
        # worker woken earlier could miss the row and sleep until its next poll.
        after_commit.after_commit(conn, committed)
