"""Every role × every action on the example tenant resource (``examples/projects``) and on
the organization's members, on SQLite and on PostgreSQL (row-level security on).

Roles: ``admin``, ``editor``, ``viewer`` of organization A; ``non_member`` (a user in no
organization: no active one, so 403 everywhere, except 404 for organization A's members,
whose existence it cannot learn); ``outsider`` (admin of organization B: everything of A is
404, never 403, and what it creates lands in B).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from audit_helpers import app_rows
from helpers import authkeep_of, client_for, running
from org_helpers import ORGS, World, build_world
from projects_example import (
    ExampleDB,
    example_db,  # noqa: F401  (a fixture)
    example_template,  # noqa: F401  (a fixture)
    load_example,
)

ACTIONS = (
    "read",
    "create",
    "edit_own",
    "edit_others",
    "delete_own",
    "delete_others",
    "manage_members",
)
_ALL_403 = dict.fromkeys(ACTIONS, 403)
MATRIX: dict[str, dict[str, int]] = {
    "admin": {
        "read": 200,
        "create": 201,
        "edit_own": 200,
        "edit_others": 200,
        "delete_own": 204,
        "delete_others": 204,
        "manage_members": 202,
    },
    "editor": {
        "read": 200,
        "create": 201,
        "edit_own": 200,
        "edit_others": 403,
        "delete_own": 204,
        "delete_others": 403,
        "manage_members": 403,
    },
    "viewer": {**_ALL_403, "read": 200},
    "non_member": {**_ALL_403, "manage_members": 404},
    "outsider": {**dict.fromkeys(ACTIONS, 404), "create": 201},
}
CASES = [(who, action, MATRIX[who][action]) for who in MATRIX for action in ACTIONS]


@pytest.fixture
async def example_app(example_db: ExampleDB) -> AsyncIterator[FastAPI]:  # noqa: F811
    application = load_example().build_app(example_db.settings())
    async with running(application):
        yield application


async def seed_project(app: FastAPI, org_id: uuid.UUID, owner: uuid.UUID, name: str) -> uuid.UUID:
    """A project written straight to the database (in ``org_id``, so RLS accepts it)."""
    projects = load_example().projects
    project_id = uuid.uuid4()
    async with authkeep_of(app).services.db.tenant_transaction(org_id) as conn:
        await conn.execute(
            sa.insert(projects).values(
                id=project_id,
                name=name,
                description="",
                owner_id=owner,
                organization_id=org_id,
            )
        )
    return project_id


async def projects_of(app: FastAPI, org_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """Id → name of every project of ``org_id``."""
    projects = load_example().projects
    async with authkeep_of(app).services.db.tenant_reading(org_id) as conn:
        rows = await conn.execute(
            sa.select(projects.c.id, projects.c.name).where(projects.c.organization_id == org_id)
        )
        return {row.id: row.name for row in rows}


async def act(
    http: httpx.AsyncClient, world: World, who: str, action: str, own: uuid.UUID, other: uuid.UUID
) -> httpx.Response:
    auth = world[who].auth
    if action == "read":
        return await http.get(f"/projects/{other}", headers=auth)
    if action == "create":
        return await http.post("/projects", json={"name": "new"}, headers=auth)
    if action in ("edit_own", "edit_others"):
        target = own if action == "edit_own" else other
        return await http.patch(f"/projects/{target}", json={"name": "edited"}, headers=auth)
    if action in ("delete_own", "delete_others"):
        target = own if action == "delete_own" else other
        return await http.delete(f"/projects/{target}", headers=auth)
    assert action == "manage_members"
    # Inviting someone is the member-management action; the non-member is the one not in A
    # (for the non-member itself: trying to invite itself).
    return await http.post(
        f"{ORGS}/{world.org_a}/invitations",
        json={"email": world["non_member"].email, "role": "viewer"},
        headers=auth,
    )


@pytest.mark.parametrize(("who", "action", "expected"), CASES)
async def test_role_matrix(example_app: FastAPI, who: str, action: str, expected: int) -> None:
    async with client_for(example_app) as http:
        world = await build_world(http)
        # Every caller owns a project in A (the non-member and the outsider as if they had
        # been members once); "another's" project is the admin's (the editor's for the admin).
        own = await seed_project(example_app, world.org_a, world[who].user_id, "own")
        other_owner = "editor" if who == "admin" else "admin"
        other = await seed_project(example_app, world.org_a, world[other_owner].user_id, "other")
        before = await projects_of(example_app, world.org_a)
        denials_before = len(await app_rows(example_app, "authz.denied"))

        response = await act(http, world, who, action, own, other)

        assert response.status_code == expected, response.text
        after = await projects_of(example_app, world.org_a)
        denials = len(await app_rows(example_app, "authz.denied")) - denials_before

    # What the status says happened is what happened to the data, and nothing more.
    changed = expected in (200, 201, 202, 204) and action not in ("read", "manage_members")
    if not changed:
        assert after == before
    elif action == "create":
        body: dict[str, Any] = response.json()
        in_a = who != "outsider"
        assert uuid.UUID(body["organization_id"]) == (world.org_a if in_a else world.org_b)
        assert uuid.UUID(body["owner_id"]) == world[who].user_id
        assert len(after) == len(before) + (1 if in_a else 0)
    elif action.startswith("edit"):
        target = own if action == "edit_own" else other
        assert after == {**before, target: "edited"}
    else:
        target = own if action == "delete_own" else other
        assert after == {k: v for k, v in before.items() if k != target}
    # A 403 is evidence: exactly one audit row; a 404 or a success writes none.
    assert denials == (1 if expected == 403 else 0)
