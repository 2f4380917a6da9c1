"""PostgreSQL row-level security, checked beneath the app: raw SQL over the app's own
database role (``NOSUPERUSER NOBYPASSRLS``, as in production: a superuser would bypass
every policy and prove nothing) on authkeep's tenant table ``api_keys`` and the example's
``projects``.

* ``SET LOCAL app.org_id`` to organization A: no row of organization B is visible, even
  asked for by id, nor can one be changed or deleted;
* no organization set (never, or after an earlier transaction set one): no row at all;
* writing a row for B while bound to A fails the policy's ``WITH CHECK``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import sqlalchemy as sa

from authkeep.db.engine import Database
from projects_example import (
    ExampleDB,
    example_db,  # noqa: F401  (a fixture)
    example_template,  # noqa: F401  (a fixture)
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("example_template", ["postgres"], indirect=True),
]

TENANT_TABLES = ("api_keys", "projects")
RLS_ERROR = asyncpg.InsufficientPrivilegeError  # "new row violates row-level security policy"


@dataclass(frozen=True)
class Seeded:
    org_a: uuid.UUID
    org_b: uuid.UUID
    user: uuid.UUID
    rows: dict[str, dict[uuid.UUID, uuid.UUID]]
    """Table → row id → organization id, as the owner wrote them."""

    def ids(self, table: str, org: uuid.UUID) -> set[uuid.UUID]:
        return {row for row, owner in self.rows[table].items() if owner == org}


async def _seed(db: ExampleDB) -> Seeded:
    # As the owner (a superuser here): it bypasses the policies, so it can write both orgs.
    conn = await asyncpg.connect(db.raw_url(owner=True))
    user, org_a, org_b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rows: dict[str, dict[uuid.UUID, uuid.UUID]] = {"api_keys": {}, "projects": {}}
    try:
        await conn.execute(
            "INSERT INTO users (id, email, email_key, hashed_password, is_active, is_superuser,"
            " created_at, updated_at) VALUES ($1, 'a@example.com', 'a@example.com', 'x',"
            " true, false, now(), now())",
            user,
        )
        for org in (org_a, org_b):
            await conn.execute(
                "INSERT INTO organizations (id, name, created_by, created_at, updated_at)"
                " VALUES ($1, 'org', $2, now(), now())",
                org,
                user,
            )
            for _ in range(2):
                project = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO projects (id, name, description, owner_id, organization_id)"
                    " VALUES ($1, 'p', '', $2, $3)",
                    project,
                    user,
                    org,
                )
                rows["projects"][project] = org
            key = uuid.uuid4()
            await conn.execute(
                "INSERT INTO api_keys (id, prefix, key_hash, name, role, created_by, created_at,"
                " organization_id) VALUES ($1, $2, $3, 'k', 'viewer', $4, now(), $5)",
                key,
                key.hex[:12],
                key.hex * 2,
                user,
                org,
            )
            rows["api_keys"][key] = org
    finally:
        await conn.close()
    return Seeded(org_a, org_b, user, rows)


@pytest.fixture
async def seeded(example_db: ExampleDB) -> Seeded:  # noqa: F811
    return await _seed(example_db)


@pytest.fixture
async def as_app(example_db: ExampleDB) -> AsyncIterator[asyncpg.Connection]:  # noqa: F811
    """A raw connection as the app's database role."""
    conn = await asyncpg.connect(example_db.raw_url())
    try:
        yield conn
    finally:
        await conn.close()


async def in_org(conn: asyncpg.Connection, org: uuid.UUID, sql: str, *args: object) -> str:
    """Run one statement in a transaction bound to ``org``, as the app does."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL app.org_id = '{org}'")
        return str(await conn.execute(sql, *args))


async def _ids(
    conn: asyncpg.Connection, table: str, where: str = "", *args: object
) -> set[uuid.UUID]:
    records = await conn.fetch(f"SELECT id FROM {table} {where}", *args)
    return {record["id"] for record in records}


async def test_the_app_role_is_subject_to_row_level_security(
    as_app: asyncpg.Connection, seeded: Seeded
) -> None:
    # Without these, the other tests could pass for the wrong reason (or fail to mean much).
    role = await as_app.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert role is not None
    assert (role["rolsuper"], role["rolbypassrls"]) == (False, False)
    for table in TENANT_TABLES:
        flags = await as_app.fetchrow(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
            table,
        )
        assert flags is not None
        assert (flags["relrowsecurity"], flags["relforcerowsecurity"]) == (True, True), table


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_bound_to_a_no_row_of_b_is_visible(
    as_app: asyncpg.Connection, seeded: Seeded, table: str
) -> None:
    async with as_app.transaction():
        await as_app.execute(f"SET LOCAL app.org_id = '{seeded.org_a}'")
        assert await _ids(as_app, table) == seeded.ids(table, seeded.org_a)
        # Asked for by organization or by id, B's rows are still not there.
        assert await _ids(as_app, table, "WHERE organization_id = $1", seeded.org_b) == set()
        b_row = next(iter(seeded.ids(table, seeded.org_b)))
        assert await _ids(as_app, table, "WHERE id = $1", b_row) == set()
    # And the other way round: the policy, not the seed order, decides.
    async with as_app.transaction():
        await as_app.execute(f"SET LOCAL app.org_id = '{seeded.org_b}'")
        assert await _ids(as_app, table) == seeded.ids(table, seeded.org_b)


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_with_no_organization_set_no_row_is_visible(
    as_app: asyncpg.Connection, seeded: Seeded, table: str
) -> None:
    assert len(seeded.rows[table]) == (4 if table == "projects" else 2)
    assert await _ids(as_app, table) == set()  # never set on this connection
    async with as_app.transaction():
        await as_app.execute(f"SET LOCAL app.org_id = '{seeded.org_a}'")
        assert await _ids(as_app, table) != set()
    # After a SET LOCAL the setting reads '' (not NULL) for the rest of the connection's
    # life: still no row, and no error either.
    assert await as_app.fetchval("SELECT current_setting('app.org_id', true)") == ""
    assert await _ids(as_app, table) == set()


async def test_writing_a_row_for_b_while_bound_to_a_fails(
    as_app: asyncpg.Connection,
    seeded: Seeded,
    example_db: ExampleDB,  # noqa: F811
) -> None:
    a_project = next(iter(seeded.ids("projects", seeded.org_a)))
    b_project = next(iter(seeded.ids("projects", seeded.org_b)))
    insert = (
        "INSERT INTO projects (id, name, description, owner_id, organization_id)"
        " VALUES ($1, 'sneaky', '', $2, $3)"
    )
    with pytest.raises(RLS_ERROR, match="row-level security"):
        await in_org(as_app, seeded.org_a, insert, uuid.uuid4(), seeded.user, seeded.org_b)
    # Nor can a row of A be moved into B.
    with pytest.raises(RLS_ERROR, match="row-level security"):
        await in_org(
            as_app,
            seeded.org_a,
            "UPDATE projects SET organization_id = $1 WHERE id = $2",
            seeded.org_b,
            a_project,
        )
    # With no organization set, nothing can be written at all.
    with pytest.raises(RLS_ERROR, match="row-level security"):
        await as_app.execute(insert, uuid.uuid4(), seeded.user, seeded.org_a)
    # B's rows cannot be changed or deleted from A: they are not there to match.
    async with as_app.transaction():
        await as_app.execute(f"SET LOCAL app.org_id = '{seeded.org_a}'")
        assert await as_app.execute("UPDATE projects SET name = 'x' WHERE id = $1", b_project) == (
            "UPDATE 0"
        )
        assert await as_app.execute("DELETE FROM projects WHERE id = $1", b_project) == "DELETE 0"
        assert await as_app.execute(
            "DELETE FROM api_keys WHERE organization_id = $1", seeded.org_b
        ) == ("DELETE 0")
        # A row of A itself is writable: the refusals above are the policy, not a grant.
        assert await as_app.execute("UPDATE projects SET name = 'ok' WHERE id = $1", a_project) == (
            "UPDATE 1"
        )

    owner = await asyncpg.connect(example_db.raw_url(owner=True))
    try:
        names = {r["id"]: r["name"] for r in await owner.fetch("SELECT id, name FROM projects")}
        keys = await owner.fetchval("SELECT count(*) FROM api_keys")
    finally:
        await owner.close()
    assert set(names) == set(seeded.rows["projects"])  # nothing added, nothing deleted
    assert names[b_project] == "p"
    assert names[a_project] == "ok"
    assert keys == 2


async def test_the_apps_tenant_transactions_bind_and_unbind_the_organization(
    example_db: ExampleDB,  # noqa: F811
    seeded: Seeded,
) -> None:
    # One pooled connection, so the unbound read below reuses the bound one's connection:
    # an organization must not leak from one request to the next through the pool.
    db = Database(example_db.database_url, pool_size=1)
    projects = sa.table("projects", sa.column("id"))
    try:
        async with db.tenant_transaction(seeded.org_a) as conn:
            # No WHERE on the organization: the policy alone filters.
            found = set((await conn.execute(sa.select(projects.c.id))).scalars())
        assert found == seeded.ids("projects", seeded.org_a)
        async with db.tenant_reading(seeded.org_b) as conn:
            found = set((await conn.execute(sa.select(projects.c.id))).scalars())
        assert found == seeded.ids("projects", seeded.org_b)
        async with db.reading() as conn:
            assert list((await conn.execute(sa.select(projects.c.id))).scalars()) == []
    finally:
        await db.close()
