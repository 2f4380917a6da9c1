"""Helpers for the organization and role tests (importable as ``org_helpers``): sign people
up, build an organization with one member per role (through invitations, the only way in),
switch organizations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

import helpers
from helpers import PASSWORD, app_of, bearer, login, register

ORGS = "/api/v1/orgs"
INVITATIONS = "/api/v1/auth/invitations"
SWITCH = "/api/v1/auth/switch-org"
ROLES = ("admin", "editor", "viewer")


@dataclass
class Person:
    """A signed-in user: the current access token changes when they switch organization."""

    email: str
    user_id: uuid.UUID
    access: str
    refresh: str

    @property
    def auth(self) -> dict[str, str]:
        """Their Authorization header."""
        return bearer(self.access)


async def sign_up(http: httpx.AsyncClient, email: str) -> Person:
    """Register and log in."""
    await register(http, email)
    pair = await login(http, email, PASSWORD)
    user_id = uuid.UUID(pair["user"]["id"])
    return Person(email, user_id, pair["access_token"], pair["refresh_token"])


async def mark_verified(http: httpx.AsyncClient, person: Person) -> None:
    """Record ``person``'s address as verified, as opening their verification link does
    (the verification flow has its own tests)."""
    await helpers.mark_verified(app_of(http), person.email)


async def invite(
    http: httpx.AsyncClient, admin: Person, org_id: uuid.UUID, email: str, role: str = "viewer"
) -> httpx.Response:
    """``admin`` invites ``email`` with ``role``."""
    return await http.post(
        f"{ORGS}/{org_id}/invitations", json={"email": email, "role": role}, headers=admin.auth
    )


async def pending_id(http: httpx.AsyncClient, person: Person, org_id: uuid.UUID) -> uuid.UUID:
    """The id of ``person``'s pending invitation into ``org_id``."""
    listed = await http.get(INVITATIONS, headers=person.auth)
    assert listed.status_code == 200, listed.text
    [found] = [i for i in listed.json() if i["org_id"] == str(org_id)]
    return uuid.UUID(found["id"])


async def create_org(http: httpx.AsyncClient, person: Person, name: str = "Acme") -> uuid.UUID:
    """An organization created by ``person`` (its admin), made their active one."""
    response = await http.post(ORGS, json={"name": name}, headers=person.auth)
    assert response.status_code == 201, response.text
    org_id = uuid.UUID(response.json()["id"])
    await switch(http, person, org_id)
    return org_id


async def join(
    http: httpx.AsyncClient,
    inviter: dict[str, str],
    org_id: uuid.UUID,
    person: Person,
    role: str,
) -> None:
    """Make ``person`` a member with ``role`` the only way there is: the admin whose
    Authorization header is ``inviter`` invites them, they (address verified) accept."""
    invited = await http.post(
        f"{ORGS}/{org_id}/invitations", json={"email": person.email, "role": role}, headers=inviter
    )
    assert invited.status_code == 202, invited.text
    await mark_verified(http, person)
    invitation_id = await pending_id(http, person, org_id)
    accepted = await http.post(
        f"{INVITATIONS}/accept", json={"invitation_id": str(invitation_id)}, headers=person.auth
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["role"] == role


async def add_member(
    http: httpx.AsyncClient, admin: Person, org_id: uuid.UUID, person: Person, role: str
) -> None:
    """:func:`join` ``person`` to ``org_id`` (invited by ``admin``) and make it their
    active organization."""
    await join(http, admin.auth, org_id, person, role)
    await switch(http, person, org_id)


async def switch(http: httpx.AsyncClient, person: Person, org_id: uuid.UUID) -> httpx.Response:
    """Switch ``person``'s session to ``org_id``; keeps the new token when it worked."""
    response = await http.post(SWITCH, json={"org_id": str(org_id)}, headers=person.auth)
    if response.status_code == 200:
        person.access = response.json()["access_token"]
    return response


@dataclass
class World:
    """Organization A with one member per role; a user in no organization; an ``outsider``
    who is the admin of organization B."""

    org_a: uuid.UUID
    org_b: uuid.UUID
    people: dict[str, Person]

    def __getitem__(self, who: str) -> Person:
        return self.people[who]


async def build_world(http: httpx.AsyncClient) -> World:
    """Sign up admin, editor, viewer (of A), non_member and outsider (admin of B)."""
    people = {
        who: await sign_up(http, f"{who}@example.com")
        for who in ("admin", "editor", "viewer", "non_member", "outsider")
    }
    org_a = await create_org(http, people["admin"], "Org A")
    for role in ("editor", "viewer"):
        await add_member(http, people["admin"], org_a, people[role], role)
    org_b = await create_org(http, people["outsider"], "Org B")
    return World(org_a, org_b, people)
