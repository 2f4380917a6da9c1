"""``/api/v1/webhooks`` (an organization's admins) and ``/api/v1/admin/webhooks`` (platform
admins): who may do what, the secret shown once, step-up, SSRF refusals as 422 that echo
nothing, and real account flows arriving at a receiver on loopback as verified events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import jsonschema
import pytest
import time_machine
from fastapi import FastAPI
from sqlalchemy import select

from authkeep import Settings, create_app
from authkeep.db.base import utcnow
from authkeep.db.models import AuditEntry
from authkeep.services.webhooks import EVENT_TYPES
from helpers import PASSWORD, authkeep_of, bearer, client_for, login, register, running
from org_helpers import ORGS, World, build_world, sign_up
from webhook_helpers import FAST_WEBHOOKS, Receiver, platform_admin, pump, webhooks_settled

HOOKS = "/api/v1/webhooks"
ADMIN_HOOKS = "/api/v1/admin/webhooks"


@pytest.fixture
def receiver() -> Any:
    with Receiver() as found:
        yield found


@pytest.fixture
async def hooked(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    """authkeep with loopback endpoints allowed and no in-process worker."""
    app = create_app(make_settings(**FAST_WEBHOOKS))
    async with running(app):
        yield app


@pytest.fixture
async def http(hooked: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(hooked) as client:
        yield client


@pytest.fixture
async def world(http: httpx.AsyncClient) -> World:
    return await build_world(http)


async def _create(
    http: httpx.AsyncClient, headers: dict[str, str], url: str, **body: Any
) -> httpx.Response:
    return await http.post(HOOKS, json={"url": url, **body}, headers=headers)


async def test_an_org_admin_manages_endpoints_and_the_secret_is_shown_once(
    http: httpx.AsyncClient, world: World, receiver: Receiver, hooked: FastAPI
) -> None:
    admin = world["admin"].auth
    created = await _create(
        http, admin, receiver.url, description="CRM", event_types=["membership.created"]
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert body["org_id"] == str(world.org_a)
    assert body["event_types"] == ["membership.created"]
    endpoint = body["id"]
    answers = [
        await http.get(HOOKS, headers=admin),
        await http.get(f"{HOOKS}/{endpoint}", headers=admin),
        await http.patch(f"{HOOKS}/{endpoint}", json={"description": "CRM sync"}, headers=admin),
        await http.get(f"{HOOKS}/{endpoint}/deliveries", headers=admin),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text
        assert '"secret"' not in answer.text
    assert answers[2].json()["description"] == "CRM sync"
    rotated = await http.post(f"{HOOKS}/{endpoint}/rotate-secret", headers=admin)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (secret, None)
    assert rotated.json()["previous_secret_expires_at"] is not None
    tested = await http.post(f"{HOOKS}/{endpoint}/test", headers=admin)
    assert tested.status_code == 202
    assert tested.json()["event_type"] == "webhook.test"
    assert (await http.delete(f"{HOOKS}/{endpoint}", headers=admin)).status_code == 204
    assert (await http.get(f"{HOOKS}/{endpoint}", headers=admin)).status_code == 404
    # Every change is in the organization's audit chain; the URL's host only.
    async with authkeep_of(hooked).services.db.reading() as conn:
        rows = (
            await conn.execute(
                select(AuditEntry.action, AuditEntry.org_id, AuditEntry.details)
                .where(AuditEntry.action.like("webhook_%"))
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [row.action for row in rows] == [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.tested",
        "webhook_endpoint.deleted",
    ]
    assert {row.org_id for row in rows} == {world.org_a}
    assert rows[0].details["host"] == "127.0.0.1"
    assert "/hooks" not in str(rows[0].details)


async def test_creating_and_rotating_need_a_recent_sign_in(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    admin = world["admin"].auth
    created = await _create(http, admin, receiver.url)
    endpoint = created.json()["id"]
    with time_machine.travel(utcnow() + timedelta(minutes=11), tick=True):
        for answer in (
            await _create(http, admin, receiver.url),
            await http.post(f"{HOOKS}/{endpoint}/rotate-secret", headers=admin),
        ):
            assert answer.status_code == 401
            assert "insufficient_user_authentication" in answer.headers["www-authenticate"]
        # Reading is not sensitive.
        assert (await http.get(HOOKS, headers=admin)).status_code == 200


async def test_only_the_organizations_admins_with_a_session_manage_its_endpoints(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    created = await _create(http, world["admin"].auth, receiver.url)
    endpoint = created.json()["id"]
    for who in ("editor", "viewer", "non_member"):
        headers = world[who].auth
        assert (await http.get(HOOKS, headers=headers)).status_code == 403, who
        assert (await _create(http, headers, receiver.url)).status_code == 403, who
    # The admin of another organization: the endpoint does not exist for them — the answer
    # is the one a never-registered id gets, so nothing tells them it exists.
    outsider = world["outsider"].auth
    unknown = uuid.uuid4()
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/test"),
        ("GET", "/deliveries"),
    ):
        kwargs: dict[str, Any] = {"json": {"enabled": False}} if method == "PATCH" else {}
        theirs = await http.request(
            method, f"{HOOKS}/{endpoint}{suffix}", headers=outsider, **kwargs
        )
        missing = await http.request(
            method, f"{HOOKS}/{unknown}{suffix}", headers=outsider, **kwargs
        )
        assert theirs.status_code == 404, (method, suffix)
        assert (theirs.status_code, theirs.json()) == (missing.status_code, missing.json())
    assert (await http.get(HOOKS, headers=outsider)).json() == []
    # An API key of the organization, even an admin one, is no user session.
    key = await http.post(
        "/api/v1/api-keys", json={"name": "ci", "role": "admin"}, headers=world["admin"].auth
    )
    assert (await http.get(HOOKS, headers=bearer(key.json()["key"]))).status_code == 403
    # Platform routes are for platform admins.
    assert (await http.get(ADMIN_HOOKS, headers=world["admin"].auth)).status_code == 403


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hooks?token=s3cr3t-in-url",
        "http://10.0.0.5/hooks?token=s3cr3t-in-url",
        "http://169.254.169.254/latest/meta-data?token=s3cr3t-in-url",
        "http://localhost/hooks?token=s3cr3t-in-url",
        "http://[::ffff:127.0.0.1]/hooks?token=s3cr3t-in-url",
    ],
)
async def test_ssrf_urls_are_refused_with_a_422_that_echoes_nothing(
    make_settings: Callable[..., Settings], url: str
) -> None:
    # No allow-list here: production's rules (but http, as outside production).
    app = create_app(make_settings())
    async with running(app), client_for(app) as client:
        admin = await sign_up(client, "admin@example.com")
        org = await client.post(ORGS, json={"name": "Acme"}, headers=admin.auth)
        switched = await client.post(
            "/api/v1/auth/switch-org", json={"org_id": org.json()["id"]}, headers=admin.auth
        )
        headers = bearer(switched.json()["access_token"])
        answer = await client.post(HOOKS, json={"url": url}, headers=headers)
        patched = await client.patch(f"{HOOKS}/{uuid.uuid4()}", json={"url": url}, headers=headers)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "url"]
    assert "s3cr3t-in-url" not in answer.text
    assert patched.status_code == 422
    assert "s3cr3t-in-url" not in patched.text


async def test_bad_bodies_are_422s_that_echo_nothing(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    admin = world["admin"].auth
    for body in (
        {"url": receiver.url, "event_types": ["user.nonsense-xyz"]},
        {"url": receiver.url, "secret": "whsec_bXlzZWNyZXRteXNlY3JldA=="},
        {"url": receiver.url, "org_id": str(world.org_b)},
        {"url": receiver.url, "event_types": ["webhook.test"]},
        {"url": "x" * 3000},
    ):
        answer = await http.post(HOOKS, json=body, headers=admin)
        assert answer.status_code == 422, body
        assert "nonsense-xyz" not in answer.text
        assert "bXlzZWNyZXRteXNlY3JldA" not in answer.text
    assert (await http.patch(f"{HOOKS}/{uuid.uuid4()}", json={}, headers=admin)).status_code == 422


async def test_the_catalogue_is_served(http: httpx.AsyncClient, world: World) -> None:
    answer = await http.get(f"{HOOKS}/event-types", headers=world["admin"].auth)
    assert answer.status_code == 200
    assert {item["type"] for item in answer.json()} == set(EVENT_TYPES)


async def test_real_account_flows_arrive_as_verified_events(
    http: httpx.AsyncClient, hooked: FastAPI, receiver: Receiver
) -> None:
    """One endpoint of the platform (every event) and one of an organization (its events):
    the flows of an organization's life arrive, each verified, each id once."""
    services = authkeep_of(hooked).services
    _, root = await platform_admin(hooked, http)
    platform = await http.post(ADMIN_HOOKS, json={"url": receiver.url_for("/all")}, headers=root)
    assert platform.status_code == 201, platform.text
    receiver.add_secret(platform.json()["secret"])

    world = await build_world(http)  # sign-ups, an org, invitations accepted
    admin, editor, viewer = world["admin"], world["editor"], world["viewer"]
    own = await _create(http, admin.auth, receiver.url_for("/org"))
    receiver.add_secret(own.json()["secret"])
    org = f"{ORGS}/{world.org_a}"
    await http.patch(f"{org}/members/{viewer.user_id}", json={"role": "editor"}, headers=admin.auth)
    await http.delete(f"{org}/members/{editor.user_id}", headers=admin.auth)
    invited = await http.post(
        f"{org}/invitations",
        json={"email": "later@example.com", "role": "viewer"},
        headers=admin.auth,
    )
    assert invited.status_code == 202
    [pending] = (await http.get(f"{org}/invitations", headers=admin.auth)).json()
    await http.delete(f"{org}/invitations/{pending['id']}", headers=admin.auth)
    key = await http.post("/api/v1/api-keys", json={"name": "ci"}, headers=admin.auth)
    await http.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=admin.auth)
    changed = await http.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase 42"},
        headers=world["non_member"].auth,
    )
    assert changed.status_code == 204
    pair = await login(http, "outsider@example.com")
    await http.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))
    spent = await login(http, "viewer@example.com")
    await http.post("/api/v1/auth/refresh", json={"refresh_token": spent["refresh_token"]})
    reused = await http.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": spent["refresh_token"]},
        headers={"user-agent": "another client"},
    )
    assert reused.status_code == 401
    gone = await register(http, "gone@example.com")
    erased = await http.request(
        "DELETE", f"/api/v1/admin/users/{gone['id']}", json={"reason": "test"}, headers=root
    )
    assert erased.status_code == 204, erased.text

    await pump(
        services.delivery.worker, lambda: webhooks_settled(services.db), "everything settled"
    )
    requests = receiver.requests()
    assert all(r.verified_by for r in requests)
    seen = {(r.path, r.webhook_id) for r in requests}
    assert len(seen) == len(requests), "an event arrived twice at one endpoint"
    for request in requests:
        body = request.json
        schema = EVENT_TYPES[body["type"]].data_schema
        jsonschema.validate(body["data"], schema, format_checker=jsonschema.FormatChecker())
        assert body["audit"]["seq"] > 0
    everything = {r.json["type"] for r in requests if r.path == "/all"}
    assert everything >= {
        "user.created",
        "membership.created",
        "invitation.created",
        "invitation.accepted",
        "invitation.revoked",
        "membership.role_changed",
        "membership.removed",
        "api_key.created",
        "api_key.revoked",
        "user.password_changed",
        "session.revoked",
        "session.refresh_reuse_detected",
        "user.deleted",
    }
    # The organization's endpoint hears its organization only (registered after the
    # invitations of build_world were accepted).
    org_bodies = [r.json for r in requests if r.path == "/org"]
    assert {b["type"] for b in org_bodies} == {
        "membership.role_changed",
        "membership.removed",
        "invitation.created",
        "invitation.revoked",
        "api_key.created",
        "api_key.revoked",
    }
    assert {b["audit"]["chain"] for b in org_bodies} == {str(world.org_a)}
    assert {b["data"]["org_id"] for b in org_bodies} == {str(world.org_a)}
