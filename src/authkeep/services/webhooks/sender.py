"""Posting one delivery: the handler of ``webhook.delivery`` outbox messages.

Per attempt (Standard Webhooks):

* the body is the event (``{"type", "timestamp", "data", "audit"}``, compact JSON);
* ``webhook-id`` is the event's id (``msg_<hex>``): the same on every attempt, on every
  worker, and on a replay, so a receiver that keeps the ids it processed processes each
  event once however often it arrives (delivery is at-least-once: a worker that dies after
  the receiver answered, before recording it, means one more attempt);
* ``webhook-timestamp`` is the attempt's time and ``webhook-signature`` one ``v1,<base64>``
  per live secret (two during a rotation);
* the request goes through :class:`~authkeep.services.webhooks.transport.GuardedTransport`
  (no SSRF, no redirects), and is cut off after ``AUTHKEEP_WEBHOOK_TIMEOUT_SECONDS``.

Outcomes: a 2xx succeeds (the endpoint's failure count starts again); ``410 Gone``
disables the endpoint at once (the receiver says it is gone for good); anything else
(another status, a timeout, a refused address, a connection error) fails the attempt, and
the outbox retries it on the endpoint's schedule. After ``AUTHKEEP_WEBHOOK_FAILURE_LIMIT``
failed attempts in a row the endpoint is disabled. Disabling writes an audit row and emails
the endpoint's admins (the organization's, or the platform admins); deliveries that come up
for a disabled endpoint are cancelled (a replay sends them once it is enabled again).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import metrics
from authkeep.db import webhooks as rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.outbox import ClaimedMessage
from authkeep.security.data_keys import SealedValueError, SecretBox
from authkeep.security.envelope import Envelope
from authkeep.services.audit import Action, AuditEvent, AuditLog
from authkeep.services.mail import Mailer
from authkeep.services.outbox import DeliveryError, PermanentDeliveryError
from authkeep.services.webhooks import signing
from authkeep.services.webhooks.config import WebhookConfig
from authkeep.services.webhooks.ssrf import AddressRefused, host_of

log = structlog.get_logger("authkeep.webhooks")

DISABLED_TEMPLATE = "webhook_disabled"
USER_AGENT = "authkeep-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024
GONE = 410
UNREADABLE = (
    "the stored body does not open: sealed for another delivery, or with a data key that is "
    "not in AUTHKEEP_DATA_KEYS"
)


def message_id(event_id: uuid.UUID) -> str:
    """The ``webhook-id`` of an event."""
    return f"msg_{event_id.hex}"


def encode_body(payload: Mapping[str, Any]) -> str:
    """The body as sent and signed: compact JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to. ``outcome``: ``success``, ``http_error``, ``gone``,
    ``timeout``, ``refused`` (address not allowed) or ``connection_error``."""

    outcome: str
    status_code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the receiver accepted the event."""
        return self.outcome == "success"


class WebhookSender:
    """Delivers ``webhook.delivery`` messages (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        client: httpx.AsyncClient,
        config: WebhookConfig,
        *,
        audit: AuditLog,
        mailer: Mailer,
        envelope: Envelope | None = None,
    ) -> None:
        self._db = db
        self._box = box
        # Opens the deliveries' sealed bodies and the admins' addresses; the service's own
        # (its remembered user keys) when given.
        self._envelope = envelope if envelope is not None else Envelope(box)
        self._client = client
        self._config = config
        self._audit = audit
        self._mailer = mailer

    @asynccontextmanager
    async def _transaction(self, org_id: uuid.UUID | None) -> AsyncIterator[AsyncConnection]:
        if org_id is None:
            async with self._db.transaction() as conn:
                yield conn
        else:
            async with self._db.tenant_transaction(org_id) as conn:
                yield conn

    @asynccontextmanager
    async def _reading(self, org_id: uuid.UUID | None) -> AsyncIterator[AsyncConnection]:
        # A platform delivery needs no transaction-scoped setting: one autocommit read.
        if org_id is None:
            async with self._db.reading() as conn:
                yield conn
        else:
            async with self._db.tenant_reading(org_id) as conn:
                yield conn

    async def deliver(self, message: ClaimedMessage) -> None:
        """One attempt of one delivery; raises when it failed (see the module docstring)."""
        payload = message.payload
        try:
            delivery_id = uuid.UUID(str(payload["delivery_id"]))
            org_id = uuid.UUID(str(payload["org_id"])) if payload.get("org_id") else None
        except (KeyError, ValueError) as exc:
            raise PermanentDeliveryError("malformed delivery message") from exc
        async with self._reading(org_id) as conn:
            target = await rows.delivery_target(conn, delivery_id, org_id, envelope=self._envelope)
        if target is None:
            # Deleted with its endpoint: nothing left to deliver.
            log.info("webhook_delivery_dropped", delivery_id=str(delivery_id))
            return
        if not target.endpoint.enabled:
            async with self._transaction(org_id) as conn:
                await rows.cancel_delivery(conn, delivery_id, "the endpoint is disabled")
            metrics.WEBHOOK_DELIVERIES.labels("cancelled").inc()
            return
        if not target.delivery.readable:
            # Its sealed body does not open (copied from another delivery, or sealed with a
            # data key no longer in the ring): no retry can send it, and it says nothing
            # about the endpoint, whose failure count stays as it is.
            async with self._transaction(org_id) as conn:
                await rows.record_attempt(
                    conn,
                    delivery_id,
                    status=rows.FAILED,
                    status_code=None,
                    error=UNREADABLE,
                    now=utcnow(),
                )
            log.error("webhook_delivery_unreadable", delivery_id=str(delivery_id))
            raise PermanentDeliveryError(UNREADABLE)
        if target.delivery.status == rows.SUCCEEDED and not payload.get("replay"):
            # Recorded as delivered by a worker that died before settling the message:
            # the receiver has it, sending it again would only cost a duplicate.
            return
        attempt = await self._post(target)
        metrics.WEBHOOK_DELIVERIES.labels(attempt.outcome).inc()
        disabled = await self._settle(target, attempt, last=self._is_last(message))
        log.info(
            "webhook_attempt",
            delivery_id=str(delivery_id),
            endpoint_id=str(target.endpoint.id),
            event_type=target.delivery.event_type,
            outcome=attempt.outcome,
            status_code=attempt.status_code,
            attempt=message.attempts,
        )
        if attempt.ok:
            return
        error = attempt.error or attempt.outcome
        if disabled:
            raise PermanentDeliveryError(f"{error}; endpoint disabled ({disabled})")
        raise DeliveryError(error)

    def _is_last(self, message: ClaimedMessage) -> bool:
        return message.attempts >= self._config.schedule.max_attempts

    def _secrets(self, target: rows.DeliveryTarget) -> list[str]:
        endpoint_id = target.endpoint.id
        found = [signing.open_sealed(self._box, target.secrets.current, endpoint_id)]
        expires = target.secrets.previous_expires_at
        if target.secrets.previous and expires is not None and expires > utcnow():
            found.append(
                signing.open_sealed(self._box, target.secrets.previous, endpoint_id, previous=True)
            )
        return found

    async def _post(self, target: rows.DeliveryTarget) -> Attempt:
        try:
            secrets = self._secrets(target)
        except SealedValueError:
            return Attempt("refused", error="the signing secret does not open (data keys?)")
        body = encode_body(target.delivery.payload)
        moment = utcnow().replace(microsecond=0)
        event_id = message_id(target.delivery.event_id)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": event_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signing.signature_header(secrets, event_id, moment, body),
        }
        timeout = self._config.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                async with self._client.stream(
                    "POST", target.endpoint.url, content=body.encode(), headers=headers
                ) as response:
                    await _drain(response)
                    code = response.status_code
        except AddressRefused as exc:
            return Attempt("refused", error=f"address refused: {exc}")
        except (TimeoutError, httpx.TimeoutException):
            return Attempt("timeout", error=f"no answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            return Attempt("connection_error", error=f"connection failed: {type(exc).__name__}")
        if 200 <= code < 300:
            return Attempt("success", code)
        if code == GONE:
            return Attempt("gone", code, error="410 Gone")
        return Attempt("http_error", code, error=f"HTTP {code}")

    async def _settle(self, target: rows.DeliveryTarget, attempt: Attempt, *, last: bool) -> str:
        """Record the attempt; returns why the endpoint was disabled by it ('' if not)."""
        endpoint = target.endpoint
        now = utcnow()
        reason = ""
        async with self._transaction(endpoint.org_id) as conn:
            if attempt.ok:
                status = rows.SUCCEEDED
                await rows.reset_failures(conn, endpoint.id)
            else:
                failures = await rows.count_failure(conn, endpoint.id)
                limit = self._config.failure_limit
                if attempt.outcome == "gone":
                    reason = "gone"
                elif limit and failures >= limit:
                    reason = "failures"
                if reason and not await rows.disable(conn, endpoint.id, reason=reason, now=now):
                    reason = ""  # disabled already (another worker, an admin)
                status = rows.FAILED if last or reason else rows.PENDING
                if reason:
                    await self._disabled(conn, endpoint, reason, failures)
            await rows.record_attempt(
                conn,
                target.delivery.id,
                status=status,
                status_code=attempt.status_code,
                error=attempt.error,
                now=now,
            )
        return reason

    async def _disabled(
        self, conn: AsyncConnection, endpoint: rows.EndpointRecord, reason: str, failures: int
    ) -> None:
        host = host_of(endpoint.url)
        await self._audit.record(
            conn,
            AuditEvent(
                Action.WEBHOOK_ENDPOINT_DISABLED,
                "failure",
                entity_type="webhook_endpoint",
                entity_id=endpoint.id,
                org_id=endpoint.org_id,
                details={"reason": reason, "consecutive_failures": failures, "host": host},
            ),
        )
        for address in await rows.admin_recipients(conn, self._envelope, endpoint.org_id):
            await self._mailer.enqueue(
                conn,
                DISABLED_TEMPLATE,
                address,
                {
                    "endpoint_id": str(endpoint.id),
                    "host": host or "",
                    "reason": reason,
                    "failures": failures,
                    "platform": endpoint.org_id is None,
                },
            )
        log.warning(
            "webhook_endpoint_disabled",
            endpoint_id=str(endpoint.id),
            reason=reason,
            consecutive_failures=failures,
        )

    def scrub(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The message names its delivery only; nothing to remove."""
        return dict(payload)


async def _drain(response: httpx.Response) -> None:
    # Read (and drop) at most 64 KiB: enough to reuse the connection after a small answer,
    # never a memory sink for an endpoint that streams forever.
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received >= MAX_RESPONSE_BYTES:
            break
