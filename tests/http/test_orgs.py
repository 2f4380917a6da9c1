"""Organizations and members over HTTP: CRUD, joining by invitation, changing roles, removing,
the last admin, switch-org, changes that apply on the next request with the old token,
mass assignment, 404 for outsiders, and exactly one audit row per change."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from audit_helpers import app_rows
from authkeep import Authkeep, OrgAccess, Settings, require_role
from helpers import bearer, client_for, running
from org_helpers import (
    INVITATIONS,
    ORGS,
    SWITCH,
    World,
    add_member,
    build_world,
    create_org,
    invite,
    mark_verified,
    pending_id,
    sign_up,
)
from session_helpers import claims_of, refresh

CHANGE_ACTIONS = (
    "org.created",
    "org.updated",
    "org.deleted",
    "invitation.created",
    "invitation.accepted",
    "member.role_changed",
    "member.removed",
)


async def change_rows(app: FastAPI) -> list[tuple[str, str | None, uuid.UUID | None]]:
    """(action, entity_id, org_id) of every organization or membership change recorded."""
    return [
        (row.action, row.entity_id, row.org_id)
        for row in await app_rows(app)
        if row.action in CHANGE_ACTIONS
    ]


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    return await build_world(client)


def members_url(org_id: uuid.UUID, user_id: uuid.UUID | None = None) -> str:
    return f"{ORGS}/{org_id}/members" + (f"/{user_id}" if user_id else "")


# --- organizations -------------------------------------------------------------------------


async def test_create_makes_the_caller_admin_and_writes_one_audit_row(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice@example.com")
    created = await client.post(ORGS, json={"name": "  Acme  "}, headers=alice.auth)
    assert created.status_code == 201, created.text
    body = created.json()
    org_id = uuid.UUID(body["id"])
    assert body["name"] == "Acme"
    assert body["role"] == "admin"
    assert await change_rows(app) == [("org.created", str(org_id), org_id)]
    [row] = await app_rows(app, "org.created")
    assert row.actor_user_id == alice.user_id

    members = await client.get(members_url(org_id), headers=alice.auth)
    assert [(m["email"], m["role"]) for m in members.json()] == [("alice@example.com", "admin")]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bad\x00name", "zero\u200bwidth"])
async def test_an_invalid_name_is_422_and_creates_nothing(
    app: FastAPI, client: httpx.AsyncClient, name: str
) -> None:
    alice = await sign_up(client, "alice@example.com")
    response = await client.post(ORGS, json={"name": name}, headers=alice.auth)
    assert response.status_code == 422, response.text
    assert (await client.get(ORGS, headers=alice.auth)).json() == []
    assert await change_rows(app) == []


async def test_list_shows_only_the_callers_organizations_with_their_role(
    client: httpx.AsyncClient, world: World
) -> None:
    listed = await client.get(ORGS, headers=world["viewer"].auth)
    assert [(o["id"], o["role"]) for o in listed.json()] == [(str(world.org_a), "viewer")]
    assert (await client.get(ORGS, headers=world["non_member"].auth)).json() == []
    # A user belongs to many organizations, with a role in each.
    await add_member(client, world["outsider"], world.org_b, world["viewer"], "editor")
    roles = {
        o["id"]: o["role"] for o in (await client.get(ORGS, headers=world["viewer"].auth)).json()
    }
    assert roles == {str(world.org_a): "viewer", str(world.org_b): "editor"}


async def test_get_is_for_members_and_404_for_everyone_else(
    client: httpx.AsyncClient, world: World
) -> None:
    for who in ("admin", "editor", "viewer"):
        response = await client.get(f"{ORGS}/{world.org_a}", headers=world[who].auth)
        assert response.status_code == 200
        assert response.json()["role"] == who
    for who in ("non_member", "outsider"):
        response = await client.get(f"{ORGS}/{world.org_a}", headers=world[who].auth)
        assert response.status_code == 404
    unknown = await client.get(f"{ORGS}/{uuid.uuid4()}", headers=world["admin"].auth)
    # An existing organization of others and one that never existed answer alike.
    assert unknown.status_code == 404
    assert (
        unknown.json()
        == (await client.get(f"{ORGS}/{world.org_a}", headers=world["outsider"].auth)).json()
    )


async def test_rename_is_for_admins(app: FastAPI, client: httpx.AsyncClient, world: World) -> None:
    url = f"{ORGS}/{world.org_a}"
    for who, expected in (("editor", 403), ("viewer", 403), ("outsider", 404)):
        response = await client.patch(url, json={"name": "Mine"}, headers=world[who].auth)
        assert response.status_code == expected, who
    before = await change_rows(app)
    renamed = await client.patch(url, json={"name": "Org A2"}, headers=world["admin"].auth)
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Org A2"
    assert (await client.get(url, headers=world["viewer"].auth)).json()["name"] == "Org A2"
    assert (await change_rows(app))[len(before) :] == [
        ("org.updated", str(world.org_a), world.org_a)
    ]
    [row] = await app_rows(app, "org.updated")
    assert row.details == {"from": "Org A", "to": "Org A2"}


async def test_delete_is_for_admins_and_every_member_loses_access_at_once(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    url = f"{ORGS}/{world.org_a}"
    for who, expected in (("editor", 403), ("viewer", 403), ("outsider", 404)):
        assert (await client.delete(url, headers=world[who].auth)).status_code == expected
    before = await change_rows(app)
    assert (await client.delete(url, headers=world["admin"].auth)).status_code == 204
    assert (await change_rows(app))[len(before) :] == [
        ("org.deleted", str(world.org_a), world.org_a)
    ]
    for who in ("admin", "editor", "viewer"):
        # The same tokens as before, scoped to the deleted organization.
        assert (await client.get(url, headers=world[who].auth)).status_code == 404
        assert (
            await client.get(members_url(world.org_a), headers=world[who].auth)
        ).status_code == 404
        assert (
            await client.post(SWITCH, json={"org_id": str(world.org_a)}, headers=world[who].auth)
        ).status_code == 404
        assert (await client.get(ORGS, headers=world[who].auth)).json() == []
    # Deleting again is "not found", not a second audit row.
    assert (await client.delete(url, headers=world["admin"].auth)).status_code == 404
    assert len(await app_rows(app, "org.deleted")) == 1


# --- members -------------------------------------------------------------------------------


async def test_join_by_invitation_change_role_and_remove_each_write_one_audit_row(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    admin, newcomer = world["admin"], world["non_member"]
    before = await change_rows(app)
    # The email is matched as login matches it (case-folded).
    invited = await invite(client, admin, world.org_a, "NON_MEMBER@Example.COM", "editor")
    assert invited.status_code == 202, invited.text
    await mark_verified(client, newcomer)
    invitation_id = await pending_id(client, newcomer, world.org_a)
    added = await client.post(
        f"{INVITATIONS}/accept",
        json={"invitation_id": str(invitation_id)},
        headers=newcomer.auth,
    )
    assert added.status_code == 200, added.text
    assert added.json()["user_id"] == str(newcomer.user_id)
    assert added.json()["role"] == "editor"

    changed = await client.patch(
        members_url(world.org_a, newcomer.user_id), json={"role": "viewer"}, headers=admin.auth
    )
    assert changed.status_code == 200
    assert changed.json()["role"] == "viewer"
    # The same role again changes nothing, so it records nothing.
    same = await client.patch(
        members_url(world.org_a, newcomer.user_id), json={"role": "viewer"}, headers=admin.auth
    )
    assert same.status_code == 200

    removed = await client.delete(members_url(world.org_a, newcomer.user_id), headers=admin.auth)
    assert removed.status_code == 204
    assert (await client.get(ORGS, headers=newcomer.auth)).json() == []

    entity = str(newcomer.user_id)
    assert (await change_rows(app))[len(before) :] == [
        ("invitation.created", str(invitation_id), world.org_a),
        ("invitation.accepted", str(invitation_id), world.org_a),
        ("member.role_changed", entity, world.org_a),
        ("member.removed", entity, world.org_a),
    ]
    [change] = await app_rows(app, "member.role_changed")
    assert change.details == {"from": "editor", "to": "viewer"}
    assert change.actor_user_id == admin.user_id


@pytest.mark.parametrize(
    ("who", "expected"), [("editor", 403), ("viewer", 403), ("non_member", 404), ("outsider", 404)]
)
async def test_only_admins_manage_members(
    app: FastAPI, client: httpx.AsyncClient, world: World, who: str, expected: int
) -> None:
    caller = world[who].auth
    target = world["viewer"] if who != "viewer" else world["editor"]
    before = await change_rows(app)
    responses = [
        await client.post(
            f"{ORGS}/{world.org_a}/invitations",
            json={"email": world["non_member"].email},
            headers=caller,
        ),
        await client.patch(
            members_url(world.org_a, target.user_id), json={"role": "admin"}, headers=caller
        ),
        await client.delete(members_url(world.org_a, target.user_id), headers=caller),
    ]
    assert [r.status_code for r in responses] == [expected] * 3
    assert await change_rows(app) == before
    # Nobody's role changed.
    roles = {
        m["email"]: m["role"]
        for m in (await client.get(members_url(world.org_a), headers=world["admin"].auth)).json()
    }
    assert roles == {
        "admin@example.com": "admin",
        "editor@example.com": "editor",
        "viewer@example.com": "viewer",
    }


async def test_any_member_may_leave(app: FastAPI, client: httpx.AsyncClient, world: World) -> None:
    viewer = world["viewer"]
    left = await client.delete(members_url(world.org_a, viewer.user_id), headers=viewer.auth)
    assert left.status_code == 204
    [row] = await app_rows(app, "member.removed")
    assert row.details == {"role": "viewer", "left": True}
    assert row.actor_user_id == viewer.user_id
    assert (await client.get(f"{ORGS}/{world.org_a}", headers=viewer.auth)).status_code == 404


async def test_a_member_that_is_not_there_is_404(client: httpx.AsyncClient, world: World) -> None:
    auth = world["admin"].auth
    stranger = world["outsider"].user_id  # exists, but not in A
    for response in (
        await client.patch(
            members_url(world.org_a, stranger), json={"role": "viewer"}, headers=auth
        ),
        await client.delete(members_url(world.org_a, stranger), headers=auth),
        await client.delete(members_url(world.org_a, uuid.uuid4()), headers=auth),
    ):
        assert response.status_code == 404


# --- the last admin ------------------------------------------------------------------------


async def test_the_last_admin_can_neither_be_demoted_nor_leave(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    admin = world["admin"]
    own = members_url(world.org_a, admin.user_id)
    before = await change_rows(app)
    for role in ("editor", "viewer"):
        demoted = await client.patch(own, json={"role": role}, headers=admin.auth)
        assert demoted.status_code == 409, demoted.text
        assert "at least one admin" in demoted.json()["detail"]
    assert (await client.delete(own, headers=admin.auth)).status_code == 409
    assert await change_rows(app) == before
    assert (await client.get(f"{ORGS}/{world.org_a}", headers=admin.auth)).json()["role"] == "admin"

    # With a second admin, the first may step down, and then the second is the last one.
    editor = world["editor"]
    promote = await client.patch(
        members_url(world.org_a, editor.user_id), json={"role": "admin"}, headers=admin.auth
    )
    assert promote.status_code == 200
    assert (await client.delete(own, headers=admin.auth)).status_code == 204
    last = members_url(world.org_a, editor.user_id)
    assert (
        await client.patch(last, json={"role": "viewer"}, headers=editor.auth)
    ).status_code == 409
    assert (await client.delete(last, headers=editor.auth)).status_code == 409


# --- switch-org and changes on the next request ----------------------------------------------


async def test_switch_org_reissues_a_token_carrying_org_and_role(
    client: httpx.AsyncClient, world: World
) -> None:
    viewer = world["viewer"]
    await add_member(client, world["outsider"], world.org_b, viewer, "editor")
    for org_id, role in ((world.org_a, "viewer"), (world.org_b, "editor")):
        response = await client.post(SWITCH, json={"org_id": str(org_id)}, headers=viewer.auth)
        assert response.status_code == 200
        body = response.json()
        assert (body["org_id"], body["role"], body["token_type"]) == (str(org_id), role, "bearer")
        claims = claims_of(body["access_token"])
        assert (claims["org_id"], claims["role"]) == (str(org_id), role)
        assert claims["sub"] == str(viewer.user_id)
        viewer.access = body["access_token"]
    # The session remembers the organization: a refresh stays in it.
    refreshed = await refresh(client, viewer.refresh)
    assert refreshed.status_code == 200
    assert claims_of(refreshed.json()["access_token"])["org_id"] == str(world.org_b)


async def test_switching_to_an_organization_one_is_not_in_is_404(
    client: httpx.AsyncClient, world: World
) -> None:
    editor = world["editor"]
    previous = editor.access
    for org_id in (world.org_b, uuid.uuid4()):
        response = await client.post(SWITCH, json={"org_id": str(org_id)}, headers=editor.auth)
        assert response.status_code == 404
    assert editor.access == previous
    malformed = await client.post(SWITCH, json={"org_id": "not-a-uuid"}, headers=editor.auth)
    assert malformed.status_code == 422
    anonymous = await client.post(SWITCH, json={"org_id": str(world.org_a)})
    assert anonymous.status_code == 401


async def test_login_starts_in_the_oldest_organization(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(
        "/api/v1/auth/login",
        json={"email": "editor@example.com", "password": "correct horse battery staple"},
    )
    claims = claims_of(response.json()["access_token"])
    assert (claims["org_id"], claims["role"]) == (str(world.org_a), "editor")


@pytest.fixture
async def guarded(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """A tiny app of a user's own, with one editor-only route."""
    app = FastAPI()
    Authkeep(make_settings()).install(app)

    @app.post("/things")
    async def make_thing(
        access: Annotated[OrgAccess, Depends(require_role("editor"))],
    ) -> dict[str, Any]:
        return {"org_id": str(access.org_id), "role": access.role.value}

    async with running(app), client_for(app) as http:
        yield http


async def test_a_lowered_role_applies_on_the_next_request_with_the_old_token(
    guarded: httpx.AsyncClient,
) -> None:
    http = guarded
    admin, editor = await sign_up(http, "admin@example.com"), await sign_up(http, "ed@example.com")
    org = await create_org(http, admin)
    await add_member(http, admin, org, editor, "editor")
    old_token = editor.access
    assert claims_of(old_token)["role"] == "editor"
    assert (await http.post("/things", headers=bearer(old_token))).json() == {
        "org_id": str(org),
        "role": "editor",
    }

    lowered = await http.patch(
        members_url(org, editor.user_id), json={"role": "viewer"}, headers=admin.auth
    )
    assert lowered.status_code == 200
    # The token still says "editor"; the current role, not the token's, says "viewer".
    assert claims_of(old_token)["role"] == "editor"
    refused = await http.post("/things", headers=bearer(old_token))
    assert refused.status_code == 403
    assert "editor" in refused.json()["detail"]

    raised = await http.patch(
        members_url(org, editor.user_id), json={"role": "admin"}, headers=admin.auth
    )
    assert raised.status_code == 200
    assert (await http.post("/things", headers=bearer(old_token))).json()["role"] == "admin"


async def test_a_removal_applies_on_the_next_request_with_the_old_token(
    guarded: httpx.AsyncClient,
) -> None:
    http = guarded
    admin, editor = await sign_up(http, "admin@example.com"), await sign_up(http, "ed@example.com")
    org = await create_org(http, admin)
    await add_member(http, admin, org, editor, "editor")
    old = editor.auth
    assert (await http.post("/things", headers=old)).status_code == 200
    assert (await http.get(members_url(org), headers=old)).status_code == 200

    removed = await http.delete(members_url(org, editor.user_id), headers=admin.auth)
    assert removed.status_code == 204
    refused = await http.post("/things", headers=old)
    assert refused.status_code == 403
    assert "not a member" in refused.json()["detail"].lower()
    assert (await http.get(members_url(org), headers=old)).status_code == 404
    # Still signed in: removal from an organization is not a logout.
    assert (await http.get("/api/v1/auth/me", headers=old)).status_code == 200


async def test_a_route_needs_an_active_organization(guarded: httpx.AsyncClient) -> None:
    loner = await sign_up(guarded, "loner@example.com")
    refused = await guarded.post("/things", headers=loner.auth)
    assert refused.status_code == 403
    assert "switch-org" in refused.json()["detail"]
    assert (await guarded.post("/things")).status_code == 401


# --- mass assignment -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"role": "admin"},
        {"organization_id": "00000000-0000-0000-0000-000000000001"},
        {"is_superuser": True},
        {"created_by": "00000000-0000-0000-0000-000000000001"},
    ],
)
async def test_no_body_sets_role_organization_or_superuser(
    app: FastAPI, client: httpx.AsyncClient, world: World, extra: dict[str, Any]
) -> None:
    admin, viewer = world["admin"], world["viewer"]
    before = await change_rows(app)
    attempts = [
        (
            "POST",
            "/api/v1/auth/register",
            {"email": "new@example.com", "password": "correct horse battery staple"},
            None,
        ),
        ("POST", ORGS, {"name": "Sneaky"}, viewer),
        ("PATCH", f"{ORGS}/{world.org_a}", {"name": "Sneaky"}, admin),
        (
            "POST",
            f"{ORGS}/{world.org_a}/invitations",
            {"email": world["non_member"].email, "role": "viewer"},
            admin,
        ),
        ("PATCH", members_url(world.org_a, viewer.user_id), {"role": "editor"}, admin),
        ("POST", SWITCH, {"org_id": str(world.org_a)}, viewer),
    ]
    for method, url, body, who in attempts:
        if set(extra) & set(body):
            continue  # a field this route does take (an admin setting a member's role)
        response = await client.request(
            method, url, json={**body, **extra}, headers=who.auth if who else None
        )
        assert response.status_code == 422, (url, response.text)
    assert await change_rows(app) == before
    me = await client.get("/api/v1/auth/me", headers=viewer.auth)
    assert "is_superuser" not in me.json()
    listed = await client.get(ORGS, headers=viewer.auth)
    assert [o["role"] for o in listed.json()] == ["viewer"]
