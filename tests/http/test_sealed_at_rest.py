"""Through the running service, on SQLite and PostgreSQL: the audit log and the outbox hold
no client address and no email address in clear, yet an admin reads the address, the chain
verifies, and the emails reach their recipients (a real SMTP server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from account_helpers import mail_app, to
from audit_helpers import rows, services
from authkeep import Settings, create_app
from authkeep.db import audit as audit_rows
from authkeep.db import user_keys
from authkeep.db.models import OutboxMessage
from authkeep.services.audit import Action
from authkeep.services.audit_admin import verify
from helpers import PASSWORD, PEER, bearer, client_for, login, register, running
from mail_helpers import SmtpSink

AUDIT = "/api/v1/audit"
CLIENT_IP = PEER[0]


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(rate_limit_enabled=False))
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


async def logins(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    response = await client.get(AUDIT, params={"action": Action.LOGIN}, headers=admin)
    assert response.status_code == 200, response.text
    return {item["actor_user_id"]: item for item in response.json()["items"]}


def rehashed(item: dict[str, Any]) -> str:
    """The hash of an API item recomputed the way a client would, from ``ip_stored``."""
    return audit_rows.entry_hash(
        at=datetime.fromisoformat(item["at"]),
        org_id=None if item["org_id"] is None else uuid.UUID(item["org_id"]),
        actor_user_id=None if item["actor_user_id"] is None else uuid.UUID(item["actor_user_id"]),
        actor_api_key_id=None,
        request_id=item["request_id"],
        ip=item["ip_stored"],
        action=item["action"],
        entity_type=item["entity_type"],
        entity_id=item["entity_id"],
        outcome=item["outcome"],
        details=item["details"],
        prev_hash=item["prev_hash"],
    )


async def test_an_admin_reads_the_address_and_an_erased_accounts_reads_null(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await services(app).accounts.register(
        email="root@example.com", password=PASSWORD, is_superuser=True
    )
    admin = bearer((await login(client, "root@example.com"))["access_token"])
    alice = await register(client)
    await login(client)
    # At rest: no row holds the address in clear.
    stored = [row.ip for row in await rows(services(app).db)]
    assert stored
    assert CLIENT_IP not in stored
    assert not any(CLIENT_IP in (ip or "") for ip in stored)

    items = await logins(client, admin)
    mine = items[alice["id"]]
    assert mine["ip"] == CLIENT_IP
    assert mine["ip_stored"].startswith("uk1.")
    # The item alone lets a client check its hash: the hash covers what is stored.
    assert rehashed(mine) == mine["hash"]

    async with services(app).db.transaction() as conn:
        assert await user_keys.destroy(conn, services(app).envelope, uuid.UUID(alice["id"]))
    items = await logins(client, admin)
    assert items[alice["id"]]["ip"] is None
    assert items[alice["id"]]["hash"] == mine["hash"]
    # Other accounts' addresses still read, and the chain still verifies.
    admin_id = next(key for key in items if key != alice["id"])
    assert items[admin_id]["ip"] == CLIENT_IP
    assert (await verify(services(app).db)).ok


async def test_emails_reach_their_recipient_from_a_sealed_outbox(
    make_settings: Callable[..., Settings], smtp_server: SmtpSink
) -> None:
    address = "bob.sealed@example.com"
    async with mail_app(make_settings, smtp=smtp_server, outbox_in_process=False) as m:
        response = await m.http.post(
            "/api/v1/auth/register", json={"email": address, "password": PASSWORD}
        )
        assert response.status_code == 202, response.text
        svc = services(m.app)

        async def payloads() -> list[Any]:
            async with svc.db.reading() as conn:
                return list((await conn.execute(select(OutboxMessage.payload))).scalars())

        queued = await payloads()
        assert queued
        assert all(set(payload) == {"sealed"} for payload in queued)
        assert not any(address in str(payload) for payload in queued)
        # Intent -> email -> sent: a few cycles of the worker.
        for _ in range(5):
            await svc.delivery.worker.run_once()
        [message] = smtp_server.messages()
        assert to(message) == address
        # Once sent, what stays is sealed too.
        assert not any(address in str(payload) for payload in await payloads())
