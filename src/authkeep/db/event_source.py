"""Reading the audit log in order, for webhook events (``authkeep.services.webhooks.source``).

**Where the reader is** is one row of ``maintenance_positions`` (job ``webhook_events``): the
id of the last audit row it consumed and, while it waits at a gap, since when. Migration
0017 starts it at the newest row of an existing log (the events before it were written by
the version that queued them with the change); a database without the row starts at 0.

**One reader at a time.** The row is locked for the reader's transaction (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL: a second worker passes instead of waiting; SQLite's write
transactions are exclusive anyway). The events it derives and the position it moves to
commit together, so a crash in between changes nothing and the next reader starts again
from the same row.

**Gaps.** On PostgreSQL a row's id is drawn at COMMIT, under its chain's lock: within a
chain ids commit in order, but two chains' commits may finish in either order, so for a
moment id 101 can be visible while 100 is not. The reader never passes a missing id until
it has been missing for the grace its caller gives (an id drawn by a commit that then
failed never appears); :func:`rows_after` returns rows in id order for it to walk.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.base import utcnow
from authkeep.db.models import AuditEntry, MaintenancePosition

JOB = "webhook_events"
"""The ``maintenance_positions`` row of the reader."""


@dataclass(frozen=True, slots=True)
class Position:
    """The last audit id consumed, and since when the next one has been missing."""

    after: int
    gap_since: datetime | None = None

    def text(self) -> str:
        """As stored."""
        since = None if self.gap_since is None else self.gap_since.isoformat()
        return json.dumps({"after": self.after, "gap_since": since})

    @classmethod
    def parse(cls, text: str) -> Position:
        """From its stored form (a bare number is a position without a gap)."""
        found = json.loads(text)
        if isinstance(found, int):
            return cls(found)
        since = found.get("gap_since")
        return cls(int(found["after"]), None if since is None else datetime.fromisoformat(since))


@dataclass(frozen=True, slots=True)
class AuditRow:
    """What an event needs of its audit row."""

    id: int
    at: datetime
    hash: str
    org_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    action: str
    outcome: str
    entity_type: str | None
    entity_id: str | None
    details: Mapping[str, Any]


async def claim(conn: AsyncConnection) -> Position | None:
    """The reader's position, locked until ``conn``'s transaction ends; None when another
    transaction holds it (PostgreSQL)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(
        dialect.insert(MaintenancePosition)
        .values(job=JOB, position=Position(0).text(), updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["job"])
    )
    statement = select(MaintenancePosition.position).where(MaintenancePosition.job == JOB)
    if conn.dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    text = (await conn.execute(statement)).scalar_one_or_none()
    return None if text is None else Position.parse(text)


async def save(conn: AsyncConnection, position: Position) -> None:
    """Move the reader to ``position`` (held by :func:`claim` in this transaction)."""
    await conn.execute(
        update(MaintenancePosition)
        .where(MaintenancePosition.job == JOB)
        .values(position=position.text(), updated_at=utcnow())
    )


async def newest_id(conn: AsyncConnection) -> int:
    """The newest committed audit id (0 for an empty log): one index step."""
    found = (
        await conn.execute(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1))
    ).scalar_one_or_none()
    return int(found or 0)


async def rows_after(conn: AsyncConnection, after: int, limit: int) -> Sequence[AuditRow]:
    """Up to ``limit`` committed audit rows with an id above ``after``, in id order."""
    result = await conn.execute(
        select(
            AuditEntry.id,
            AuditEntry.at,
            AuditEntry.hash,
            AuditEntry.org_id,
            AuditEntry.actor_user_id,
            AuditEntry.actor_api_key_id,
            AuditEntry.action,
            AuditEntry.outcome,
            AuditEntry.entity_type,
            AuditEntry.entity_id,
            AuditEntry.details,
        )
        .where(AuditEntry.id > after)
        .order_by(AuditEntry.id)
        .limit(limit)
    )
    return [
        AuditRow(
            id=int(row.id),
            at=row.at,
            hash=str(row.hash),
            org_id=row.org_id,
            actor_user_id=row.actor_user_id,
            actor_api_key_id=row.actor_api_key_id,
            action=str(row.action),
            outcome=str(row.outcome),
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            details=row.details or {},
        )
        for row in result
    ]
