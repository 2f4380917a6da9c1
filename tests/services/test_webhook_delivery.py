"""Webhook delivery against a real receiver on loopback that verifies every request with the
``standardwebhooks`` library — on SQLite and on PostgreSQL + Redis (as the app role).

The outbox is pumped by the test (no in-process worker), so each attempt happens when the
test says; retries wait the (shortened) schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import time_machine
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from authkeep import Settings, create_app
from authkeep.db import outbox as outbox_rows
from authkeep.db import webhooks as webhook_rows
from authkeep.db.base import utcnow
from authkeep.db.models import AuditEntry, OutboxMessage, WebhookDelivery, WebhookEndpoint
from authkeep.security.data_keys import SealedValueError
from authkeep.services.outbox import HandlerRegistry, OutboxWorker
from authkeep.services.webhooks import (
    AddressPolicy,
    Scope,
    WebhookConfig,
    WebhookEndpoints,
    signing,
)
from authkeep.services.webhooks.sender import UNREADABLE, WebhookSender
from authkeep.services.webhooks.transport import guarded_client
from authkeep.wiring import Services
from helpers import authkeep_of, client_for, register, running
from webhook_helpers import (
    FAST_WEBHOOKS,
    ROOT_EMAIL,
    Receiver,
    Stall,
    platform_admin,
    pump,
    webhooks_settled,
)


@dataclass
class Hooks:
    """A started authkeep (no in-process worker), a client, a platform admin's scope and a
    receiver."""

    app: FastAPI
    http: httpx.AsyncClient
    services: Services
    scope: Scope
    receiver: Receiver

    @property
    def worker(self) -> OutboxWorker:
        return self.services.delivery.worker

    async def endpoint(self, url: str | None = None, **options: Any) -> Any:
        created = await self.services.webhooks.create(
            self.scope, url=url or self.receiver.url, **options
        )
        self.receiver.add_secret(created.secret)
        return created

    async def deliveries(self, endpoint_id: uuid.UUID) -> list[webhook_rows.DeliveryRecord]:
        return await self.services.webhooks.deliveries(self.scope, endpoint_id)

    async def settled(self) -> bool:
        return await webhooks_settled(self.services.db)


@pytest.fixture
def receiver() -> Any:
    with Receiver() as found:
        yield found


@pytest.fixture
async def hooks_for(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> AsyncIterator[Callable[..., Awaitable[Hooks]]]:
    """Build a :class:`Hooks` with settings overrides (closed after the test)."""
    async with contextlib.AsyncExitStack() as stack:

        async def build(**overrides: Any) -> Hooks:
            app = create_app(make_settings(**{**FAST_WEBHOOKS, **overrides}))
            await stack.enter_async_context(running(app))
            http = await stack.enter_async_context(client_for(app))
            principal, _ = await platform_admin(app, http)
            services = authkeep_of(app).services
            return Hooks(app, http, services, Scope.platform(principal), receiver)

        yield build


@pytest.fixture
async def hooks(hooks_for: Callable[..., Awaitable[Hooks]]) -> Hooks:
    return await hooks_for()


def _count(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("authkeep_webhook_deliveries_total", {"outcome": outcome}) or 0.0
    )


async def test_a_delivery_is_signed_verified_and_names_its_audit_row(hooks: Hooks) -> None:
    before = _count("success")
    created = await hooks.endpoint()
    assert created.secret.startswith("whsec_")
    user = await register(hooks.http, "ada@example.com")
    [got] = await pump(hooks.worker, hooks.receiver.requests, "the event arrives")
    assert got.verified_by == [created.secret]
    body = got.json
    assert set(body) == {"type", "timestamp", "data", "audit"}
    assert body["type"] == "user.created"
    assert body["data"] == {"user_id": user["id"]}
    async with hooks.services.db.reading() as conn:
        row = (
            await conn.execute(
                select(AuditEntry.id, AuditEntry.hash).where(
                    AuditEntry.action == "user.registered", AuditEntry.entity_id == user["id"]
                )
            )
        ).one()
    assert body["audit"] == {"seq": row.id, "hash": row.hash, "chain": "platform"}
    [delivery] = await hooks.deliveries(created.endpoint.id)
    assert got.webhook_id == f"msg_{delivery.event_id.hex}"
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert got.headers["content-type"] == "application/json"
    assert _count("success") == before + 1


async def test_a_500_is_retried_with_the_same_webhook_id(hooks: Hooks) -> None:
    created = await hooks.endpoint()
    hooks.receiver.plan.extend([500, 503])
    await register(hooks.http, "ada@example.com")
    got = await pump(
        hooks.worker,
        lambda: [r for r in hooks.receiver.requests() if r.answered == 200],
        "delivered after two failures",
    )
    requests = hooks.receiver.requests()
    assert [r.answered for r in requests] == [500, 503, 200]
    assert len({r.webhook_id for r in requests}) == 1
    assert all(r.verified_by for r in requests)
    assert got[0].json["type"] == "user.created"
    [delivery] = await hooks.deliveries(created.endpoint.id)
    assert (delivery.status, delivery.attempts) == ("succeeded", 3)


async def test_a_timeout_is_retried_with_the_same_webhook_id(
    hooks_for: Callable[..., Awaitable[Hooks]],
) -> None:
    hooks = await hooks_for(webhook_timeout_seconds=0.3)
    before = _count("timeout")
    created = await hooks.endpoint()
    hooks.receiver.plan.append(Stall(5.0))
    await register(hooks.http, "ada@example.com")
    await pump(
        hooks.worker,
        lambda: [r for r in hooks.receiver.requests() if r.answered == 200],
        "delivered after a timeout",
    )
    requests = hooks.receiver.requests()
    assert len(requests) == 2
    assert requests[0].webhook_id == requests[1].webhook_id
    assert _count("timeout") == before + 1
    [delivery] = await hooks.deliveries(created.endpoint.id)
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)


async def _emails_to(services: Services, address: str, template: str) -> int:
    async with services.db.reading() as conn:
        rows = await conn.execute(
            select(OutboxMessage.id, OutboxMessage.payload).where(OutboxMessage.kind == "email")
        )
        # Payloads are sealed at rest (bound to their row).
        found = [outbox_rows.open_payload(services.envelope, i, p) for i, p in rows]
        return sum(1 for p in found if p.get("to") == address and p.get("template") == template)


async def _audited(services: Services, action: str) -> list[Any]:
    async with services.db.reading() as conn:
        rows = await conn.execute(select(AuditEntry).where(AuditEntry.action == action))
        return list(rows)


async def test_410_disables_the_endpoint_at_once_and_tells_its_admins(hooks: Hooks) -> None:
    created = await hooks.endpoint()
    hooks.receiver.plan.append(410)
    await register(hooks.http, "ada@example.com")
    await pump(hooks.worker, hooks.settled, "the delivery is settled")
    endpoint = await hooks.services.webhooks.get(hooks.scope, created.endpoint.id)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "gone")
    [delivery] = await hooks.deliveries(created.endpoint.id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, 410)
    assert await _emails_to(hooks.services, ROOT_EMAIL, "webhook_disabled") == 1
    assert len(await _audited(hooks.services, "webhook_endpoint.disabled")) == 1
    # Disabled: later events are not sent (nor even queued for it).
    await register(hooks.http, "bob@example.com")
    await pump(hooks.worker, hooks.settled, "everything settled")
    assert len(hooks.receiver.requests()) == 1


async def test_consecutive_failures_disable_the_endpoint(
    hooks_for: Callable[..., Awaitable[Hooks]],
) -> None:
    hooks = await hooks_for(webhook_failure_limit=3)
    created = await hooks.endpoint()
    hooks.receiver.default = 500
    await register(hooks.http, "ada@example.com")
    await pump(hooks.worker, hooks.settled, "given up")
    endpoint = await hooks.services.webhooks.get(hooks.scope, created.endpoint.id)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "failures")
    assert endpoint.consecutive_failures == 3
    # Three attempts, not the five the schedule allows: the endpoint stopped them.
    assert len(hooks.receiver.requests()) == 3
    [delivery] = await hooks.deliveries(created.endpoint.id)
    assert delivery.status == "failed"
    assert await _emails_to(hooks.services, ROOT_EMAIL, "webhook_disabled") == 1
    # Enabled again, its count starts afresh and a replay delivers what it missed.
    hooks.receiver.default = 200
    await hooks.services.webhooks.update(hooks.scope, created.endpoint.id, enabled=True)
    await hooks.services.webhooks.replay(hooks.scope, created.endpoint.id, delivery.id)
    await pump(
        hooks.worker,
        lambda: [r for r in hooks.receiver.requests() if r.answered == 200],
        "the replay arrives",
    )
    assert {r.webhook_id for r in hooks.receiver.requests()} == {f"msg_{delivery.event_id.hex}"}


async def test_a_success_resets_the_failure_count(
    hooks_for: Callable[..., Awaitable[Hooks]],
) -> None:
    hooks = await hooks_for(webhook_failure_limit=3)
    created = await hooks.endpoint()
    hooks.receiver.plan.extend([500, 500, 200, 500, 500, 200])
    await register(hooks.http, "ada@example.com")
    await register(hooks.http, "bob@example.com")
    await pump(hooks.worker, hooks.settled, "both delivered")
    endpoint = await hooks.services.webhooks.get(hooks.scope, created.endpoint.id)
    assert endpoint.enabled
    assert endpoint.consecutive_failures == 0


async def test_rotation_signs_with_both_secrets_until_the_previous_one_expires(
    hooks: Hooks,
) -> None:
    created = await hooks.endpoint()
    rotated = await hooks.services.webhooks.rotate_secret(hooks.scope, created.endpoint.id)
    hooks.receiver.add_secret(rotated.secret)
    assert rotated.secret != created.secret
    await hooks.services.webhooks.send_test(hooks.scope, created.endpoint.id)
    [during] = await pump(hooks.worker, hooks.receiver.requests, "the test event")
    # Two signatures; the standard library verifies the request with either secret alone.
    assert len(during.signatures) == 2
    assert sorted(during.verified_by) == sorted([created.secret, rotated.secret])
    assert during.json["type"] == "webhook.test"
    assert during.json["audit"] is None
    with time_machine.travel(utcnow() + timedelta(hours=24, minutes=1), tick=True):
        await hooks.services.webhooks.send_test(hooks.scope, created.endpoint.id)
        await pump(hooks.worker, lambda: len(hooks.receiver.requests()) == 2, "the second")
        after = hooks.receiver.requests()[1]
        assert len(after.signatures) == 1
        assert after.verified_by == [rotated.secret]


async def test_each_event_reaches_each_endpoint_once_under_one_id_with_concurrent_workers(
    hooks: Hooks,
) -> None:
    first = await hooks.endpoint(hooks.receiver.url_for("/a"))
    second = await hooks.endpoint(hooks.receiver.url_for("/b"), event_types=["user.created"])
    for n in range(6):
        await register(hooks.http, f"user{n}@example.com")
    workers = [
        OutboxWorker(
            hooks.services.db,
            hooks.services.delivery.handlers,
            name=f"w{n}",
            envelope=hooks.services.envelope,
        )
        for n in range(3)
    ]

    async def drain(worker: OutboxWorker) -> None:
        await pump(worker, hooks.settled, "every message settled")

    await asyncio.gather(*(drain(worker) for worker in workers))
    requests = hooks.receiver.requests()
    by_path: dict[str, list[str]] = {"/a": [], "/b": []}
    for request in requests:
        by_path[request.path].append(request.webhook_id)
    assert len(by_path["/a"]) == len(set(by_path["/a"])) == 6
    # The same event has the same webhook-id at every endpoint.
    assert sorted(by_path["/a"]) == sorted(by_path["/b"])
    assert all(r.verified_by for r in requests)
    assert {d.status for d in await hooks.deliveries(first.endpoint.id)} == {"succeeded"}
    assert len(await hooks.deliveries(second.endpoint.id)) == 6


async def test_a_deleted_endpoints_queued_deliveries_are_dropped(hooks: Hooks) -> None:
    created = await hooks.endpoint()
    await register(hooks.http, "ada@example.com")
    # Fan out, but do not deliver yet.
    await hooks.worker.run_once()
    await hooks.services.webhooks.delete(hooks.scope, created.endpoint.id)
    await pump(hooks.worker, hooks.settled, "settled")
    assert hooks.receiver.requests() == []


async def test_a_name_that_rebinds_to_loopback_after_registration_is_refused_at_delivery(
    hooks: Hooks,
) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    policy = AddressPolicy(https_only=False, resolver=rebinding)
    services = hooks.services
    endpoints = WebhookEndpoints(
        services.db,
        services.audit,
        services.delivery.outbox,
        services.data_box,
        WebhookConfig(policy=policy),
    )
    # Registration: the name resolves to a public address.
    url = f"http://rebind.example.test:{hooks.receiver.port}/hooks"
    created = await endpoints.create(hooks.scope, url=url)
    sender = WebhookSender(
        services.db,
        services.data_box,
        guarded_client(policy, timeout=1.0),
        WebhookConfig(policy=policy, schedule=hooks.services.delivery.webhooks.schedule),
        audit=services.audit,
        mailer=services.delivery.mailer,
    )
    worker = OutboxWorker(
        services.db,
        HandlerRegistry({"webhook.delivery": sender}),
        name="rebinding",
        envelope=services.envelope,
    )
    before = _count("refused")
    await endpoints.send_test(hooks.scope, created.endpoint.id)
    assert await worker.run_once() == 1
    # At delivery the same name answers 127.0.0.1: refused before any connection.
    assert _count("refused") == before + 1
    assert hooks.receiver.requests() == []
    [delivery] = await endpoints.deliveries(hooks.scope, created.endpoint.id)
    assert delivery.last_error is not None
    assert "address refused" in delivery.last_error


async def test_the_secret_is_sealed_at_rest_and_bound_to_its_endpoint(hooks: Hooks) -> None:
    first = await hooks.endpoint()
    second = await hooks.endpoint()
    async with hooks.services.db.reading() as conn:
        sealed = {
            row.id: row.secret_sealed
            for row in await conn.execute(select(WebhookEndpoint.id, WebhookEndpoint.secret_sealed))
        }
    secret_body = first.secret.removeprefix("whsec_")
    assert all(secret_body not in value for value in sealed.values())
    box = hooks.services.data_box
    assert signing.open_sealed(box, sealed[first.endpoint.id], first.endpoint.id) == first.secret
    # Copied onto another endpoint (or into the previous-secret column), it does not open.
    with pytest.raises(SealedValueError):
        signing.open_sealed(box, sealed[first.endpoint.id], second.endpoint.id)
    with pytest.raises(SealedValueError):
        signing.open_sealed(box, sealed[first.endpoint.id], first.endpoint.id, previous=True)


# Payloads at rest (docs/privacy.md) --------------------------------------------------------


async def _stored_payloads(services: Services, model: Any) -> dict[uuid.UUID, Any]:
    async with services.db.reading() as conn:
        rows = await conn.execute(select(model.id, model.payload))
        return {row_id: payload for row_id, payload in rows}


async def test_events_and_bodies_are_sealed_at_rest_and_sent_as_signed(hooks: Hooks) -> None:
    created = await hooks.endpoint()
    user = await register(hooks.http, "ada@example.com")
    events = await _stored_payloads(hooks.services, OutboxMessage)
    assert events
    assert all(set(payload) == {"sealed"} for payload in events.values())
    assert not any(user["id"] in str(payload) for payload in events.values())
    [got] = await pump(hooks.worker, hooks.receiver.requests, "the event arrives")
    assert got.verified_by == [created.secret]
    [stored] = (await _stored_payloads(hooks.services, WebhookDelivery)).values()
    assert set(stored) == {"sealed"}
    assert user["id"] not in str(stored)
    # Readers see the body as it was signed and sent; a replay sends the same bytes.
    [delivery] = await hooks.deliveries(created.endpoint.id)
    assert delivery.payload == got.json
    await hooks.services.webhooks.replay(hooks.scope, created.endpoint.id, delivery.id)
    await pump(hooks.worker, lambda: len(hooks.receiver.requests()) == 2, "the replay arrives")
    first, again = hooks.receiver.requests()
    assert again.body == first.body
    assert again.verified_by == [created.secret]


async def test_a_body_copied_from_another_delivery_fails_for_good(hooks: Hooks) -> None:
    created = await hooks.endpoint()
    await register(hooks.http, "ada@example.com")
    await register(hooks.http, "bob@example.com")
    await pump(hooks.worker, lambda: len(hooks.receiver.requests()) == 2, "both events arrive")
    first, second = await hooks.deliveries(created.endpoint.id)
    async with hooks.services.db.transaction() as conn:
        copied = (
            await conn.execute(
                select(WebhookDelivery.payload).where(WebhookDelivery.id == first.id)
            )
        ).scalar_one()
        await conn.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == second.id).values(payload=copied)
        )
    await hooks.services.webhooks.replay(hooks.scope, created.endpoint.id, second.id)
    await pump(hooks.worker, hooks.settled, "the replay is settled")
    # Nothing was sent, the endpoint is not blamed, and the listing still answers.
    assert len(hooks.receiver.requests()) == 2
    listed = {d.id: d for d in await hooks.deliveries(created.endpoint.id)}
    assert (listed[second.id].status, listed[second.id].last_error) == ("failed", UNREADABLE)
    assert (listed[second.id].payload, listed[second.id].readable) == ({}, False)
    assert listed[first.id].readable
    async with hooks.services.db.reading() as conn:
        message = (
            await conn.execute(
                select(OutboxMessage.status, OutboxMessage.last_error).where(
                    OutboxMessage.kind == "webhook.delivery", OutboxMessage.status == "dead"
                )
            )
        ).one()
        failures = (
            await conn.execute(
                select(WebhookEndpoint.consecutive_failures, WebhookEndpoint.enabled).where(
                    WebhookEndpoint.id == created.endpoint.id
                )
            )
        ).one()
    assert tuple(message) == ("dead", UNREADABLE)
    assert tuple(failures) == (0, True)
