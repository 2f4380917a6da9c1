"""The invitation service without HTTP: every settling of an invitation is one conditional
update, so concurrent accepts make one membership and an accept racing a revoke cannot
both succeed (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI

from audit_helpers import app_rows, services
from authkeep import Principal
from authkeep.errors import InvitationUnusable, NotFound
from authkeep.security.permissions import Role
from org_helpers import Person, create_org, mark_verified, pending_id, sign_up


async def principal(app: FastAPI, person: Person) -> Principal:
    return await services(app).authenticator.authenticate(person.access)


async def invited(
    app: FastAPI, client: httpx.AsyncClient, name: str = "invitee", admin: Person | None = None
) -> tuple[uuid.UUID, Principal, Principal, uuid.UUID]:
    """An organization, its admin, a verified invitee and the invitee's pending invitation."""
    if admin is None:
        admin = await sign_up(client, "admin@example.com")
        admin.org = await create_org(client, admin)  # type: ignore[attr-defined]
    org: uuid.UUID = admin.org  # type: ignore[attr-defined]
    invitee = await sign_up(client, f"{name}@example.com")
    await mark_verified(client, invitee)
    admin_p = await principal(app, admin)
    await services(app).invitations.invite(admin_p, org, invitee.email, Role.EDITOR)
    invitation_id = await pending_id(client, invitee, org)
    return org, admin_p, await principal(app, invitee), invitation_id


async def test_five_concurrent_accepts_make_one_membership(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org, admin, invitee, invitation_id = await invited(app, client)
    invitations = services(app).invitations
    results = await asyncio.gather(
        *(invitations.accept(invitee, invitation_id=invitation_id) for _ in range(5)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1, results
    assert all(isinstance(r, InvitationUnusable) for r in lost), results
    members = await services(app).orgs.members(admin, org)
    assert [(m.user_id, m.role) for m in members if m.user_id == invitee.user.id] == [
        (invitee.user.id, Role.EDITOR)
    ]
    assert len(await app_rows(app, "invitation.accepted")) == 1


async def test_an_accept_racing_a_revoke_never_both_succeed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    # Several rounds: the race (and, with the two taking their locks in opposite orders, a
    # deadlock on PostgreSQL) does not show on every try.
    admin = await sign_up(client, "admin@example.com")
    admin.org = await create_org(client, admin)  # type: ignore[attr-defined]
    invitations = services(app).invitations
    for round_ in range(8):
        org, admin_p, invitee, invitation_id = await invited(app, client, f"i{round_}", admin)
        accepted, revoked = await asyncio.gather(
            invitations.accept(invitee, invitation_id=invitation_id),
            invitations.revoke(admin_p, org, invitation_id),
            return_exceptions=True,
        )
        outcomes = [isinstance(r, BaseException) for r in (accepted, revoked)]
        assert sorted(outcomes) == [False, True], (accepted, revoked)
        members = {m.user_id for m in await services(app).orgs.members(admin_p, org)}
        if isinstance(revoked, BaseException):
            assert isinstance(revoked, NotFound)  # no longer pending: accepted first
            assert invitee.user.id in members
        else:
            assert isinstance(accepted, InvitationUnusable | NotFound), accepted
            assert invitee.user.id not in members
    settled = len(await app_rows(app, "invitation.accepted")) + len(
        await app_rows(app, "invitation.revoked")
    )
    assert settled == 8
