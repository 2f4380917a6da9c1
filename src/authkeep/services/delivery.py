"""Wiring of the outbox, mail and webhooks for a running authkeep: one :class:`Delivery` per
process, built from the settings, used by ``authkeep serve`` (in-process worker) and
``authkeep worker`` (delivery alone)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import structlog

from authkeep.db.engine import Database
from authkeep.security.configured import build_envelope
from authkeep.security.data_keys import SecretBox
from authkeep.security.envelope import Envelope
from authkeep.services.audit import AuditLog
from authkeep.services.email_flows.config import EmailFlowConfig
from authkeep.services.email_flows.intents import ACCOUNT_MAIL, AccountMailHandler
from authkeep.services.mail import EMAIL, EmailHandler, Mailer, MailTemplates, build_transport
from authkeep.services.mail.transports import Transport
from authkeep.services.outbox import Backoff, HandlerRegistry, Outbox, OutboxWorker
from authkeep.services.webhooks import (
    DELIVERY_KIND,
    EVENT_KIND,
    AuditEventSource,
    FanOutHandler,
    WebhookConfig,
    WebhookEvents,
    WebhookSender,
    guarded_client,
)
from authkeep.settings import Settings

log = structlog.get_logger("authkeep.outbox")


@dataclass(slots=True)
class Delivery:
    """The outbox, the mailer and webhook events that write into it, and a worker that
    empties it."""

    outbox: Outbox
    mailer: Mailer
    handlers: HandlerRegistry
    worker: OutboxWorker
    events: WebhookEvents
    """Turns audited changes into webhook events (the audit log's hook)."""
    webhooks: WebhookConfig
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start_in_background(self) -> None:
        """Run the worker as a task of the current event loop (``authkeep serve``)."""
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self.worker.run(self._stop), name="authkeep-outbox")

    async def run(self) -> None:
        """Run the worker in the foreground until :meth:`request_stop` (``authkeep worker``)."""
        self._stop.clear()
        await self.worker.run(self._stop)

    def request_stop(self) -> None:
        """Ask the worker to stop once the message in flight is settled."""
        self._stop.set()

    async def stop(self) -> None:
        """Stop the background worker: it finishes the message in flight (for at most the
        send timeout), then hands back the rest of its batch. A send cut off here stays
        leased and is retried by the next worker once the lease runs out. Then the
        webhook client's connections are closed."""
        task, self._task = self._task, None
        if task is None:
            await self.close()
            return
        self._stop.set()
        grace = self.worker.send_timeout.total_seconds() + 5
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            log.warning("outbox_worker_stop_timeout", worker=self.worker.name)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.close()

    async def close(self) -> None:
        """Close what delivering opened (the webhook client's connections)."""
        closers, self.closers = self.closers, []
        for closer in closers:
            await closer()


def build_delivery(
    settings: Settings,
    db: Database,
    *,
    transport: Transport | None = None,
    data_box: SecretBox | None = None,
    webhook_client: httpx.AsyncClient | None = None,
    envelope: Envelope | None = None,
) -> Delivery:
    """The outbox, mail, webhooks and a worker as ``settings`` configure them.

    Webhooks are delivered only with ``data_box`` (the signing secrets are sealed with the
    data keys); a worker built without it leaves webhook messages to one built with it.
    ``webhook_client`` replaces the guarded HTTP client (tests).

    Payloads are sealed with ``envelope`` (the running service's, whose remembered user keys
    its audit rows use), else one over ``data_box``, else the one ``settings`` configure."""
    if envelope is None:
        envelope = Envelope(data_box) if data_box is not None else build_envelope(settings)
    templates = MailTemplates(
        product_name=settings.product_name,
        public_url=settings.link_base,
        override_dir=settings.email_templates_dir,
    )
    outbox = Outbox(envelope=envelope)
    handlers = HandlerRegistry()
    handlers.register(
        EMAIL,
        EmailHandler(templates, transport or build_transport(settings), sender=settings.email_from),
    )
    webhooks = WebhookConfig.from_settings(settings)
    worker = OutboxWorker(
        db,
        handlers,
        batch_size=settings.outbox_batch_size,
        lease=timedelta(seconds=settings.outbox_lease_seconds),
        max_attempts=settings.outbox_max_attempts,
        poll_seconds=settings.outbox_poll_seconds,
        backoff=Backoff(settings.outbox_backoff_base_seconds, settings.outbox_backoff_max_seconds),
        # Webhooks retry on the Standard Webhooks schedule, which receivers expect.
        retry={DELIVERY_KIND: webhooks.schedule},
        envelope=envelope,
    )
    # A committed enqueue wakes this process's worker at once (others poll).
    outbox.add_listener(worker.wake)
    mailer = Mailer(outbox, templates)
    events = WebhookEvents(outbox, enabled=webhooks.enabled)
    audit = AuditLog(db, enabled=settings.audit_enabled, events=events, envelope=envelope)
    # Mail intents of the open flows (register, resend, forgot): looked up and turned into
    # emails here, after the response (authkeep.services.email_flows.intents).
    handlers.register(
        ACCOUNT_MAIL,
        AccountMailHandler(
            db, mailer, audit, EmailFlowConfig.from_settings(settings), envelope=envelope
        ),
    )
    delivery = Delivery(outbox, mailer, handlers, worker, events, webhooks)
    # Events come from the audit log, read by every worker's cycle (one at a time); a worker
    # without the data keys queues them for one that has them, as it does mail.
    handlers.add_source(AuditEventSource(db, outbox, enabled=webhooks.enabled).pump)
    if data_box is not None:
        client = webhook_client or guarded_client(webhooks.policy, timeout=webhooks.timeout_seconds)
        delivery.closers.append(client.aclose)
        handlers.register(EVENT_KIND, FanOutHandler(db, outbox))
        handlers.register(
            DELIVERY_KIND,
            WebhookSender(
                db, data_box, client, webhooks, audit=audit, mailer=mailer, envelope=envelope
            ),
        )
    return delivery
