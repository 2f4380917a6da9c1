"""Queries on ``webhook_endpoints`` and ``webhook_deliveries``.

**Tenancy.** Both are tenant tables whose ``organization_id`` may be NULL: an organization's
rows are under the tenant policy of :mod:`authkeep.db.tenancy` (visible only in a
transaction bound to that organization), and a second policy (:func:`
platform_policy_statements`) shows the platform rows (NULL) to every transaction of the app
role — which platform rows a caller may see is the service's rule (platform admins), as with
the API-key lookup policy. Every query here still names its scope (:func:`_scope`): that is
the only guard on SQLite.

**Events and their audit rows.** An audited change's webhook events are read from its
committed audit row by a worker (``authkeep.services.webhooks.source``), which queues them
as ``webhook.event`` outbox rows (:func:`insert_events`) with the row's id and hash; with
the audit log off they are written in the change's own transaction. Events queued by an
earlier version kept the row's content digest instead, and fan-out finds their row by it
(:func:`audit_reference`).

**Sealed payloads.** Events (outbox rows) and deliveries' bodies are stored sealed with the
master data-key ring, each bound to its own row (``authkeep.db.outbox.seal_payload``): an
event may carry an address or a name. Readers open them, and read plain ones (written
before encryption, or without an envelope) as they are. A delivery whose body does not open
reads with an empty body and ``readable`` False: the list still answers, the sender fails
it for good.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import audit, sealed
from authkeep.db.audit_guard import quote_ident
from authkeep.db.models import (
    AuditEntry,
    Membership,
    OutboxMessage,
    User,
    UserKey,
    WebhookDelivery,
    WebhookEndpoint,
)
from authkeep.db.outbox import open_payload, seal_payload
from authkeep.security.envelope import Envelope, SealedValueError

log = structlog.get_logger("authkeep.db")

PLATFORM_POLICY = "authkeep_webhook_platform"
DELIVERY_TABLE = "webhook_deliveries"
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
EVENT_KIND = "webhook.event"
"""The outbox kind of an event waiting to be fanned out to its endpoints."""


def platform_policy_statements(table: str) -> list[str]:
    """The PostgreSQL policy that shows platform rows (``organization_id`` NULL)."""
    return [
        f"CREATE POLICY {PLATFORM_POLICY} ON {quote_ident(table)} AS PERMISSIVE FOR ALL "
        "TO PUBLIC USING (organization_id IS NULL) WITH CHECK (organization_id IS NULL)"
    ]


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """An endpoint as its admins see it: never its secret."""

    id: uuid.UUID
    org_id: uuid.UUID | None
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class EndpointSecrets:
    """An endpoint's sealed signing secrets (the previous one while a rotation lasts)."""

    current: str
    previous: str | None
    previous_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One event for one endpoint."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    org_id: uuid.UUID | None
    event_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    succeeded_at: datetime | None
    readable: bool = True
    """False when the stored body does not open (``payload`` is then empty)."""


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """What a delivery attempt needs: the delivery, its endpoint and the sealed secrets."""

    delivery: DeliveryRecord
    endpoint: EndpointRecord
    secrets: EndpointSecrets


_ENDPOINT_COLUMNS = (
    WebhookEndpoint.id,
    WebhookEndpoint.organization_id,
    WebhookEndpoint.url,
    WebhookEndpoint.description,
    WebhookEndpoint.event_types,
    WebhookEndpoint.enabled,
    WebhookEndpoint.disabled_reason,
    WebhookEndpoint.consecutive_failures,
    WebhookEndpoint.created_by,
    WebhookEndpoint.created_at,
    WebhookEndpoint.updated_at,
    WebhookEndpoint.disabled_at,
    WebhookEndpoint.previous_secret_expires_at,
)
_SECRET_COLUMNS = (
    WebhookEndpoint.secret_sealed,
    WebhookEndpoint.previous_secret_sealed,
    WebhookEndpoint.previous_secret_expires_at,
)
_DELIVERY_COLUMNS = (
    WebhookDelivery.id,
    WebhookDelivery.endpoint_id,
    WebhookDelivery.organization_id,
    WebhookDelivery.event_id,
    WebhookDelivery.event_type,
    WebhookDelivery.payload,
    WebhookDelivery.status,
    WebhookDelivery.attempts,
    WebhookDelivery.last_status_code,
    WebhookDelivery.last_error,
    WebhookDelivery.created_at,
    WebhookDelivery.last_attempt_at,
    WebhookDelivery.succeeded_at,
)


def _endpoint(row: Sequence[Any]) -> EndpointRecord:
    values = list(row)
    values[4] = [str(item) for item in values[4] or []]
    return EndpointRecord(*values)


def _delivery(envelope: Envelope | None, row: Sequence[Any]) -> DeliveryRecord:
    values = list(row)
    readable = True
    try:
        values[5] = open_payload(envelope, values[0], values[5] or {}, table=DELIVERY_TABLE)
    except SealedValueError:
        log.error(
            "sealed_value_unreadable", table=DELIVERY_TABLE, column="payload", row_id=str(values[0])
        )
        values[5], readable = {}, False
    record = DeliveryRecord(*values)
    return record if readable else replace(record, readable=False)


def _scope(column: Any, org_id: uuid.UUID | None) -> ColumnElement[bool]:
    # NULL is the platform's scope: "= NULL" would match nothing, so it is spelt IS NULL.
    return column.is_(None) if org_id is None else column == org_id  # type: ignore[no-any-return]


async def insert_endpoint(
    conn: AsyncConnection,
    *,
    endpoint_id: uuid.UUID,
    org_id: uuid.UUID | None,
    url: str,
    description: str,
    event_types: Sequence[str],
    secret_sealed: str,
    created_by: uuid.UUID | None,
    now: datetime,
) -> EndpointRecord:
    """Store a new, enabled endpoint."""
    await conn.execute(
        insert(WebhookEndpoint).values(
            id=endpoint_id,
            organization_id=org_id,
            url=url,
            description=description,
            event_types=list(event_types),
            enabled=True,
            secret_sealed=secret_sealed,
            consecutive_failures=0,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
    )
    return EndpointRecord(
        endpoint_id,
        org_id,
        url,
        description,
        list(event_types),
        True,
        None,
        0,
        created_by,
        now,
        now,
        None,
        None,
    )


async def endpoints_of(conn: AsyncConnection, org_id: uuid.UUID | None) -> list[EndpointRecord]:
    """The endpoints of an organization (or the platform's, for None), oldest first."""
    rows = await conn.execute(
        select(*_ENDPOINT_COLUMNS)
        .where(_scope(WebhookEndpoint.organization_id, org_id))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return [_endpoint(row) for row in rows]


async def get_endpoint(
    conn: AsyncConnection, endpoint_id: uuid.UUID, org_id: uuid.UUID | None
) -> EndpointRecord | None:
    """One endpoint of the scope, or None (also for another scope's endpoint)."""
    row = (
        await conn.execute(
            select(*_ENDPOINT_COLUMNS).where(
                WebhookEndpoint.id == endpoint_id,
                _scope(WebhookEndpoint.organization_id, org_id),
            )
        )
    ).first()
    return _endpoint(row) if row else None


async def get_secrets(
    conn: AsyncConnection, endpoint_id: uuid.UUID, org_id: uuid.UUID | None
) -> EndpointSecrets | None:
    """An endpoint's sealed secrets (locked for update on PostgreSQL: a rotation reads and
    rewrites them)."""
    statement = select(*_SECRET_COLUMNS).where(
        WebhookEndpoint.id == endpoint_id, _scope(WebhookEndpoint.organization_id, org_id)
    )
    if conn.dialect.name == "postgresql":
        statement = statement.with_for_update()
    row = (await conn.execute(statement)).first()
    return EndpointSecrets(row[0], row[1], row[2]) if row else None


async def update_endpoint(
    conn: AsyncConnection,
    endpoint_id: uuid.UUID,
    org_id: uuid.UUID | None,
    values: Mapping[str, Any],
) -> bool:
    """Set columns of one endpoint of the scope; False when there is none."""
    result = await conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, _scope(WebhookEndpoint.organization_id, org_id))
        .values(**values)
    )
    return bool(result.rowcount)


async def delete_endpoint(
    conn: AsyncConnection, endpoint_id: uuid.UUID, org_id: uuid.UUID | None
) -> bool:
    """Delete one endpoint of the scope and its deliveries (cascade)."""
    await conn.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
    result = await conn.execute(
        delete(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, _scope(WebhookEndpoint.organization_id, org_id)
        )
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """An enabled endpoint that may want an event."""

    id: uuid.UUID
    org_id: uuid.UUID | None
    event_types: list[str]

    def wants(self, event_type: str) -> bool:
        """Whether the endpoint's filter lets ``event_type`` through (empty: every type)."""
        return not self.event_types or event_type in self.event_types


async def subscribers(
    conn: AsyncConnection, org_id: uuid.UUID | None, *, registered_by: datetime
) -> list[Subscriber]:
    """Enabled endpoints registered by ``registered_by`` that receive events of ``org_id``'s
    chain: the platform's, and the organization's own."""
    scope: ColumnElement[bool] = WebhookEndpoint.organization_id.is_(None)
    if org_id is not None:
        scope = or_(scope, WebhookEndpoint.organization_id == org_id)
    rows = await conn.execute(
        select(
            WebhookEndpoint.id, WebhookEndpoint.organization_id, WebhookEndpoint.event_types
        ).where(
            scope,
            WebhookEndpoint.enabled.is_(True),
            WebhookEndpoint.created_at <= registered_by,
        )
    )
    return [Subscriber(row[0], row[1], [str(t) for t in row[2] or []]) for row in rows]


async def insert_delivery(
    conn: AsyncConnection,
    *,
    endpoint_id: uuid.UUID,
    org_id: uuid.UUID | None,
    event_id: uuid.UUID,
    event_type: str,
    payload: Mapping[str, Any],
    now: datetime,
    envelope: Envelope | None = None,
) -> uuid.UUID | None:
    """Add the delivery of an event to an endpoint (its body sealed with ``envelope``);
    None when it exists already (fan-out ran again after a crash): one delivery, so one
    ``webhook-id``, per pair."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    table = WebhookDelivery.__table__
    delivery_id = uuid.uuid4()
    statement = (
        dialect.insert(table)
        .values(
            id=delivery_id,
            endpoint_id=endpoint_id,
            organization_id=org_id,
            event_id=event_id,
            event_type=event_type,
            payload=seal_payload(envelope, delivery_id, payload, table=DELIVERY_TABLE),
            status=PENDING,
            attempts=0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["event_id", "endpoint_id"])
        .returning(WebhookDelivery.id)
    )
    return (await conn.execute(statement)).scalar_one_or_none()


async def delivery_target(
    conn: AsyncConnection,
    delivery_id: uuid.UUID,
    org_id: uuid.UUID | None,
    *,
    envelope: Envelope | None = None,
) -> DeliveryTarget | None:
    """A delivery (its body opened with ``envelope``) with its endpoint and sealed secrets,
    in one query."""
    row = (
        await conn.execute(
            select(*_DELIVERY_COLUMNS, *_ENDPOINT_COLUMNS, *_SECRET_COLUMNS)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.id == delivery_id,
                _scope(WebhookDelivery.organization_id, org_id),
            )
        )
    ).first()
    if row is None:
        return None
    values = tuple(row)
    split = len(_DELIVERY_COLUMNS)
    end = split + len(_ENDPOINT_COLUMNS)
    return DeliveryTarget(
        _delivery(envelope, values[:split]),
        _endpoint(values[split:end]),
        EndpointSecrets(*values[end:]),
    )


async def record_attempt(
    conn: AsyncConnection,
    delivery_id: uuid.UUID,
    *,
    status: str,
    status_code: int | None,
    error: str | None,
    now: datetime,
) -> None:
    """Record one attempt of a delivery and its outcome."""
    values: dict[str, Any] = {
        "status": status,
        "attempts": WebhookDelivery.attempts + 1,
        "last_status_code": status_code,
        "last_error": None if error is None else error[:500],
        "last_attempt_at": now,
    }
    if status == SUCCEEDED:
        values["succeeded_at"] = now
    await conn.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)
    )


async def cancel_delivery(conn: AsyncConnection, delivery_id: uuid.UUID, reason: str) -> None:
    """Give a delivery up without an attempt (its endpoint is disabled)."""
    await conn.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(status=CANCELLED, last_error=reason[:500])
    )


async def count_failure(conn: AsyncConnection, endpoint_id: uuid.UUID) -> int:
    """One more consecutive failed attempt; the new count (0: the endpoint is gone)."""
    result = await conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(consecutive_failures=WebhookEndpoint.consecutive_failures + 1)
        .returning(WebhookEndpoint.consecutive_failures)
    )
    found = result.scalar_one_or_none()
    return int(found or 0)


async def reset_failures(conn: AsyncConnection, endpoint_id: uuid.UUID) -> None:
    """A success: the count of consecutive failures starts again (no write when it is 0)."""
    await conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.consecutive_failures != 0)
        .values(consecutive_failures=0)
    )


async def disable(
    conn: AsyncConnection, endpoint_id: uuid.UUID, *, reason: str, now: datetime
) -> bool:
    """Disable an enabled endpoint; True when this call did it (so only one caller emails
    its admins and writes the audit row)."""
    result = await conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled.is_(True))
        .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
    )
    return bool(result.rowcount)


async def deliveries_of(
    conn: AsyncConnection,
    endpoint_id: uuid.UUID,
    org_id: uuid.UUID | None,
    *,
    before: datetime | None,
    limit: int,
    envelope: Envelope | None = None,
) -> list[DeliveryRecord]:
    """An endpoint's deliveries, newest first, created before ``before`` (bodies opened
    with ``envelope``)."""
    statement = select(*_DELIVERY_COLUMNS).where(
        WebhookDelivery.endpoint_id == endpoint_id,
        _scope(WebhookDelivery.organization_id, org_id),
    )
    if before is not None:
        statement = statement.where(WebhookDelivery.created_at < before)
    rows = await conn.execute(
        statement.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
    )
    return [_delivery(envelope, row) for row in rows]


async def get_delivery(
    conn: AsyncConnection,
    delivery_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    org_id: uuid.UUID | None,
    *,
    envelope: Envelope | None = None,
) -> DeliveryRecord | None:
    """One delivery of an endpoint of the scope (its body opened with ``envelope``)."""
    row = (
        await conn.execute(
            select(*_DELIVERY_COLUMNS).where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.endpoint_id == endpoint_id,
                _scope(WebhookDelivery.organization_id, org_id),
            )
        )
    ).first()
    return _delivery(envelope, row) if row else None


async def reopen_delivery(conn: AsyncConnection, delivery_id: uuid.UUID) -> None:
    """A replay: the delivery is pending again (its attempts so far are kept)."""
    await conn.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(status=PENDING, last_error=None)
    )


async def admin_recipients(
    conn: AsyncConnection, envelope: Envelope, org_id: uuid.UUID | None
) -> list[str]:
    """Whom to tell about an endpoint of ``org_id``: its admins; for the platform's, the
    platform admins. Active, undeleted accounts only (at most 50, oldest first); addresses
    that cannot be read are left out."""
    live = and_(User.is_active.is_(True), User.deleted_at.is_(None))
    columns = (User.id, User.email, UserKey.wrapped_key)
    if org_id is None:
        statement = select(*columns).where(live, User.is_superuser.is_(True))
    else:
        statement = (
            select(*columns)
            .join(Membership, Membership.user_id == User.id)
            .where(live, Membership.organization_id == org_id, Membership.role == "admin")
        )
    # Addresses are sealed (db/users.py): ordered by account age, not by address.
    rows = await conn.execute(
        statement.outerjoin(UserKey, UserKey.user_id == User.id)
        .order_by(User.created_at, User.id)
        .limit(50)
    )
    found = (
        sealed.open_user(
            sealed.user_cipher(envelope, user_id, wrapped), "users", "email", user_id, email
        )
        for user_id, email, wrapped in rows
    )
    return sorted(email for email in found if email)


async def count_endpoints(conn: AsyncConnection, org_id: uuid.UUID | None) -> int:
    """How many endpoints the scope has (a cap on registrations)."""
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(WebhookEndpoint)
                .where(_scope(WebhookEndpoint.organization_id, org_id))
            )
        ).scalar_one()
    )


_EVENT_INSERT = (
    "INSERT INTO outbox (id, kind, payload, status, attempts, next_attempt_at, created_at) "
    "VALUES ($1, 'webhook.event', $2, 'pending', 0, $3, $3)"
)


async def insert_events(
    conn: AsyncConnection,
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    envelope: Envelope | None = None,
) -> None:
    """Queue ``events`` (``webhook.event`` outbox rows, each under its own ``id``, sealed
    with ``envelope``) in ``conn``'s open transaction."""
    if conn.dialect.name != "postgresql":
        for event in events:
            event_id = uuid.UUID(str(event["id"]))
            await conn.execute(
                insert(OutboxMessage).values(
                    id=event_id,
                    kind=EVENT_KIND,
                    payload=seal_payload(envelope, event_id, event),
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        return
    # Straight to the driver, in one batch (a reader of the audit log queues up to a few
    # hundred at once). SQLAlchemy sends BEGIN with its own first statement: were this the first,
    # it would commit on its own, outside the change's transaction.
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not driver.is_in_transaction():  # type: ignore[union-attr]
        await conn.exec_driver_sql("SELECT 1")
    ids = [uuid.UUID(str(event["id"])) for event in events]
    await driver.executemany(  # type: ignore[union-attr]
        _EVENT_INSERT,
        [
            # The connection's jsonb codec takes JSON text.
            (event_id, json.dumps(seal_payload(envelope, event_id, event), allow_nan=False), now)
            for event_id, event in zip(ids, events, strict=True)
        ],
    )


@dataclass(frozen=True, slots=True)
class AuditReference:
    """The audit row an event names: its id (``seq``), hash, time and chain."""

    id: int
    hash: str
    at: datetime
    org_id: uuid.UUID | None


async def audit_reference(
    conn: AsyncConnection,
    digest: str,
    *,
    action: str,
    entity_type: str | None,
    entity_id: str | None,
) -> AuditReference | None:
    """The committed audit row whose content digest is ``digest`` (None: there is none —
    the audit log is off). Candidates come through the entity index (the row's action and
    entity are the event's source); the digest is recomputed from each stored row, as
    ``authkeep audit verify`` does."""
    statement = select(
        AuditEntry.id,
        AuditEntry.hash,
        AuditEntry.at,
        AuditEntry.org_id,
        AuditEntry.actor_user_id,
        AuditEntry.actor_api_key_id,
        AuditEntry.request_id,
        AuditEntry.ip,
        AuditEntry.entity_type,
        AuditEntry.entity_id,
        AuditEntry.outcome,
        AuditEntry.details,
    ).where(AuditEntry.action == action)
    if entity_type is not None and entity_id is not None:
        statement = statement.where(
            AuditEntry.entity_type == entity_type, AuditEntry.entity_id == entity_id
        )
    rows = await conn.execute(statement.order_by(AuditEntry.id.desc()).limit(200))
    for row in rows:
        content = audit.canonical(
            org_id=row.org_id,
            actor_user_id=row.actor_user_id,
            actor_api_key_id=row.actor_api_key_id,
            request_id=row.request_id,
            ip=row.ip,
            action=action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            outcome=row.outcome,
            details=row.details or {},
        )
        if hashlib.sha256(content).hexdigest() == digest:
            return AuditReference(int(row.id), str(row.hash), row.at, row.org_id)
    return None
