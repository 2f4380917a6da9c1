"""The projects example works as its README says, on SQLite and on PostgreSQL (with
row-level security): owner-only edits, viewers read only, another organization's projects
are 404, and no body chooses the owner or the organization. The full role × action matrix
is in tests/http/test_role_matrix.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from helpers import authkeep_of, client_for, running
from org_helpers import World, build_world, sign_up
from projects_example import (
    ExampleDB,
    example_db,  # noqa: F401  (a fixture)
    example_template,  # noqa: F401  (a fixture)
    load_example,
)


@pytest.fixture
async def app(example_db: ExampleDB) -> AsyncIterator[FastAPI]:  # noqa: F811
    application = load_example().build_app(example_db.settings())
    async with running(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def world(http: httpx.AsyncClient) -> World:
    return await build_world(http)


async def create(http: httpx.AsyncClient, world: World, who: str, name: str) -> str:
    response = await http.post("/projects", json={"name": name}, headers=world[who].auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_owners_edit_their_own_admins_any_viewers_read(
    http: httpx.AsyncClient, world: World
) -> None:
    mine = await create(http, world, "editor", "editor's")
    admins = await create(http, world, "admin", "admin's")

    listed = await http.get("/projects", headers=world["viewer"].auth)
    assert [p["name"] for p in listed.json()] == ["admin's", "editor's"]
    assert (
        await http.post("/projects", json={"name": "v"}, headers=world["viewer"].auth)
    ).status_code == 403
    assert (
        await http.patch(f"/projects/{mine}", json={"name": "v"}, headers=world["viewer"].auth)
    ).status_code == 403

    edited = await http.patch(
        f"/projects/{mine}", json={"description": "mine"}, headers=world["editor"].auth
    )
    assert edited.status_code == 200
    assert edited.json()["description"] == "mine"
    assert (
        await http.patch(f"/projects/{admins}", json={"name": "x"}, headers=world["editor"].auth)
    ).status_code == 403
    assert (
        await http.delete(f"/projects/{admins}", headers=world["editor"].auth)
    ).status_code == 403

    assert (
        await http.patch(f"/projects/{mine}", json={"name": "renamed"}, headers=world["admin"].auth)
    ).status_code == 200
    assert (await http.delete(f"/projects/{mine}", headers=world["admin"].auth)).status_code == 204
    remaining = await http.get("/projects", headers=world["editor"].auth)
    assert [p["id"] for p in remaining.json()] == [admins]


async def test_another_organizations_project_is_not_found(
    http: httpx.AsyncClient, world: World
) -> None:
    in_a = await create(http, world, "admin", "secret plans")
    in_b = await create(http, world, "outsider", "b's")
    outsider = world["outsider"].auth
    for method in ("GET", "PATCH", "DELETE"):
        body = {"name": "x"} if method == "PATCH" else None
        response = await http.request(method, f"/projects/{in_a}", json=body, headers=outsider)
        assert response.status_code == 404, method
        assert response.json() == {"detail": "Project not found"}
    assert [p["id"] for p in (await http.get("/projects", headers=outsider)).json()] == [in_b]
    assert [p["id"] for p in (await http.get("/projects", headers=world["admin"].auth)).json()] == [
        in_a
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {"owner_id": "00000000-0000-0000-0000-000000000001"},
        {"organization_id": "00000000-0000-0000-0000-000000000001"},
        {"id": "00000000-0000-0000-0000-000000000001"},
    ],
)
async def test_no_body_sets_the_owner_or_the_organization(
    http: httpx.AsyncClient, world: World, extra: dict[str, str]
) -> None:
    editor = world["editor"].auth
    created = await http.post("/projects", json={"name": "p", **extra}, headers=editor)
    assert created.status_code == 422
    project = await create(http, world, "editor", "p")
    edited = await http.patch(f"/projects/{project}", json={"name": "q", **extra}, headers=editor)
    assert edited.status_code == 422
    [stored] = (await http.get("/projects", headers=editor)).json()
    assert stored["name"] == "p"
    assert stored["owner_id"] == str(world["editor"].user_id)
    assert stored["organization_id"] == str(world.org_a)


async def test_a_token_and_an_active_organization_are_needed(http: httpx.AsyncClient) -> None:
    assert (await http.get("/projects")).status_code == 401
    loner = await sign_up(http, "loner@example.com")
    refused = await http.get("/projects", headers=loner.auth)
    assert refused.status_code == 403
    assert "switch-org" in refused.json()["detail"]


async def test_the_migration_made_projects_a_tenant_table(
    app: FastAPI,
    example_db: ExampleDB,  # noqa: F811
) -> None:
    db = authkeep_of(app).services.db
    async with db.reading() as conn:

        def inspect(sync: sa.Connection) -> tuple[bool, list[str], list[str]]:
            inspector = sa.inspect(sync)
            column = next(
                c for c in inspector.get_columns("projects") if c["name"] == "organization_id"
            )
            references = [fk["referred_table"] for fk in inspector.get_foreign_keys("projects")]
            indexes = [i["name"] or "" for i in inspector.get_indexes("projects")]
            return bool(column["nullable"]), references, indexes

        nullable, references, indexes = await conn.run_sync(inspect)
        assert nullable is False
        assert "organizations" in references
        assert "ix_projects_organization_id" in indexes
        if example_db.is_postgres:
            policies = (
                await conn.execute(
                    sa.text("SELECT policyname FROM pg_policies WHERE tablename = 'projects'")
                )
            ).scalars()
            assert list(policies) == ["authkeep_tenant_isolation"]


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def test_an_attachment_is_checked_by_its_bytes(http: httpx.AsyncClient, world: World) -> None:
    project = await create(http, world, "editor", "With files")
    url = f"/projects/{project}/attachment"
    headers = {
        **world["editor"].auth,
        "Content-Type": "image/png",
        "Content-Disposition": 'attachment; filename="pixel.png"',
    }
    accepted = await http.put(url, content=PNG, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["content_type"] == "image/png"
    assert accepted.json()["size"] == len(PNG)
    renamed = await http.put(url, content=b"\x7fELF\x02\x01\x01" + b"\x00" * 64, headers=headers)
    assert renamed.status_code == 415
    polyglot = await http.put(url, content=PNG + b"PK\x03\x04zip", headers=headers)
    assert polyglot.status_code == 415
    viewer = {**headers, **world["viewer"].auth}
    assert (await http.put(url, content=PNG, headers=viewer)).status_code == 403
