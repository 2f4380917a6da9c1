"""Queries on ``outbox``: enqueue, claim a batch under a lease, and settle each message.

Every statement that settles a message is *fenced* by ``locked_by``: a worker whose lease
ran out (it stalled, and another worker claimed the message again) changes nothing, so a
message is settled by the worker that holds it and by no other.

**Sealed payloads.** Payloads hold email addresses, bodies' links and webhook events: they
are stored as ``{"sealed": "<JSON sealed with the master data-key ring>"}``, bound to the
row's id (a sealed payload copied into another row does not open there). The id is made here,
before the insert, for that. Writers without an envelope (tests, tools) store plain JSON, and
:func:`open_payload` reads both: rows queued before encryption still deliver.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.models import OutboxMessage
from authkeep.security.envelope import Envelope, SealedValueError, field_context

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"

_TABLE = cast(Table, OutboxMessage.__table__)
SEALED = "sealed"
"""The one key of a sealed payload."""


def seal_payload(
    envelope: Envelope | None,
    row_id: uuid.UUID,
    payload: Mapping[str, Any],
    *,
    table: str = "outbox",
) -> dict[str, Any]:
    """``payload`` as stored in row ``row_id`` of ``table`` (plain JSON without an
    envelope)."""
    if envelope is None:
        return dict(payload)
    text = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False)
    return {SEALED: envelope.seal(text, context=field_context(table, "payload", row_id))}


def is_sealed(stored: Mapping[str, Any]) -> bool:
    """Whether a stored payload is sealed (else: plain JSON, written before encryption)."""
    return set(stored) == {SEALED} and isinstance(stored[SEALED], str)


def open_payload(
    envelope: Envelope | None,
    row_id: uuid.UUID,
    stored: Mapping[str, Any],
    *,
    table: str = "outbox",
) -> dict[str, Any]:
    """The payload of row ``row_id`` of ``table``; a plain one as it is.
    :class:`SealedValueError` when a sealed one does not open here (sealed for another row,
    with a data key no longer in the ring, or no envelope to open it with)."""
    if not is_sealed(stored):
        return dict(stored)
    if envelope is None:
        raise SealedValueError("a sealed payload, and no data keys to open it")
    text = envelope.open(str(stored[SEALED]), context=field_context(table, "payload", row_id))
    try:
        opened = json.loads(text)
    except ValueError as exc:
        raise SealedValueError("a sealed payload that is not JSON") from exc
    if not isinstance(opened, dict):
        raise SealedValueError("a sealed payload that is not a JSON object")
    return opened


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A message a worker holds under its lease; ``attempts`` counts this one."""

    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


async def insert_message(
    conn: AsyncConnection,
    *,
    kind: str,
    payload: Mapping[str, Any],
    dedup_key: str | None,
    now: datetime,
    available_at: datetime | None = None,
    envelope: Envelope | None = None,
) -> uuid.UUID | None:
    """Add a pending message (its payload sealed with ``envelope``); None when
    ``dedup_key`` was already used (nothing added)."""
    message_id = uuid.uuid4()
    values = {
        "id": message_id,
        "kind": kind,
        "payload": seal_payload(envelope, message_id, payload),
        "dedup_key": dedup_key,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": available_at or now,
        "created_at": now,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(_TABLE)
        .values(values)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(_TABLE.c.id)
    )
    return (await conn.execute(statement)).scalar_one_or_none()


def _due(now: datetime, kinds: Collection[str], max_attempts: int) -> Any:
    return and_(
        OutboxMessage.kind.in_(list(kinds)),
        or_(
            and_(OutboxMessage.status == PENDING, OutboxMessage.next_attempt_at <= now),
            # A worker died holding it: once the lease is over, the message is free again.
            and_(
                OutboxMessage.status == SENDING,
                OutboxMessage.locked_until <= now,
                OutboxMessage.attempts < max_attempts,
            ),
        ),
    )


async def has_due(
    conn: AsyncConnection, *, now: datetime, kinds: Collection[str], max_attempts: int
) -> bool:
    """Whether any message is ready to claim (a cheap read before the write claim)."""
    found = await conn.execute(
        select(OutboxMessage.id).where(_due(now, kinds, max_attempts)).limit(1)
    )
    return found.first() is not None


async def claim(
    conn: AsyncConnection,
    *,
    worker: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    kinds: Collection[str],
    max_attempts: int,
) -> list[ClaimedMessage]:
    """Take up to ``limit`` due messages for ``worker`` until ``lease_until``.

    On PostgreSQL the candidate rows are locked with ``FOR UPDATE SKIP LOCKED``: concurrent
    workers each take different rows, nobody waits. On SQLite the write transaction is
    already exclusive (``BEGIN IMMEDIATE``), so the conditional UPDATE is enough.
    """
    candidates = (
        select(OutboxMessage.id)
        .where(_due(now, kinds, max_attempts))
        .order_by(OutboxMessage.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(candidates.scalar_subquery()))
        .values(
            status=SENDING,
            locked_by=worker,
            locked_until=lease_until,
            attempts=OutboxMessage.attempts + 1,
        )
        .returning(
            OutboxMessage.id,
            OutboxMessage.kind,
            OutboxMessage.payload,
            OutboxMessage.attempts,
            OutboxMessage.created_at,
            OutboxMessage.next_attempt_at,
        )
    )
    rows = sorted(
        (await conn.execute(statement)).all(),
        key=lambda row: (row.next_attempt_at, row.created_at),
    )
    return [
        ClaimedMessage(row.id, row.kind, dict(row.payload), row.attempts, row.created_at)
        for row in rows
    ]


def _held(message_id: uuid.UUID, worker: str) -> Any:
    return and_(
        OutboxMessage.id == message_id,
        OutboxMessage.status == SENDING,
        OutboxMessage.locked_by == worker,
    )


async def renew(
    conn: AsyncConnection, message_id: uuid.UUID, *, worker: str, now: datetime, until: datetime
) -> bool:
    """Extend ``worker``'s lease on a message; False when the lease is lost (expired, or
    another worker took the message): the caller must then not send it."""
    result = await conn.execute(
        update(OutboxMessage)
        .where(_held(message_id, worker), OutboxMessage.locked_until > now)
        .values(locked_until=until)
    )
    return bool(result.rowcount)


async def mark_sent(
    conn: AsyncConnection,
    message_id: uuid.UUID,
    *,
    worker: str,
    now: datetime,
    payload: Mapping[str, Any],
    envelope: Envelope | None = None,
) -> bool:
    """Record the delivery; ``payload`` replaces the stored one (scrubbed of tokens; sealed
    with ``envelope``, like every payload at rest)."""
    result = await conn.execute(
        update(OutboxMessage)
        .where(_held(message_id, worker))
        .values(
            status=SENT,
            sent_at=now,
            locked_by=None,
            locked_until=None,
            last_error=None,
            payload=seal_payload(envelope, message_id, payload),
        )
    )
    return bool(result.rowcount)


async def mark_failed(
    conn: AsyncConnection,
    message_id: uuid.UUID,
    *,
    worker: str,
    error: str,
    retry_at: datetime | None,
    payload: Mapping[str, Any] | None = None,
    envelope: Envelope | None = None,
) -> bool:
    """Record a failed attempt: pending again at ``retry_at``, or dead when it is None
    (``payload`` then replaces the stored one, scrubbed of tokens, sealed with
    ``envelope``)."""
    values: dict[str, Any] = {
        "locked_by": None,
        "locked_until": None,
        "last_error": error[:500],
    }
    if retry_at is None:
        values["status"] = DEAD
        if payload is not None:
            values["payload"] = seal_payload(envelope, message_id, payload)
    else:
        values.update(status=PENDING, next_attempt_at=retry_at)
    result = await conn.execute(
        update(OutboxMessage).where(_held(message_id, worker)).values(**values)
    )
    return bool(result.rowcount)


async def release(conn: AsyncConnection, message_ids: Collection[uuid.UUID], *, worker: str) -> int:
    """Hand back messages ``worker`` claimed but did not try (it is stopping): pending
    again at once, the claim's attempt not counted."""
    if not message_ids:
        return 0
    result = await conn.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(list(message_ids)),
            OutboxMessage.status == SENDING,
            OutboxMessage.locked_by == worker,
        )
        .values(
            status=PENDING,
            locked_by=None,
            locked_until=None,
            attempts=OutboxMessage.attempts - 1,
        )
    )
    return int(result.rowcount)


async def bury_exhausted(
    conn: AsyncConnection, *, now: datetime, max_attempts: int
) -> list[tuple[uuid.UUID, str]]:
    """Mark dead the messages whose worker died during their last allowed attempt; return
    their ids and kinds (to count and log them)."""
    result = await conn.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.status == SENDING,
            OutboxMessage.locked_until <= now,
            OutboxMessage.attempts >= max_attempts,
        )
        .values(
            status=DEAD,
            locked_by=None,
            locked_until=None,
            last_error="lease expired on the last attempt (worker stopped or crashed)",
            payload={},
        )
        .returning(OutboxMessage.id, OutboxMessage.kind)
    )
    return [(row.id, row.kind) for row in result.all()]


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    """How many messages are in each status."""
    rows = await conn.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    )
    return {status: int(count) for status, count in rows.all()}
