"""``install_docs``: an embedding app's docs served offline, from the package's own files."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from authkeep import install_docs


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


async def test_it_replaces_fastapis_cdn_pages_of_a_host_app() -> None:
    app = FastAPI(title="Host")

    @app.get("/things")
    async def things() -> list[str]:
        return []

    assert install_docs(app) == "/docs"
    async with client(app) as http:
        docs = await http.get("/docs")
        assert docs.status_code == 200
        assert "https://" not in docs.text
        csp = docs.headers["content-security-policy"]
        assert "script-src 'self' 'sha256-" in csp
        assert "connect-src 'self'" in csp
        for path in re.findall(r'(?:src|href)="([^"]+)"', docs.text):
            assert path.startswith("/api/docs/static/"), path
            assert (await http.get(path)).status_code == 200, path
        # FastAPI's own pages load from a CDN: gone, not left half-working.
        assert (await http.get("/redoc")).status_code == 404
        assert (await http.get("/docs/oauth2-redirect")).status_code == 404
        # The host app's own schema, with its own routes.
        assert "url: '/openapi.json'" in docs.text
        assert "/things" in (await http.get("/openapi.json")).json()["paths"]


async def test_without_docs_or_schema_urls_it_serves_both_under_api() -> None:
    app = FastAPI(title="Bare", docs_url=None, redoc_url=None, openapi_url=None)
    assert install_docs(app) == "/api/docs"
    async with client(app) as http:
        assert (await http.get("/api/docs")).status_code == 200
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "Bare"


async def test_a_chosen_path_wins() -> None:
    app = FastAPI()
    assert install_docs(app, docs_url="/reference") == "/reference"
    async with client(app) as http:
        assert (await http.get("/reference")).status_code == 200
        assert (await http.get("/docs")).status_code == 404
