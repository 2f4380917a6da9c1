"""Creating a first organization: the caller can act in it at once, without a second round
trip; a later one leaves the session where it was; the 403 without one says what to do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from authkeep import Authkeep, OrgEditor, Settings
from helpers import bearer, client_for, running
from org_helpers import ORGS, SWITCH, sign_up
from session_helpers import claims_of, refresh


@pytest.fixture
async def host(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """An embedding app with one editor-only route."""
    app = FastAPI()
    Authkeep(make_settings()).install(app)

    @app.post("/things")
    async def make_thing(access: OrgEditor) -> dict[str, str]:
        return {"org_id": str(access.org_id), "role": access.role.value}

    async with running(app), client_for(app) as http:
        yield http


async def test_the_first_organization_comes_with_a_token_scoped_to_it(
    host: httpx.AsyncClient,
) -> None:
    alice = await sign_up(host, "alice@example.com")
    refused = await host.post("/things", headers=alice.auth)
    assert refused.status_code == 403
    # The refusal says what to do, not only what is wrong.
    detail = refused.json()["detail"]
    assert SWITCH in detail
    assert "org_id" in detail

    created = await host.post(ORGS, json={"name": "Acme"}, headers=alice.auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["role"] == "admin"
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    assert claims_of(body["access_token"])["org_id"] == body["id"]
    assert claims_of(body["access_token"])["role"] == "admin"
    assert "no-store" in created.headers["cache-control"]

    thing = await host.post("/things", headers=bearer(body["access_token"]))
    assert thing.status_code == 200
    assert thing.json() == {"org_id": body["id"], "role": "admin"}
    # The session itself entered it: a refresh stays in the new organization.
    pair = (await refresh(host, alice.refresh)).json()
    assert claims_of(pair["access_token"])["org_id"] == body["id"]


async def test_a_second_organization_leaves_the_session_where_it_was(
    host: httpx.AsyncClient,
) -> None:
    bob = await sign_up(host, "bob@example.com")
    first = (await host.post(ORGS, json={"name": "First"}, headers=bob.auth)).json()
    scoped = bearer(first["access_token"])
    second = await host.post(ORGS, json={"name": "Second"}, headers=scoped)
    assert second.status_code == 201, second.text
    body = second.json()
    assert body["name"] == "Second"
    assert body["access_token"] is None
    assert body["token_type"] is None
    pair = (await refresh(host, bob.refresh)).json()
    assert claims_of(pair["access_token"])["org_id"] == first["id"]
