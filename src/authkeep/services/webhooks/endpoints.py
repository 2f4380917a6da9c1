"""Managing webhook endpoints: the use cases behind ``/api/v1/webhooks`` (an organization's
admins) and ``/api/v1/admin/webhooks`` (platform admins).

A :class:`Scope` says whose endpoints a call manages: an organization's (its events only;
row-level security on PostgreSQL) or the platform's (every event). An endpoint of another
scope is never found (404), so its id tells the caller nothing. Every change is audited in
its own transaction, in the scope's audit chain.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import webhooks as rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.errors import Conflict, NotFound, PermissionDenied
from authkeep.security.data_keys import SecretBox
from authkeep.security.envelope import Envelope
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.authn import Principal
from authkeep.services.authz import OrgAccess
from authkeep.services.context import RequestInfo
from authkeep.services.outbox import Outbox
from authkeep.services.webhooks import signing
from authkeep.services.webhooks.catalogue import EVENT_TYPES, TEST_EVENT
from authkeep.services.webhooks.config import WebhookConfig
from authkeep.services.webhooks.events import (
    DELIVERY_KIND,
    delivery_message,
    enqueue_delivery,
    timestamp,
)
from authkeep.services.webhooks.ssrf import AddressRefused, host_of

log = structlog.get_logger("authkeep.webhooks")

ENDPOINT_NOT_FOUND = "Webhook endpoint not found"
DELIVERY_NOT_FOUND = "Webhook delivery not found"
ENDPOINT_DISABLED = "The endpoint is disabled: enable it first"
MAX_EVENT_TYPES = 50


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose endpoints: an organization's (``org_id``) or, with None, the platform's."""

    org_id: uuid.UUID | None
    principal: Principal

    @classmethod
    def organization(cls, access: OrgAccess) -> Scope:
        """An organization's endpoints, managed by one of its admins (a user session)."""
        if access.is_api_key:
            raise PermissionDenied("Webhook endpoints are managed with a user session")
        access.require("admin")
        return cls(access.org_id, access.principal)

    @classmethod
    def platform(cls, principal: Principal) -> Scope:
        """The platform's endpoints (every event): platform admins only."""
        if principal.is_api_key or not principal.user.is_superuser:
            raise PermissionDenied("Platform webhooks are for platform admins")
        return cls(None, principal)

    @property
    def actor(self) -> Actor:
        """The audit log's actor."""
        return Actor.of(self.principal)


@dataclass(frozen=True, slots=True)
class EndpointWithSecret:
    """An endpoint and its signing secret, shown once (creation, rotation)."""

    endpoint: rows.EndpointRecord
    secret: str


class WebhookEndpoints:
    """Register, change, rotate, list, replay and test endpoints."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        outbox: Outbox,
        box: SecretBox,
        config: WebhookConfig,
    ) -> None:
        self._db = db
        self._audit = audit
        self._outbox = outbox
        self._box = box
        self._config = config
        # Opens the deliveries' sealed bodies (the outbox's envelope seals them).
        self._envelope = outbox.envelope if outbox.envelope is not None else Envelope(box)

    @asynccontextmanager
    async def _transaction(self, scope: Scope) -> AsyncIterator[AsyncConnection]:
        if scope.org_id is None:
            async with self._db.transaction() as conn:
                yield conn
        else:
            async with self._db.tenant_transaction(scope.org_id) as conn:
                yield conn

    @asynccontextmanager
    async def _reading(self, scope: Scope) -> AsyncIterator[AsyncConnection]:
        if scope.org_id is None:
            async with self._db.read_transaction() as conn:
                yield conn
        else:
            async with self._db.tenant_reading(scope.org_id) as conn:
                yield conn

    async def _checked_url(self, url: str) -> str:
        try:
            await self._config.policy.check(url)
        except AddressRefused as exc:
            raise FieldError("url", f"Endpoint URL refused: {exc}") from None
        return url

    @staticmethod
    def _checked_types(event_types: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(event_types))
        if len(wanted) > MAX_EVENT_TYPES:
            raise FieldError("event_types", f"At most {MAX_EVENT_TYPES} event types")
        unknown = [name for name in wanted if name not in EVENT_TYPES or name == TEST_EVENT]
        if unknown:
            # The names are the caller's own input, but an error never repeats input.
            raise FieldError(
                "event_types", "Unknown event type: see the catalogue in docs/webhooks.md"
            )
        return wanted

    def _event(
        self, scope: Scope, action: Action, endpoint_id: uuid.UUID, details: dict[str, Any]
    ) -> AuditEvent:
        return AuditEvent(
            action,
            actor=scope.actor,
            entity_type="webhook_endpoint",
            entity_id=endpoint_id,
            org_id=scope.org_id,
            details=details,
        )

    async def endpoints(self, scope: Scope) -> list[rows.EndpointRecord]:
        """The scope's endpoints."""
        async with self._reading(scope) as conn:
            return await rows.endpoints_of(conn, scope.org_id)

    async def get(self, scope: Scope, endpoint_id: uuid.UUID) -> rows.EndpointRecord:
        """One endpoint of the scope."""
        async with self._reading(scope) as conn:
            found = await rows.get_endpoint(conn, endpoint_id, scope.org_id)
        if found is None:
            raise NotFound(ENDPOINT_NOT_FOUND)
        return found

    async def create(
        self,
        scope: Scope,
        *,
        url: str,
        description: str = "",
        event_types: Sequence[str] = (),
        info: RequestInfo | None = None,
    ) -> EndpointWithSecret:
        """Register an endpoint; its secret is in the answer and nowhere else in clear."""
        url = await self._checked_url(url)
        types = self._checked_types(event_types)
        endpoint_id = uuid.uuid4()
        secret = signing.new_secret()
        now = utcnow()
        async with self._transaction(scope) as conn:
            if await rows.count_endpoints(conn, scope.org_id) >= self._config.max_endpoints:
                raise Conflict(f"At most {self._config.max_endpoints} endpoints: delete one first")
            record = await rows.insert_endpoint(
                conn,
                endpoint_id=endpoint_id,
                org_id=scope.org_id,
                url=url,
                description=description,
                event_types=types,
                secret_sealed=signing.seal(self._box, secret, endpoint_id),
                created_by=scope.principal.user.id,
                now=now,
            )
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    Action.WEBHOOK_ENDPOINT_CREATED,
                    endpoint_id,
                    {"host": host_of(url), "event_types": types},
                ),
                info,
            )
        log.info("webhook_endpoint_created", endpoint_id=str(endpoint_id), host=host_of(url))
        return EndpointWithSecret(record, secret)

    async def update(
        self,
        scope: Scope,
        endpoint_id: uuid.UUID,
        *,
        url: str | None = None,
        description: str | None = None,
        event_types: Sequence[str] | None = None,
        enabled: bool | None = None,
        info: RequestInfo | None = None,
    ) -> rows.EndpointRecord:
        """Change an endpoint. Enabling a disabled one starts its failure count again."""
        values: dict[str, Any] = {}
        details: dict[str, Any] = {}
        if url is not None:
            values["url"] = await self._checked_url(url)
            details["host"] = host_of(url)
        if description is not None:
            values["description"] = description
            details["description"] = True
        if event_types is not None:
            values["event_types"] = details["event_types"] = self._checked_types(event_types)
        now = utcnow()
        async with self._transaction(scope) as conn:
            current = await rows.get_endpoint(conn, endpoint_id, scope.org_id)
            if current is None:
                raise NotFound(ENDPOINT_NOT_FOUND)
            if enabled is not None and enabled != current.enabled:
                details["enabled"] = enabled
                values.update(enabled=enabled, disabled_at=None if enabled else now)
                values["disabled_reason"] = None if enabled else "admin"
                if enabled:
                    values["consecutive_failures"] = 0
            if not values:
                return current
            values["updated_at"] = now
            await rows.update_endpoint(conn, endpoint_id, scope.org_id, values)
            await self._audit.record(
                conn,
                self._event(scope, Action.WEBHOOK_ENDPOINT_UPDATED, endpoint_id, details),
                info,
            )
            updated = await rows.get_endpoint(conn, endpoint_id, scope.org_id)
        if updated is None:  # deleted between the two statements: as if never there
            raise NotFound(ENDPOINT_NOT_FOUND)
        return updated

    async def delete(
        self, scope: Scope, endpoint_id: uuid.UUID, info: RequestInfo | None = None
    ) -> None:
        """Delete an endpoint and its deliveries (queued ones are dropped when their turn
        comes)."""
        async with self._transaction(scope) as conn:
            found = await rows.get_endpoint(conn, endpoint_id, scope.org_id)
            if found is None or not await rows.delete_endpoint(conn, endpoint_id, scope.org_id):
                raise NotFound(ENDPOINT_NOT_FOUND)
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    Action.WEBHOOK_ENDPOINT_DELETED,
                    endpoint_id,
                    {"host": host_of(found.url)},
                ),
                info,
            )

    async def rotate_secret(
        self, scope: Scope, endpoint_id: uuid.UUID, info: RequestInfo | None = None
    ) -> EndpointWithSecret:
        """A new signing secret, shown once. The previous one keeps signing (a second
        signature) for ``AUTHKEEP_WEBHOOK_SECRET_ROTATION_HOURS``; a rotation during a
        rotation drops the oldest."""
        secret = signing.new_secret()
        now = utcnow()
        grace = self._config.rotation_grace
        async with self._transaction(scope) as conn:
            sealed = await rows.get_secrets(conn, endpoint_id, scope.org_id)
            if sealed is None:
                raise NotFound(ENDPOINT_NOT_FOUND)
            values: dict[str, Any] = {
                "secret_sealed": signing.seal(self._box, secret, endpoint_id),
                "previous_secret_sealed": None,
                "previous_secret_expires_at": None,
                "updated_at": now,
            }
            if grace:
                current = signing.open_sealed(self._box, sealed.current, endpoint_id)
                values["previous_secret_sealed"] = signing.seal(
                    self._box, current, endpoint_id, previous=True
                )
                values["previous_secret_expires_at"] = now + grace
            await rows.update_endpoint(conn, endpoint_id, scope.org_id, values)
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    Action.WEBHOOK_SECRET_ROTATED,
                    endpoint_id,
                    {"previous_valid_until": _iso(values["previous_secret_expires_at"])},
                ),
                info,
            )
            record = await rows.get_endpoint(conn, endpoint_id, scope.org_id)
        if record is None:
            raise NotFound(ENDPOINT_NOT_FOUND)
        return EndpointWithSecret(record, secret)

    async def deliveries(
        self,
        scope: Scope,
        endpoint_id: uuid.UUID,
        *,
        before: datetime | None = None,
        limit: int = 50,
    ) -> list[rows.DeliveryRecord]:
        """An endpoint's deliveries, newest first."""
        async with self._reading(scope) as conn:
            if await rows.get_endpoint(conn, endpoint_id, scope.org_id) is None:
                raise NotFound(ENDPOINT_NOT_FOUND)
            return await rows.deliveries_of(
                conn, endpoint_id, scope.org_id, before=before, limit=limit, envelope=self._envelope
            )

    async def replay(
        self,
        scope: Scope,
        endpoint_id: uuid.UUID,
        delivery_id: uuid.UUID,
        info: RequestInfo | None = None,
    ) -> rows.DeliveryRecord:
        """Send one delivery again, now, under its own ``webhook-id`` (a receiver that
        processed it already recognises it); its retry schedule starts afresh."""
        async with self._transaction(scope) as conn:
            endpoint = await rows.get_endpoint(conn, endpoint_id, scope.org_id)
            found = await rows.get_delivery(
                conn, delivery_id, endpoint_id, scope.org_id, envelope=self._envelope
            )
            if endpoint is None or found is None:
                raise NotFound(DELIVERY_NOT_FOUND)
            if not endpoint.enabled:
                raise Conflict(ENDPOINT_DISABLED)
            await rows.reopen_delivery(conn, delivery_id)
            await self._outbox.enqueue(
                conn,
                DELIVERY_KIND,
                delivery_message(delivery_id, scope.org_id, replay=True),
            )
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.WEBHOOK_DELIVERY_REPLAYED,
                    actor=scope.actor,
                    entity_type="webhook_delivery",
                    entity_id=delivery_id,
                    org_id=scope.org_id,
                    details={"endpoint_id": str(endpoint_id), "event_type": found.event_type},
                ),
                info,
            )
            replayed = await rows.get_delivery(
                conn, delivery_id, endpoint_id, scope.org_id, envelope=self._envelope
            )
        if replayed is None:
            raise NotFound(DELIVERY_NOT_FOUND)
        return replayed

    async def send_test(
        self, scope: Scope, endpoint_id: uuid.UUID, info: RequestInfo | None = None
    ) -> rows.DeliveryRecord:
        """Queue a ``webhook.test`` event to one endpoint (whatever its filter)."""
        event_id = uuid.uuid4()
        body = {
            "type": TEST_EVENT,
            "timestamp": timestamp(utcnow()),
            "data": {"endpoint_id": str(endpoint_id), "message": "A test event from authkeep"},
            "audit": None,
        }
        async with self._transaction(scope) as conn:
            endpoint = await rows.get_endpoint(conn, endpoint_id, scope.org_id)
            if endpoint is None:
                raise NotFound(ENDPOINT_NOT_FOUND)
            if not endpoint.enabled:
                raise Conflict(ENDPOINT_DISABLED)
            delivery_id = await enqueue_delivery(
                conn,
                self._outbox,
                endpoint_id=endpoint_id,
                org_id=scope.org_id,
                event_id=event_id,
                event_type=TEST_EVENT,
                body=body,
            )
            await self._audit.record(
                conn,
                self._event(scope, Action.WEBHOOK_ENDPOINT_TESTED, endpoint_id, {}),
                info,
            )
            found = (
                await rows.get_delivery(
                    conn, delivery_id, endpoint_id, scope.org_id, envelope=self._envelope
                )
                if delivery_id is not None
                else None
            )
        if found is None:
            raise NotFound(DELIVERY_NOT_FOUND)
        return found


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
