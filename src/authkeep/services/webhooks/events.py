"""Events: read from the audit log once their change committed, then fanned out to endpoints.

1. **Derived** (:mod:`authkeep.services.webhooks.source`): an audited change the catalogue
   names writes nothing but its audit row (:class:`WebhookEvents`, the audit log's hook, only
   wakes the workers after the commit). A worker reads the log in order behind a cursor and
   queues each such row's events as ``webhook.event`` outbox messages, with the row's id,
   hash and time, in one transaction with the cursor's move. A change that rolls back has no
   row, so no event; a committed one always has its row, so its events.
2. **Fanned out** (:class:`FanOutHandler`, a worker): the event becomes the body endpoints
   receive, and one delivery per enabled endpoint that wants it and was registered by the
   time it happened — a ``webhook_deliveries`` row and a ``webhook.delivery`` message, in one
   transaction. The pair (event, endpoint) is unique: fan-out that runs again after a crash
   adds nothing, so each endpoint gets each event under one ``webhook-id``.

With the audit log off (benchmarks only) events are written with the change itself
(:meth:`WebhookEvents.write`) and carry no audit reference. Events queued by an earlier
version carry the audit row's content digest instead of its reference; fan-out still finds
their row by it.

Both the event and each delivery's body are stored sealed with the outbox's envelope
(``authkeep.db.webhooks``): an event may name a person.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import webhooks as rows
from authkeep.db.audit import chain_key
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.outbox import ClaimedMessage
from authkeep.services.audit import AuditEvent
from authkeep.services.outbox import Outbox, PermanentDeliveryError
from authkeep.services.webhooks.catalogue import SOURCES, events_for

EVENT_KIND = rows.EVENT_KIND
DELIVERY_KIND = "webhook.delivery"
"""The outbox kind of one event's delivery to one endpoint."""


def timestamp(moment: datetime) -> str:
    """An event's ``timestamp``: RFC 3339, UTC, microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """The moment of an event's ``timestamp``."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class WebhookEvents:
    """The audit log's event hook (see the module docstring). ``enabled=False``
    (``AUTHKEEP_WEBHOOKS_ENABLED``) makes no event."""

    def __init__(self, outbox: Outbox, *, enabled: bool = True) -> None:
        self._outbox = outbox
        self._enabled = enabled

    def wants(self, event: AuditEvent) -> bool:
        """Whether the catalogue makes events of ``event``."""
        return self._enabled and (str(event.action), event.outcome) in SOURCES

    def events_for(self, event: AuditEvent) -> list[dict[str, Any]]:
        """The events ``event`` becomes (none when webhooks are off)."""
        return events_for(event) if self._enabled else []

    async def write(self, conn: AsyncConnection, events: list[dict[str, Any]]) -> None:
        """Queue ``events`` on ``conn``, in its open transaction, stamped now: the audit log
        is off, so no row will give them a time and a reference."""
        now = utcnow()
        await rows.insert_events(
            conn,
            [{**event, "occurred_at": timestamp(now)} for event in events],
            now,
            envelope=self._outbox.envelope,
        )
        self._outbox.announce(conn, EVENT_KIND, len(events))

    def announce(self, conn: AsyncConnection) -> None:
        """Wake this process's worker once ``conn`` commits: its audit row has events to
        read (other workers find them at their next poll)."""
        self._outbox.wake_after_commit(conn)


async def event_body(conn: AsyncConnection, event: Mapping[str, Any]) -> dict[str, Any]:
    """What an endpoint receives for ``event`` (an outbox payload): the Standard Webhooks
    fields, with the time and reference of the audit row that recorded the change (``audit``
    null when there is none: the audit log is off)."""
    audit = event.get("audit")
    moment = str(event["occurred_at"])
    source = event.get("source") or {}
    if audit is None and source.get("digest"):
        # Queued by an earlier version, before its audit row existed: found by its digest.
        found = await rows.audit_reference(
            conn,
            str(source["digest"]),
            action=str(source.get("action") or ""),
            entity_type=source.get("entity_type"),
            entity_id=source.get("entity_id"),
        )
        if found is not None:
            audit = {"seq": found.id, "hash": found.hash, "chain": chain_key(found.org_id)}
            moment = timestamp(found.at)
    return {"type": event["type"], "timestamp": moment, "data": event["data"], "audit": audit}


class FanOutHandler:
    """Turns a ``webhook.event`` into one ``webhook.delivery`` per endpoint that wants it."""

    def __init__(self, db: Database, outbox: Outbox) -> None:
        self._db = db
        self._outbox = outbox

    async def deliver(self, message: ClaimedMessage) -> None:
        """Fan ``message`` out (idempotent: a pair already fanned out is skipped)."""
        event = message.payload
        try:
            event_id = uuid.UUID(str(event["id"]))
            event_type = str(event["type"])
            org_id = uuid.UUID(str(event["org_id"])) if event.get("org_id") else None
            parse_timestamp(str(event["occurred_at"]))
        except (KeyError, ValueError) as exc:
            raise PermanentDeliveryError("malformed event") from exc
        # In the event's organization: its endpoints (row-level security) and the
        # platform's; a platform event sees only the platform's.
        transaction = (
            self._db.tenant_transaction(org_id) if org_id is not None else self._db.transaction()
        )
        async with transaction as conn:
            body = await event_body(conn, event)
            happened = parse_timestamp(body["timestamp"])
            targets = await rows.subscribers(conn, org_id, registered_by=happened)
            for target in targets:
                if not target.wants(event_type):
                    continue
                await enqueue_delivery(
                    conn,
                    self._outbox,
                    endpoint_id=target.id,
                    org_id=target.org_id,
                    event_id=event_id,
                    event_type=event_type,
                    body=body,
                )

    def scrub(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Once fanned out, the event lives on in its deliveries: keep its id and type."""
        return {"id": payload.get("id"), "type": payload.get("type")}


async def enqueue_delivery(
    conn: AsyncConnection,
    outbox: Outbox,
    *,
    endpoint_id: uuid.UUID,
    org_id: uuid.UUID | None,
    event_id: uuid.UUID,
    event_type: str,
    body: Mapping[str, Any],
) -> uuid.UUID | None:
    """One event for one endpoint: its delivery row and its outbox message (None when the
    pair exists already)."""
    delivery_id = await rows.insert_delivery(
        conn,
        endpoint_id=endpoint_id,
        org_id=org_id,
        event_id=event_id,
        event_type=event_type,
        payload=body,
        now=utcnow(),
        envelope=outbox.envelope,
    )
    if delivery_id is not None:
        await outbox.enqueue(
            conn,
            DELIVERY_KIND,
            delivery_message(delivery_id, org_id),
            dedup_key=f"{DELIVERY_KIND}:{event_id}:{endpoint_id}",
        )
    return delivery_id


def delivery_message(
    delivery_id: uuid.UUID, org_id: uuid.UUID | None, *, replay: bool = False
) -> dict[str, Any]:
    """The payload of a ``webhook.delivery`` message: which delivery, in which scope."""
    return {
        "delivery_id": str(delivery_id),
        "org_id": None if org_id is None else str(org_id),
        "replay": replay,
    }
