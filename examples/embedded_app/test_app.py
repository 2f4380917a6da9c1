"""The embedding example works as its README says: register, log in, call the protected
route; no token, no notes; an organization's routes from its first organization; the docs
offline."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi import FastAPI

from authkeep import Settings, migrate_database
from authkeep.db.engine import Database
from helpers import PASSWORD, bearer, client_for, login, missing_security_headers, register, running


def load_example() -> ModuleType:
    # The example is a folder, not a package: load its main.py the way uvicorn would.
    path = Path(__file__).with_name("main.py")
    spec = importlib.util.spec_from_file_location("embedded_app_main", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}"
    db = Database(url)
    try:
        await migrate_database(db)  # what `authkeep migrate` does
    finally:
        await db.close()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        secret_key="example-secret-0123456789-abcdefghijklmnop",
        database_url=url,
        hash_workers=1,
    )
    application = load_example().build_app(settings)
    async with running(application):
        yield application


async def test_the_protected_route_needs_a_token(app: FastAPI) -> None:
    async with client_for(app) as http:
        anonymous = await http.get("/notes")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        forged = await http.get("/notes", headers=bearer("not.a.token"))
        assert forged.status_code == 401

        await register(http, "reader@example.com")
        pair = await login(http, "reader@example.com", PASSWORD)
        notes = await http.get("/notes", headers=bearer(pair["access_token"]))
        assert notes.status_code == 200
        # "notes" comes from the app's own lifespan: authkeep's install kept it running.
        assert notes.json() == {"owner": "reader@example.com", "notes": []}


async def test_the_app_keeps_its_routes_and_gains_the_hardening(app: FastAPI) -> None:
    async with client_for(app) as http:
        index = await http.get("/")
        assert index.json() == {"app": "notes"}
        assert missing_security_headers(index) == []
        assert (await http.get("/health")).json() == {"status": "ok"}
        docs = await http.get("/docs")
        assert docs.status_code == 200
        assert "script-src" in docs.headers["content-security-policy"]
        openapi = (await http.get("/openapi.json")).json()
        assert "/notes" in openapi["paths"]
        assert "/api/v1/auth/token" in openapi["paths"]


async def test_an_organization_route_works_from_the_first_organization(app: FastAPI) -> None:
    async with client_for(app) as http:
        await register(http, "lead@example.com")
        pair = await login(http, "lead@example.com", PASSWORD)
        # No organization yet: the 403 says what to do.
        refused = await http.get("/team-notes", headers=bearer(pair["access_token"]))
        assert refused.status_code == 403
        assert "switch-org" in refused.json()["detail"]
        # Creating the first one hands back a token scoped to it: no second round trip.
        org = await http.post(
            "/api/v1/orgs", json={"name": "Team"}, headers=bearer(pair["access_token"])
        )
        assert org.status_code == 201, org.text
        scoped = bearer(org.json()["access_token"])
        added = await http.post("/team-notes", json={"text": "hello"}, headers=scoped)
        assert added.status_code == 201, added.text
        assert added.json() == {"org_id": org.json()["id"], "notes": ["hello"]}
        assert (await http.get("/team-notes", headers=scoped)).json()["notes"] == ["hello"]
        assert (
            await http.post("/team-notes", json={"text": ""}, headers=scoped)
        ).status_code == 422


async def test_the_docs_replace_fastapis_and_work_offline(app: FastAPI) -> None:
    async with client_for(app) as http:
        docs = await http.get("/docs")
        assert docs.status_code == 200
        csp = docs.headers["content-security-policy"]
        assert "script-src 'self' 'sha256-" in csp
        assert "https://" not in docs.text
        bundle = await http.get("/api/docs/static/swagger-ui-bundle.js")
        assert bundle.status_code == 200
        assert (await http.get("/redoc")).status_code == 404
