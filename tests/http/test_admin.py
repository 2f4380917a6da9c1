"""``/api/v1/admin``: platform admins (``is_superuser``, with a user session) search users,
activate, deactivate and delete (erase) them; everything else gets 401/403; the routes can be
limited to an IP allow-list that a forged ``X-Forwarded-For`` does not get through."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.exceptions import HTTPException

from audit_helpers import app_rows, services
from authkeep import Settings, create_app
from authkeep.db.models import User
from authkeep.http.allowlist import IPAllowList
from authkeep.http.routers.admin import admin_ip_allowed
from authkeep.services.audit import Action
from helpers import PASSWORD, bearer, client_for, login, register, running

USERS = "/api/v1/admin/users"
LOGIN = "/api/v1/auth/login"
ROOT = "root@example.com"
PUBLIC_FIELDS = {
    "id",
    "email",
    "full_name",
    "is_active",
    "is_superuser",
    "created_at",
    "deleted_at",
}


async def make_root(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    """A platform admin's session headers (and their id under ``"id"`` of the login body)."""
    await services(app).accounts.register(email=ROOT, password=PASSWORD, is_superuser=True)
    return bearer((await login(client, ROOT))["access_token"])


@pytest.fixture
async def root(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    return await make_root(app, client)


async def root_id(client: httpx.AsyncClient, root: dict[str, str]) -> str:
    return str((await client.get("/api/v1/auth/me", headers=root)).json()["id"])


async def search(client: httpx.AsyncClient, root: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get(USERS, params=params, headers=root)
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- who may -----------------------------------------------------------------------------


async def test_only_platform_admins_with_a_session_may_use_admin_routes(
    app: FastAPI, client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    alice = await register(client)
    user = bearer((await login(client))["access_token"])
    target = f"{USERS}/{alice['id']}"

    anonymous = [
        await client.get(USERS),
        await client.patch(target, json={"is_active": False}),
        await client.delete(target),
    ]
    assert [r.status_code for r in anonymous] == [401, 401, 401]
    assert all(r.headers["www-authenticate"] == "Bearer" for r in anonymous)

    ordinary = [
        await client.get(USERS, headers=user),
        await client.patch(target, json={"is_active": False}, headers=user),
        await client.delete(target, headers=user),
        # Even against a user id that does not exist: refused before it is looked up.
        await client.delete(f"{USERS}/{uuid.uuid4()}", headers=user),
    ]
    assert [r.status_code for r in ordinary] == [403, 403, 403, 403]
    # Each refusal is evidence: one audit row apiece, naming the caller.
    denied = await app_rows(app, Action.ACCESS_DENIED)
    assert [str(row.actor_user_id) for row in denied] == [alice["id"]] * 4
    assert {row.request_id for row in denied} == {r.headers["x-request-id"] for r in ordinary}
    assert (await client.get("/api/v1/auth/me", headers=user)).json()["is_active"] is True

    assert (await client.get(USERS, headers=root)).status_code == 200


async def test_a_platform_admins_api_key_is_refused(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    org = await client.post("/api/v1/orgs", json={"name": "Ops"}, headers=root)
    switched = await client.post(
        "/api/v1/auth/switch-org", json={"org_id": org.json()["id"]}, headers=root
    )
    scoped = bearer(switched.json()["access_token"])
    created = await client.post(
        "/api/v1/api-keys", json={"name": "ops", "role": "admin"}, headers=scoped
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    for headers in ({"X-API-Key": key}, bearer(key)):
        assert (await client.get(USERS, headers=headers)).status_code == 403
        assert (await client.delete(f"{USERS}/{uuid.uuid4()}", headers=headers)).status_code == 403


# --- search --------------------------------------------------------------------------------


async def test_search_and_paging(client: httpx.AsyncClient, root: dict[str, str]) -> None:
    for email, name in [
        ("ann@example.com", "Ann Smith"),
        ("bo@example.org", "Bo Smithers"),
        ("cy@example.com", None),
        ("d_100%@example.com", "Percent"),
    ]:
        body: dict[str, Any] = {"email": email, "password": PASSWORD}
        if name:
            body["full_name"] = name
        assert (await client.post("/api/v1/auth/register", json=body)).status_code == 202

    everyone = await search(client, root)
    assert everyone["total"] == 5
    emails = [u["email"] for u in everyone["items"]]
    # Newest first: the admin was made before the four.
    assert emails[-1] == ROOT
    assert set(emails) == {
        ROOT,
        "ann@example.com",
        "bo@example.org",
        "cy@example.com",
        "d_100%@example.com",
    }

    # By exact address (in any letter case: the blind index is of the folded address) and
    # by id. Addresses and names are stored encrypted, so a part of one cannot match.
    ann = await search(client, root, q=" ANN@Example.COM ")
    assert ([u["email"] for u in ann["items"]], ann["total"]) == (["ann@example.com"], 1)
    by_id = await search(client, root, q=ann["items"][0]["id"])
    assert [u["email"] for u in by_id["items"]] == ["ann@example.com"]
    percent = await search(client, root, q="d_100%@example.com")
    assert [u["email"] for u in percent["items"]] == ["d_100%@example.com"]
    for nobody in ("nobody@example.com", str(uuid.uuid4())):
        assert await search(client, root, q=nobody) == {
            "items": [],
            "total": 0,
            "offset": 0,
            "limit": 50,
        }
    for partial in ("SMITH", "example.org", "%", "ann@"):
        response = await client.get(USERS, params={"q": partial}, headers=root)
        assert response.status_code == 422, (partial, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", "q"]
        assert "exact email address or a user id" in error["msg"]

    # Paging walks the same order without gaps or repeats.
    pages = [await search(client, root, offset=offset, limit=2) for offset in (0, 2, 4)]
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [u["email"] for p in pages for u in p["items"]] == emails
    assert all(p["total"] == 5 for p in pages)
    assert (pages[1]["offset"], pages[1]["limit"]) == (2, 2)
    assert (await search(client, root, offset=10))["items"] == []

    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"q": ""}, {"limit": "x"}):
        response = await client.get(USERS, params=bad, headers=root)
        assert response.status_code == 422, (bad, response.text)


async def test_search_shows_no_hashes(client: httpx.AsyncClient, root: dict[str, str]) -> None:
    await register(client)
    response = await client.get(USERS, headers=root)
    assert response.status_code == 200
    for item in response.json()["items"]:
        assert set(item) == PUBLIC_FIELDS
    assert "$argon2" not in response.text
    assert PASSWORD not in response.text
    assert response.headers["cache-control"] == "no-store"


async def assert_locked_out(client: httpx.AsyncClient, *pairs: dict[str, Any]) -> None:
    """Alice's token pairs are dead, and her login fails exactly like an unknown email's."""
    for tokens in pairs:
        me = await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 401
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 401
    unknown = await client.post(LOGIN, json={"email": "nobody@example.com", "password": PASSWORD})
    refused = await client.post(LOGIN, json={"email": "alice@example.com", "password": PASSWORD})
    assert refused.status_code == 401
    assert (refused.status_code, refused.json()) == (unknown.status_code, unknown.json())


# --- deactivate, activate --------------------------------------------------------------------


async def test_deactivation_ends_every_token_at_once(
    app: FastAPI, client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    alice = await register(client)
    first = await login(client)
    second = await login(client)
    assert (
        await client.get("/api/v1/auth/me", headers=bearer(first["access_token"]))
    ).status_code == 200

    response = await client.patch(f"{USERS}/{alice['id']}", json={"is_active": False}, headers=root)
    assert response.status_code == 200, response.text
    response_ids = [response.headers["x-request-id"]]
    assert response.json()["is_active"] is False
    assert set(response.json()) == PUBLIC_FIELDS

    await assert_locked_out(client, first, second)

    # Reactivated: a new login works, the old tokens stay dead.
    response = await client.patch(f"{USERS}/{alice['id']}", json={"is_active": True}, headers=root)
    assert response.json()["is_active"] is True
    fresh = await login(client)
    assert (
        await client.get("/api/v1/auth/me", headers=bearer(fresh["access_token"]))
    ).status_code == 200
    stale = await client.get("/api/v1/auth/me", headers=bearer(first["access_token"]))
    assert stale.status_code == 401

    root_user = await root_id(client, root)
    deactivated = await app_rows(app, Action.USER_DEACTIVATED)
    activated = await app_rows(app, Action.USER_ACTIVATED)
    assert [(str(r.actor_user_id), r.entity_id) for r in deactivated] == [(root_user, alice["id"])]
    assert [(str(r.actor_user_id), r.entity_id) for r in activated] == [(root_user, alice["id"])]
    assert deactivated[0].details == {"sessions_ended": 2}
    # The row carries the request it came from (id and proxy-aware client IP).
    assert deactivated[0].request_id == response_ids[0]
    assert deactivated[0].ip == "203.0.113.7"


async def test_a_deactivated_users_api_keys_stop_working(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    alice = await register(client)
    tokens = await login(client)
    org = await client.post(
        "/api/v1/orgs", json={"name": "Acme"}, headers=bearer(tokens["access_token"])
    )
    switched = await client.post(
        "/api/v1/auth/switch-org",
        json={"org_id": org.json()["id"]},
        headers=bearer(tokens["access_token"]),
    )
    created = await client.post(
        "/api/v1/api-keys", json={"name": "bot"}, headers=bearer(switched.json()["access_token"])
    )
    key = {"X-API-Key": created.json()["key"]}
    # Any key-accepting route will do: listing keys authenticates the key first, then
    # refuses it for being a key (403) — a dead key gets 401 instead.
    assert (await client.get("/api/v1/api-keys", headers=key)).status_code == 403

    await client.patch(f"{USERS}/{alice['id']}", json={"is_active": False}, headers=root)
    assert (await client.get("/api/v1/api-keys", headers=key)).status_code == 401


async def test_unknown_users_and_bad_bodies(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    missing = f"{USERS}/{uuid.uuid4()}"
    assert (await client.patch(missing, json={"is_active": False}, headers=root)).status_code == 404
    assert (
        await client.request("DELETE", missing, json={"reason": "gone"}, headers=root)
    ).status_code == 404
    alice = await register(client)
    target = f"{USERS}/{alice['id']}"
    for body in ({}, {"is_active": "maybe"}, {"is_active": True, "is_superuser": True}):
        response = await client.patch(target, json=body, headers=root)
        assert response.status_code == 422, (body, response.text)
    assert (
        await client.patch(f"{USERS}/not-a-uuid", json={"is_active": True}, headers=root)
    ).status_code == 422
    # Nobody was promoted by the mass-assignment attempt.
    [found] = (await search(client, root, q="alice@example.com"))["items"]
    assert found["is_superuser"] is False


async def test_an_admin_cannot_lock_themselves_out(
    app: FastAPI, client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    me = f"{USERS}/{await root_id(client, root)}"
    for response in (
        await client.patch(me, json={"is_active": False}, headers=root),
        await client.request("DELETE", me, json={"reason": "leaving"}, headers=root),
    ):
        assert response.status_code == 409, response.text
    # Still in, and nothing was recorded as done.
    assert (await client.get(USERS, headers=root)).status_code == 200
    assert await app_rows(app, Action.USER_DEACTIVATED) == []
    assert await app_rows(app, Action.USER_DELETED) == []
    # Activating oneself is a harmless no-op.
    assert (await client.patch(me, json={"is_active": True}, headers=root)).status_code == 200


async def test_admins_can_deactivate_another_admin(
    app: FastAPI, client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    other = await services(app).accounts.register(
        email="root2@example.com", password=PASSWORD, is_superuser=True
    )
    second = bearer((await login(client, "root2@example.com"))["access_token"])
    response = await client.patch(f"{USERS}/{other.id}", json={"is_active": False}, headers=root)
    assert response.status_code == 200
    assert (await client.get(USERS, headers=second)).status_code == 401


# --- soft delete -------------------------------------------------------------------------------


async def test_delete_needs_a_reason_and_erases_the_account(
    app: FastAPI, client: httpx.AsyncClient, root: dict[str, str], backend: Any
) -> None:
    alice = await register(client)
    tokens = await login(client)
    target = f"{USERS}/{alice['id']}"

    # Encrypted at rest (docs/privacy.md): the owner's read shows ciphertext only.
    engine = create_async_engine(backend.owner_url)
    try:
        async with engine.connect() as conn:
            [row] = (
                await conn.execute(select(User.email).where(User.id == uuid.UUID(alice["id"])))
            ).all()
        assert row.email.startswith("uk1.")
        assert "alice" not in row.email

        # A reason is required (it goes to the audit log).
        for body in (None, {}, {"reason": "  "}):
            refused = await client.request("DELETE", target, json=body, headers=root)
            assert refused.status_code == 422, (body, refused.text)
        assert (
            await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
        ).is_success

        response = await client.request(
            "DELETE", target, json={"reason": "asked by email, ticket 42"}, headers=root
        )
        assert response.status_code == 204
        assert response.content == b""

        await assert_locked_out(client, tokens)
        # Erased at once: the row is gone, as the database owner sees it.
        async with engine.connect() as conn:
            gone = (
                await conn.execute(select(User.id).where(User.id == uuid.UUID(alice["id"])))
            ).all()
        assert gone == []
    finally:
        await engine.dispose()
    assert (await search(client, root, q="alice@example.com"))["items"] == []
    [deleted] = await app_rows(app, Action.USER_DELETED)
    assert (str(deleted.actor_user_id), deleted.entity_id) == (
        await root_id(client, root),
        alice["id"],
    )
    assert deleted.details["reason"] == "asked by email, ticket 42"
    [erased] = await app_rows(app, Action.USER_ERASED)
    assert erased.entity_id == alice["id"]

    # Deleting again, or activating, finds nobody; the address is free for a new account.
    again = await client.request("DELETE", target, json={"reason": "again"}, headers=root)
    assert again.status_code == 404
    reactivated = await client.patch(target, json={"is_active": True}, headers=root)
    assert reactivated.status_code == 404
    assert len(await app_rows(app, Action.USER_DELETED)) == 1
    fresh = await register(client)
    assert fresh["id"] != alice["id"]


# --- IP allow-list ---------------------------------------------------------------------------

ADMIN_NET = "10.20.0.0/16"
PROXY = "192.0.2.10"
INSIDE = ("10.20.1.5", 41000)
OUTSIDE = ("203.0.113.7", 41000)


@pytest.fixture
async def fenced(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(admin_allowed_ips=[ADMIN_NET], trusted_proxies=[PROXY]))
    async with running(application):
        yield application


async def test_admin_routes_answer_only_inside_the_allow_list(fenced: FastAPI) -> None:
    async with (
        client_for(fenced, peer=INSIDE) as inside,
        client_for(fenced, peer=OUTSIDE) as outside,
        client_for(fenced, peer=(PROXY, 443)) as proxy,
    ):
        root = await make_root(fenced, outside)  # logging in works from anywhere
        assert (await inside.get(USERS, headers=root)).status_code == 200

        unknown_path = await outside.get("/api/v1/no-such-route", headers=root)
        attempts = [
            await outside.get(USERS, headers=root),
            await outside.get(USERS),  # before authentication: no 401 either
            await outside.delete(f"{USERS}/{uuid.uuid4()}", headers=root),
            await outside.patch(f"{USERS}/{uuid.uuid4()}", json={"is_active": False}, headers=root),
            # A client writing the header itself is not a proxy: the header is ignored.
            await outside.get(USERS, headers={**root, "X-Forwarded-For": INSIDE[0]}),
            # Through the trusted proxy, the right-most untrusted hop is the client, so an
            # address the client prepended does not help either.
            await proxy.get(USERS, headers={**root, "X-Forwarded-For": OUTSIDE[0]}),
            await proxy.get(
                USERS, headers={**root, "X-Forwarded-For": f"{INSIDE[0]}, {OUTSIDE[0]}"}
            ),
            # The proxy itself is not on the admin list.
            await proxy.get(USERS, headers=root),
        ]
        for response in attempts:
            assert response.status_code == 404, (response.request.url, response.text)
            assert response.json() == unknown_path.json()

        relayed = await proxy.get(USERS, headers={**root, "X-Forwarded-For": INSIDE[0]})
        assert relayed.status_code == 200, relayed.text
        # Only admin routes are fenced.
        assert (await outside.get("/api/v1/auth/me", headers=root)).status_code == 200


@pytest.mark.parametrize("forwarded", ["garbage", "", "unknown", f"{INSIDE[0]},"])
async def test_an_unparsable_forwarded_chain_is_refused_even_from_an_allowed_proxy(
    make_settings: Callable[..., Settings], forwarded: str
) -> None:
    # An internal proxy inside the admin network: a chain it relays that does not parse must
    # not be taken for the proxy's own (allowed) address.
    inner_proxy = "10.20.0.1"
    application = create_app(
        make_settings(admin_allowed_ips=[ADMIN_NET], trusted_proxies=[inner_proxy])
    )
    async with running(application), client_for(application, (inner_proxy, 443)) as proxy:
        root = await make_root(application, proxy)
        garbage = await proxy.get(USERS, headers={**root, "X-Forwarded-For": forwarded})
        relayed = await proxy.get(USERS, headers={**root, "X-Forwarded-For": INSIDE[0]})
        unknown_path = await proxy.get("/api/v1/no-such-route", headers=root)
    assert garbage.status_code == 404, garbage.text
    assert garbage.json() == unknown_path.json()
    assert relayed.status_code == 200, relayed.text


async def test_outsiders_learn_nothing_from_bodies_or_methods(fenced: FastAPI) -> None:
    # Inside the list, a malformed body is a 422 and a wrong method a 405; outside, both
    # must be the unknown path's 404, or a scanner would learn that the routes exist.
    target = f"{USERS}/{uuid.uuid4()}"
    json_type = {"Content-Type": "application/json"}
    async with (
        client_for(fenced, peer=INSIDE) as inside,
        client_for(fenced, peer=OUTSIDE) as outside,
    ):
        assert (
            await inside.patch(target, content=b"{not json", headers=json_type)
        ).status_code == 422
        assert (await inside.put(USERS)).status_code == 405
        unknown = await outside.get("/api/v1/no-such-route")
        for response in (
            await outside.patch(target, content=b"{not json", headers=json_type),
            await outside.put(USERS),
            await outside.post(target, json={}),
            await outside.get(USERS + "/"),
        ):
            assert response.status_code == 404, (response.request.method, response.text)
            assert response.json() == unknown.json()
            assert "allow" not in response.headers


async def test_without_an_allow_list_admin_routes_answer_anywhere(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    # The default client's peer is a public address (helpers.PEER).
    assert (await client.get(USERS, headers=root)).status_code == 200


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.20.1.5", True),
        ("::ffff:10.20.1.5", True),  # the same client on a dual-stack socket
        ("192.0.2.15", True),
        ("10.21.0.1", False),
        ("192.0.2.16", False),
        ("2001:db8::1", False),
        ("not-an-ip", False),
        ("", False),
        (None, False),
    ],
)
def test_the_allow_list_matches_addresses_and_networks(address: str | None, allowed: bool) -> None:
    assert IPAllowList([ADMIN_NET, "192.0.2.15"]).allows(address) is allowed


def test_an_empty_allow_list_allows_nobody() -> None:
    assert IPAllowList([]).allows("10.20.1.5") is False


async def test_the_route_dependency_refuses_too(make_settings: Callable[..., Settings]) -> None:
    # Should the routes be mounted without AdminRoute, the router's dependency still answers
    # 404 to an outsider.
    application = create_app(make_settings(admin_allowed_ips=[ADMIN_NET]))

    def request_from(ip: str) -> Request:
        return Request({"type": "http", "app": application, "state": {"client_ip": ip}})

    await admin_ip_allowed(request_from(INSIDE[0]))
    with pytest.raises(HTTPException) as refused:
        await admin_ip_allowed(request_from(OUTSIDE[0]))
    assert refused.value.status_code == 404
