"""Each audited event, driven through HTTP, writes exactly one row with the right fields:
actor, request id (the response's X-Request-ID), client IP, action, outcome and entity."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from audit_helpers import app_rows, services
from authkeep import PermissionDenied, RateLimited, Settings, create_app
from authkeep.db import users as user_rows
from authkeep.db.audit import EntryRecord
from authkeep.services.audit import Action, Actor
from helpers import PASSWORD, PEER, bearer, client_for, login, register, running, user_json

NEW_PASSWORD = "an entirely different passphrase 42"
CLIENT_IP = PEER[0]


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    # Rate limits off: these tests fail logins on purpose, more often than a limit allows.
    application = create_app(make_settings(rate_limit_enabled=False))

    @application.get("/test/forbidden/{thing_id}")
    async def forbidden(thing_id: str) -> None:
        raise PermissionDenied(entity_type="thing", entity_id=thing_id)

    @application.get("/test/limited")
    async def limited() -> None:
        raise RateLimited(30, limit="login", key="someone")

    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


async def only(app: FastAPI, action: str) -> EntryRecord:
    found = await app_rows(app, action)
    assert len(found) == 1, found
    return found[0]


def same_request(row: EntryRecord, response: httpx.Response) -> None:
    assert row.request_id == response.headers["x-request-id"]
    assert row.ip == CLIENT_IP


async def test_register(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 202
    user_id = (await user_json(app, "alice@example.com"))["id"]
    row = await only(app, Action.USER_REGISTERED)
    same_request(row, response)
    assert (row.outcome, row.entity_type, row.entity_id) == ("success", "user", user_id)
    assert str(row.actor_user_id) == user_id
    assert [r.action for r in await app_rows(app)] == [Action.USER_REGISTERED]


async def test_login_success(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    row = await only(app, Action.LOGIN)
    same_request(row, response)
    assert row.outcome == "success"
    assert str(row.actor_user_id) == user["id"]
    assert row.entity_type == "session"
    sessions = await client.get(
        "/api/v1/auth/sessions", headers=bearer(response.json()["access_token"])
    )
    assert row.entity_id == sessions.json()[0]["id"]


@pytest.mark.parametrize("case", ["unknown_email", "bad_password", "inactive", "deleted"])
async def test_login_failure_keeps_the_reason_to_itself(
    app: FastAPI, client: httpx.AsyncClient, case: str
) -> None:
    user = await register(client)
    user_id = uuid.UUID(user["id"])
    accounts = services(app).accounts
    if case == "inactive":
        await accounts.set_active(user_id, False)
    elif case == "deleted":
        await accounts.soft_delete(user_id)
    email = "nobody@example.com" if case == "unknown_email" else "alice@example.com"
    password = "wrong password, wrong" if case == "bad_password" else PASSWORD
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 401
    assert response.json() == {"detail": "Incorrect email or password"}
    assert case not in response.text
    row = await only(app, Action.LOGIN)
    same_request(row, response)
    assert row.outcome == "failure"
    assert row.details == {"reason": case}
    if case == "unknown_email":
        assert (row.actor_user_id, row.entity_id) == (None, None)
    else:
        assert (row.actor_user_id, row.entity_id) == (user_id, str(user_id))


async def _logged_in(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    user = await register(client)
    return user, await login(client)


async def test_logout(app: FastAPI, client: httpx.AsyncClient) -> None:
    user, pair = await _logged_in(client)
    response = await client.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))
    assert response.status_code == 204
    row = await only(app, Action.LOGOUT)
    same_request(row, response)
    assert str(row.actor_user_id) == user["id"]
    assert row.entity_type == "session"
    assert row.details == {"reason": "logout", "sessions_ended": 1}


async def test_logout_all(app: FastAPI, client: httpx.AsyncClient) -> None:
    user, pair = await _logged_in(client)
    await login(client)
    response = await client.post("/api/v1/auth/logout-all", headers=bearer(pair["access_token"]))
    assert response.status_code == 204
    row = await only(app, Action.LOGOUT_ALL)
    same_request(row, response)
    assert (row.entity_type, row.entity_id) == ("user", user["id"])
    assert row.details["sessions_ended"] == 2


async def test_refresh(app: FastAPI, client: httpx.AsyncClient) -> None:
    user, pair = await _logged_in(client)
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert response.status_code == 200
    row = await only(app, Action.REFRESH)
    same_request(row, response)
    assert (row.outcome, str(row.actor_user_id)) == ("success", user["id"])
    assert row.entity_type == "session"


async def test_refresh_token_reuse(app: FastAPI, client: httpx.AsyncClient) -> None:
    user, pair = await _logged_in(client)
    await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    # Past the grace window: the replay is theft.
    services(app).sessions._reuse_interval = type(services(app).sessions._reuse_interval)(0)
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert replay.status_code == 401
    row = await only(app, Action.REFRESH_REUSE)
    same_request(row, replay)
    assert (row.outcome, str(row.actor_user_id)) == ("failure", user["id"])
    assert row.details == {"sessions_revoked": 1, "reason": "outside_grace_window"}
    assert len(await app_rows(app, Action.REFRESH)) == 1


async def test_password_change(app: FastAPI, client: httpx.AsyncClient) -> None:
    user, pair = await _logged_in(client)
    response = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert response.status_code == 204
    row = await only(app, Action.PASSWORD_CHANGED)
    same_request(row, response)
    assert (row.outcome, row.entity_id, str(row.actor_user_id)) == (
        "success",
        user["id"],
        user["id"],
    )
    assert NEW_PASSWORD not in str(row.details)


async def test_password_change_with_a_wrong_current_password(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, pair = await _logged_in(client)
    response = await client.post(
        "/api/v1/auth/password",
        json={"current_password": "not the password at all", "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert response.status_code == 422
    row = await only(app, Action.PASSWORD_CHANGED)
    same_request(row, response)
    assert (row.outcome, row.details) == ("failure", {"reason": "bad_current_password"})


async def test_a_failing_password_change_leaves_neither_change_nor_row(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, pair = await _logged_in(client)
    audit = services(app).audit
    original = audit.record

    async def record_then_fail(*args: Any, **kwargs: Any) -> Any:
        await original(*args, **kwargs)
        raise RuntimeError("disk full")  # after the row is written, before commit

    audit.record = record_then_fail  # type: ignore[method-assign]
    response = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    audit.record = original  # type: ignore[method-assign]
    assert response.status_code == 500
    assert await app_rows(app, Action.PASSWORD_CHANGED) == []
    await login(client)  # the old password still works
    with pytest.raises(AssertionError):
        await login(client, password=NEW_PASSWORD)


async def test_session_revoked(app: FastAPI, client: httpx.AsyncClient) -> None:
    user, pair = await _logged_in(client)
    other = await login(client)
    listed = await client.get("/api/v1/auth/sessions", headers=bearer(pair["access_token"]))
    target = next(s["id"] for s in listed.json() if not s["current"])
    response = await client.delete(
        f"/api/v1/auth/sessions/{target}", headers=bearer(pair["access_token"])
    )
    assert response.status_code == 204
    row = await only(app, Action.SESSION_REVOKED)
    same_request(row, response)
    assert (row.entity_type, row.entity_id, str(row.actor_user_id)) == (
        "session",
        target,
        user["id"],
    )
    assert other  # the revoked one
    missing = await client.delete(
        f"/api/v1/auth/sessions/{uuid.uuid4()}", headers=bearer(pair["access_token"])
    )
    assert missing.status_code == 404
    assert len(await app_rows(app, Action.SESSION_REVOKED)) == 1


@pytest.mark.parametrize(
    ("change", "action"),
    [
        ("deactivate", Action.USER_DEACTIVATED),
        ("activate", Action.USER_ACTIVATED),
        ("delete", Action.USER_DELETED),
    ],
)
async def test_admin_status_changes(
    app: FastAPI, client: httpx.AsyncClient, change: str, action: str
) -> None:
    user = await register(client)
    await login(client)
    admin = Actor(uuid.uuid4())
    accounts = services(app).accounts
    user_id = uuid.UUID(user["id"])
    if change == "delete":
        await accounts.soft_delete(user_id, actor=admin)
    else:
        await accounts.set_active(user_id, change == "activate", actor=admin)
    row = await only(app, action)
    assert (row.actor_user_id, row.entity_type, row.entity_id) == (
        admin.user_id,
        "user",
        user["id"],
    )
    assert row.details["sessions_ended"] == (0 if change == "activate" else 1)


async def test_permission_denied(app: FastAPI, client: httpx.AsyncClient) -> None:
    user, pair = await _logged_in(client)
    response = await client.get("/api/v1/audit", headers=bearer(pair["access_token"]))
    assert response.status_code == 403
    row = await only(app, Action.ACCESS_DENIED)
    same_request(row, response)
    assert (row.outcome, str(row.actor_user_id)) == ("failure", user["id"])
    assert row.details == {"method": "GET", "route": "/api/v1/audit"}


async def test_permission_denied_names_the_entity(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.get("/test/forbidden/t-42")
    assert response.status_code == 403
    row = await only(app, Action.ACCESS_DENIED)
    same_request(row, response)
    assert (row.entity_type, row.entity_id, row.actor_user_id) == ("thing", "t-42", None)
    assert row.details["route"] == "/test/forbidden/{thing_id}"


async def test_rate_limited_is_recorded_once_per_key_and_minute(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = await client.get("/test/limited")
    second = await client.get("/test/limited")
    assert (first.status_code, second.status_code) == (429, 429)
    row = await only(app, Action.RATE_LIMITED)
    same_request(row, first)
    assert row.details == {"limit": "login", "retry_after": 30, "route": "/test/limited"}
    assert "someone" not in str(row.details)


async def test_configuration_problems_at_start(
    app: FastAPI, make_settings: Callable[..., Settings]
) -> None:
    found = await app_rows(app, Action.CONFIG_PROBLEM)
    settings = make_settings(rate_limit_enabled=False)
    assert {row.entity_id for row in found} == {
        "AUTHKEEP_RATE_LIMIT_ENABLED",
        "AUTHKEEP_TRUSTED_HOSTS",
        *(() if settings.redis_url else ("AUTHKEEP_REDIS_URL",)),
        *(("AUTHKEEP_DATABASE_URL",) if settings.database_url.startswith("sqlite") else ()),
        # Production must choose a mail transport and an https public URL for its links.
        *(() if settings.email_backend else ("AUTHKEEP_EMAIL_BACKEND",)),
        *(() if (settings.public_url or "").startswith("https://") else ("AUTHKEEP_PUBLIC_URL",)),
        # Production needs its own data keys and https passkey origins.
        *(() if settings.data_keys else ("AUTHKEEP_DATA_KEYS",)),
        *(
            ()
            if (settings.public_url or "").startswith("https://")
            else ("AUTHKEEP_WEBAUTHN_ORIGINS",)
        ),
    }
    # A second worker starting on the same database records nothing new.
    async with running(create_app(settings)):
        pass
    assert len(await app_rows(app, Action.CONFIG_PROBLEM)) == len(found)


async def test_cli_created_admin_is_audited(app: FastAPI) -> None:
    accounts = services(app).accounts
    user = await accounts.register(email="root@example.com", password=PASSWORD, is_superuser=True)
    row = await only(app, Action.USER_REGISTERED)
    assert row.details == {"is_superuser": True}
    assert (row.request_id, row.ip, row.actor_user_id) == (None, None, user.id)
    async with services(app).db.reading() as conn:
        assert (await user_rows.get_by_id(conn, services(app).envelope, user.id)) is not None
