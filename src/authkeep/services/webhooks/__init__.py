"""Events and webhooks: what happens to accounts, signed and delivered to endpoints.

* :mod:`~authkeep.services.webhooks.catalogue` — the event types, their data, and which
  audited change becomes which event;
* :class:`WebhookEvents` — the audit log's hook (an audited change writes only its row);
  :class:`AuditEventSource` — a worker reads the committed rows into events;
  :class:`FanOutHandler` — one delivery per endpoint that wants the event;
* :class:`WebhookSender` — posts a delivery (Standard Webhooks), retries, disables;
* :class:`WebhookEndpoints` — the use cases of the routes (register, rotate, replay, test);
* :class:`AddressPolicy` and :class:`GuardedTransport` — no SSRF.

The queue is the outbox (``authkeep.services.outbox``), shared with mail. ``docs/webhooks.md``
has the guarantees and the catalogue.
"""

from authkeep.services.webhooks.catalogue import EVENT_TYPES, SOURCES, TEST_EVENT, EventType
from authkeep.services.webhooks.config import STANDARD_SCHEDULE, WebhookConfig
from authkeep.services.webhooks.endpoints import EndpointWithSecret, Scope, WebhookEndpoints
from authkeep.services.webhooks.events import (
    DELIVERY_KIND,
    EVENT_KIND,
    FanOutHandler,
    WebhookEvents,
)
from authkeep.services.webhooks.sender import WebhookSender, message_id
from authkeep.services.webhooks.source import AuditEventSource
from authkeep.services.webhooks.ssrf import AddressPolicy, AddressRefused
from authkeep.services.webhooks.transport import GuardedTransport, guarded_client

__all__ = [
    "DELIVERY_KIND",
    "EVENT_KIND",
    "EVENT_TYPES",
    "SOURCES",
    "STANDARD_SCHEDULE",
    "TEST_EVENT",
    "AddressPolicy",
    "AddressRefused",
    "AuditEventSource",
    "EndpointWithSecret",
    "EventType",
    "FanOutHandler",
    "GuardedTransport",
    "Scope",
    "WebhookConfig",
    "WebhookEndpoints",
    "WebhookEvents",
    "WebhookSender",
    "guarded_client",
    "message_id",
]
