"""The organization service without HTTP: the last-admin rule holds under concurrency (two
admins demoting or removing each other at the same moment cannot leave none), and API keys
manage nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import httpx
import pytest
from fastapi import FastAPI

from audit_helpers import app_rows, services
from authkeep import ApiKeyIdentity, NotFound, PermissionDenied, Principal, Role
from org_helpers import Person, add_member, create_org, sign_up


async def principal(app: FastAPI, person: Person) -> Principal:
    return await services(app).authenticator.authenticate(person.access)


async def two_admins(
    app: FastAPI, client: httpx.AsyncClient
) -> tuple[uuid.UUID, Principal, Principal]:
    first, second = (
        await sign_up(client, "one@example.com"),
        await sign_up(client, "two@example.com"),
    )
    org = await create_org(client, first)
    await add_member(client, first, org, second, "admin")
    return org, await principal(app, first), await principal(app, second)


async def admins_of(app: FastAPI, org: uuid.UUID, someone: Principal) -> list[uuid.UUID]:
    members = await services(app).orgs.members(someone, org)
    return [m.user_id for m in members if m.role is Role.ADMIN]


@pytest.mark.parametrize("move", ["demote", "remove"])
async def test_two_admins_acting_on_each_other_at_once_leave_one_admin(
    app: FastAPI, client: httpx.AsyncClient, move: str
) -> None:
    org, one, two = await two_admins(app, client)
    orgs = services(app).orgs

    async def act(actor: Principal, target: Principal) -> None:
        if move == "demote":
            await orgs.change_role(actor, org, target.user.id, Role.VIEWER)
        else:
            await orgs.remove_member(actor, org, target.user.id)

    results = await asyncio.gather(act(one, two), act(two, one), return_exceptions=True)

    # The organization's lock serialises the two, and the second then reads its own,
    # fresh, membership: no longer an admin (demoted: 403), or no longer a member
    # (removed: 404). Never both done, which would leave no admin at all.
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1, results
    assert isinstance(failures[0], PermissionDenied if move == "demote" else NotFound), results
    survivor = one if results[0] is None else two
    assert await admins_of(app, org, survivor) == [survivor.user.id]
    action = "member.role_changed" if move == "demote" else "member.removed"
    assert len(await app_rows(app, action)) == 1


async def test_api_keys_manage_no_organization_or_member(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org, one, two = await two_admins(app, client)
    key = dataclasses.replace(
        one,
        claims=None,
        org_id=org,
        role=Role.ADMIN,
        api_key=ApiKeyIdentity(uuid.uuid4(), "p", "k"),
    )
    orgs = services(app).orgs
    attempts = [
        orgs.create(key, "Other"),
        orgs.rename(key, org, "Renamed"),
        orgs.delete(key, org),
        services(app).invitations.invite(key, org, "x@example.com", Role.ADMIN),
        orgs.change_role(key, org, two.user.id, Role.VIEWER),
        orgs.remove_member(key, org, two.user.id),
        orgs.switch(key, org),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDenied):
            await attempt
    assert await admins_of(app, org, one) == [one.user.id, two.user.id]
