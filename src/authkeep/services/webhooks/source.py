"""Events read from the audit log: the audited change writes nothing more than its audit row.

The audit row already commits with its change, and it holds what an event needs: the action
and outcome the catalogue maps, the organization, the entity, the actor, the details — and,
once committed, its id, hash and time, the reference an event carries. So instead of a second
row written on every audited request (the earlier design: an outbox row in the change's
transaction, +27 % of the audited change's CPU in ``bench/webhooks.py``), a worker reads the
log in id order behind a cursor and turns each catalogue row into ``webhook.event`` outbox
messages, in one transaction with the cursor's move (:mod:`authkeep.db.event_source`):

* **Nothing lost**: a row is consumed only when every id before it was seen, or has been
  missing for :data:`GAP_GRACE` (PostgreSQL draws ids at COMMIT; two organizations' commits
  can finish in either order, and an id drawn by a commit that then failed never appears).
* **Nothing twice**: the events and the cursor commit together; a crash before the commit
  leaves both as they were. Each event's id is derived from its audit row (``uuid5`` of the
  row's id and the event's place among the row's events), so it is the same whoever derives it.
* **One reader**: several workers may call :meth:`AuditEventSource.pump`; the cursor row's
  lock lets one through and the others pass.

With the audit log off (benchmarks only; refused in production) the events are written with
the change as before (:meth:`WebhookEvents.write`), without an audit reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from authkeep import metrics
from authkeep.db import event_source
from authkeep.db import webhooks as rows
from authkeep.db.audit import chain_key
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.services.audit import Actor, AuditEvent
from authkeep.services.outbox import Outbox
from authkeep.services.webhooks.catalogue import SOURCES, events_for
from authkeep.services.webhooks.events import timestamp

log = structlog.get_logger("authkeep.webhooks")

GAP_GRACE = timedelta(seconds=60)
"""How long a missing audit id is waited for before the reader passes it: far longer than a
commit takes between drawing its id and becoming visible."""

_EVENT_IDS = uuid.UUID("5d0c8b7e-6a51-4c3e-9f2a-8f1f0e3c7a11")
"""The namespace of event ids (``uuid5`` of the audit row's id and the event's index)."""


def event_id(audit_id: int, index: int) -> uuid.UUID:
    """The id of the ``index``-th event of audit row ``audit_id``: the same on every run."""
    return uuid.uuid5(_EVENT_IDS, f"{audit_id}:{index}")


class AuditEventSource:
    """Turns committed audit rows into ``webhook.event`` messages (see the module).
    ``enabled=False`` (``AUTHKEEP_WEBHOOKS_ENABLED``) still moves the cursor, making no
    event: switched on again, webhooks start from then, not with everything since."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        *,
        enabled: bool = True,
        batch_size: int = 500,
        gap_grace: timedelta = GAP_GRACE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._enabled = enabled
        self._batch_size = batch_size
        self._gap_grace = gap_grace
        self._clock = clock
        # The newest id this process consumed: a worker that finds nothing newer in the log
        # skips the locked transaction (one index step instead).
        self._consumed = -1

    async def pump(self) -> int:
        """Read one batch past the cursor; return how many events it queued. 0 also when
        another worker is reading."""
        async with self._db.reading() as conn:
            newest = await event_source.newest_id(conn)
        if newest <= self._consumed:
            return 0
        queued = 0
        async with self._db.transaction() as conn:
            position = await event_source.claim(conn)
            if position is None:
                return 0
            found = await event_source.rows_after(conn, position.after, self._batch_size)
            events: list[dict[str, Any]] = []
            moved = self.advance(position, found, events)
            if events:
                await rows.insert_events(conn, events, self._clock(), self._outbox.envelope)
                self._outbox.announce(conn, rows.EVENT_KIND, len(events))
                queued = len(events)
            if moved != position:
                await event_source.save(conn, moved)
        # Rows past it (a gap, the rest of a long backlog) keep the next pump going.
        self._consumed = moved.after
        return queued

    def advance(
        self,
        position: event_source.Position,
        found: Sequence[event_source.AuditRow],
        events: list[dict[str, Any]],
    ) -> event_source.Position:
        """Consume ``found`` in order from ``position``, adding their events to ``events``;
        stop at a gap younger than the grace. Return where the cursor ends."""
        after, gap_since = position.after, position.gap_since
        now = self._clock()
        for row in found:
            if row.id != after + 1:
                if gap_since is None:
                    return event_source.Position(after, now)
                if now - gap_since < self._gap_grace:
                    return event_source.Position(after, gap_since)
                log.warning(
                    "webhook_events_gap_passed",
                    missing_from=after + 1,
                    missing_to=row.id - 1,
                    waited_seconds=round((now - gap_since).total_seconds(), 1),
                )
                metrics.WEBHOOK_EVENT_GAPS.inc()
            gap_since = None
            after = row.id
            if self._enabled:
                events.extend(self.events_of(row))
        return event_source.Position(after, gap_since)

    @staticmethod
    def events_of(row: event_source.AuditRow) -> list[dict[str, Any]]:
        """The events of one audit row (none for most rows): the catalogue's, with ids and
        the audit reference of the row."""
        if (row.action, row.outcome) not in SOURCES:
            return []
        event = AuditEvent(
            row.action,
            row.outcome,  # type: ignore[arg-type]
            actor=Actor(row.actor_user_id, row.actor_api_key_id),
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            org_id=row.org_id,
            details=row.details,
        )
        reference = {"seq": row.id, "hash": row.hash, "chain": chain_key(row.org_id)}
        return [
            {
                **found,
                "id": str(event_id(row.id, index)),
                "occurred_at": timestamp(row.at),
                "audit": reference,
            }
            for index, found in enumerate(events_for(event))
        ]
