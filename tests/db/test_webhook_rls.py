"""Row-level security on the webhook tables, checked beneath the app with raw SQL over the
app's own role (``NOSUPERUSER NOBYPASSRLS``): an organization's endpoints and deliveries
are visible and writable only in a transaction bound to it; platform rows (organization
NULL) are visible to the app, whose service shows them to platform admins only."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from conftest import Backend

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["postgres"], indirect=True),
]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


_ENDPOINT = (
    "INSERT INTO webhook_endpoints (id, organization_id, url, description, event_types, "
    "enabled, secret_sealed, consecutive_failures, created_at, updated_at) VALUES "
    "($1, $2, 'https://hooks.example.com/', '', '[]', true, 'k.x', 0, now(), now())"
)


async def test_an_organizations_endpoints_are_invisible_and_unwritable_outside_it(
    backend: Backend,
) -> None:
    assert backend.owner_url is not None
    owner = await asyncpg.connect(_dsn(backend.owner_url))
    org_a, org_b, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    endpoints = {org_a: uuid.uuid4(), org_b: uuid.uuid4(), None: uuid.uuid4()}
    try:
        await owner.execute(
            "INSERT INTO users (id, email, email_key, hashed_password, is_active, "
            "is_superuser, created_at, updated_at) VALUES ($1, 'a@example.com', "
            "'a@example.com', 'x', true, false, now(), now())",
            user,
        )
        for org in (org_a, org_b):
            await owner.execute(
                "INSERT INTO organizations (id, name, created_by, created_at, updated_at) "
                "VALUES ($1, 'org', $2, now(), now())",
                org,
                user,
            )
        for org, endpoint in endpoints.items():
            await owner.execute(_ENDPOINT, endpoint, org)
    finally:
        await owner.close()

    app = await asyncpg.connect(_dsn(backend.database_url))
    try:
        # No organization bound: the platform's endpoint only.
        visible = {r[0] for r in await app.fetch("SELECT id FROM webhook_endpoints")}
        assert visible == {endpoints[None]}
        async with app.transaction():
            await app.execute("SELECT set_config('app.org_id', $1, true)", str(org_a))
            visible = {r[0] for r in await app.fetch("SELECT id FROM webhook_endpoints")}
            assert visible == {endpoints[org_a], endpoints[None]}
            # B's row, asked for by id, does not exist here; changing it changes nothing.
            assert (
                await app.fetch("SELECT id FROM webhook_endpoints WHERE id = $1", endpoints[org_b])
                == []
            )
            done = await app.execute(
                "UPDATE webhook_endpoints SET url = 'https://evil.example/' WHERE id = $1",
                endpoints[org_b],
            )
            assert done == "UPDATE 0"

        async def write_for_b_bound_to_a() -> None:
            async with app.transaction():
                await app.execute("SELECT set_config('app.org_id', $1, true)", str(org_a))
                await app.execute(_ENDPOINT, uuid.uuid4(), org_b)

        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await write_for_b_bound_to_a()
    finally:
        await app.close()
