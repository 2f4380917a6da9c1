"""``GET /api/v1/audit``: platform admins only, every filter, stable cursor paging."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from audit_helpers import app_rows, services
from authkeep import Settings, create_app
from authkeep.db.base import utcnow
from authkeep.services.audit import Action, Actor, AuditEvent
from helpers import PASSWORD, bearer, client_for, login, register, running

AUDIT = "/api/v1/audit"
ORG = uuid.UUID("3c0ffee0-0000-4000-8000-000000000001")


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(rate_limit_enabled=False))
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.fixture
async def admin(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    await services(app).accounts.register(
        email="root@example.com", password=PASSWORD, is_superuser=True
    )
    return bearer((await login(client, "root@example.com"))["access_token"])


async def get(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(AUDIT, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_anonymous_gets_401_and_users_403(client: httpx.AsyncClient) -> None:
    assert (await client.get(AUDIT)).status_code == 401
    await register(client)
    user = bearer((await login(client))["access_token"])
    response = await client.get(AUDIT, headers=user)
    assert response.status_code == 403
    assert response.json() == {"detail": "Not enough permissions"}


async def test_admin_reads_newest_first_with_filters(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    alice = await register(client)
    await login(client)
    failed = await client.post(
        "/api/v1/auth/login", json={"email": "alice@example.com", "password": "nope nope nope"}
    )
    assert failed.status_code == 401

    body = await get(client, admin, action=Action.LOGIN)
    assert [item["outcome"] for item in body["items"]] == ["failure", "success", "success"]
    assert body["next_cursor"] is None
    ids = [item["id"] for item in body["items"]]
    assert ids == sorted(ids, reverse=True)

    body = await get(client, admin, action=Action.LOGIN, outcome="failure")
    [item] = body["items"]
    assert item["request_id"] == failed.headers["x-request-id"]
    assert item["details"] == {"reason": "bad_password"}
    assert set(item) >= {"hash", "prev_hash", "ip", "actor_user_id", "entity_type"}

    # The verification email is recorded when the outbox worker (in-process) has sent it,
    # which may or may not have happened yet: the filters are what this test is about.
    sent = {Action.EMAIL_VERIFICATION_SENT}
    body = await get(client, admin, actor_user_id=alice["id"])
    actions = {item["action"] for item in body["items"]}
    assert actions - sent == {Action.USER_REGISTERED, Action.LOGIN}
    body = await get(client, admin, entity_type="user", entity_id=alice["id"])
    actions = {item["action"] for item in body["items"]}
    assert actions - sent == {Action.USER_REGISTERED, Action.LOGIN}

    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert (await get(client, admin, since=future))["items"] == []
    assert len((await get(client, admin, until=future, action=Action.LOGIN))["items"]) == 3


async def test_cursor_pages_through_everything_once(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    audit = services(app).audit
    for i in range(7):
        await audit.record_alone(AuditEvent("test.page", details={"i": i}))
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"action": "test.page", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = await get(client, admin, **params)
        seen += [item["details"]["i"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # Rows written while paging land in front, not in the pages still to come.
        await audit.record_alone(AuditEvent("test.page", details={"i": 100 + pages}))
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    assert pages == 3


async def test_org_and_platform_chains_can_be_selected(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    audit = services(app).audit
    await audit.record_alone(AuditEvent("test.scope", org_id=ORG))
    await audit.record_alone(AuditEvent("test.scope"))
    in_org = await get(client, admin, action="test.scope", org_id=str(ORG))
    assert [item["org_id"] for item in in_org["items"]] == [str(ORG)]
    platform = await get(client, admin, action="test.scope", org_id="platform")
    assert [item["org_id"] for item in platform["items"]] == [None]
    assert len((await get(client, admin, action="test.scope"))["items"]) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "YTE6LTE"},  # a1:-1
        {"limit": 0},
        {"limit": 501},
        {"outcome": "maybe"},
        {"org_id": "somewhere"},
        {"since": "yesterday"},
    ],
)
async def test_bad_parameters_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], params: dict[str, Any]
) -> None:
    response = await client.get(AUDIT, params=params, headers=admin)
    assert response.status_code == 422


async def test_reading_the_trail_is_itself_recorded(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.get(AUDIT, params={"action": "auth.login"}, headers=admin)
    [row] = await app_rows(app, Action.AUDIT_QUERIED)
    assert row.request_id == response.headers["x-request-id"]
    assert row.details["filters"] == {"action": "auth.login"}
    assert row.actor_user_id is not None


async def test_org_admin_scope_hook(app: FastAPI) -> None:
    # Until organizations wire their admins in, only platform admins have a scope.
    reader = services(app).audit_reader
    assert reader.scope_for(object()) is None
    user = await services(app).accounts.register(email="bob@example.com", password=PASSWORD)

    class P:
        def __init__(self) -> None:
            self.user = user

    assert reader.scope_for(P()) is None
    assert Actor.of(P()) == Actor(user.id)
