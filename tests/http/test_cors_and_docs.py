"""CORS allow-list, trusted hosts, and the interactive docs (outside production only)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import httpx

from authkeep import Settings, create_app
from helpers import (
    PASSWORD,
    TEST_DATA_KEY,
    bearer,
    client_for,
    missing_security_headers,
    register,
    running,
)

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"


async def test_cors_answers_allowed_origins_only(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(allowed_origins=[ALLOWED]))
    async with running(app), client_for(app) as http:
        allowed = await http.get("/health", headers={"Origin": ALLOWED})
        other = await http.get("/health", headers={"Origin": OTHER})
        preflight = await http.options(
            "/api/v1/auth/login",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        other_preflight = await http.options(
            "/api/v1/auth/login",
            headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"},
        )
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert other_preflight.status_code == 400
    assert "access-control-allow-origin" not in other_preflight.headers
    assert missing_security_headers(other_preflight) == []


async def test_no_origin_is_allowed_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in response.headers


async def test_an_unknown_host_header_is_refused(client: httpx.AsyncClient) -> None:
    for host in ("evil.example.com", "localhost.evil.example.com", "127.0.0.2"):
        response = await client.get("/health", headers={"Host": host})
        assert response.status_code == 400, host
    assert (await client.get("/health", headers={"Host": "127.0.0.1"})).status_code == 200


async def test_docs_and_openapi_are_served_outside_production(client: httpx.AsyncClient) -> None:
    docs = await client.get("/api/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert missing_security_headers(docs) == []

    # Its own CSP: scripts from this origin and the page's inline script by hash, nothing
    # inline beyond that, and calls to this origin only. No CDN: the docs work offline.
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp
    assert "style-src 'self';" in csp
    assert "https:" not in csp
    assert "cdn" not in docs.text
    assert "https://" not in docs.text
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    inline = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
    assert inline
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp

    # Every file the page loads is served here, from the fastapi-offline package.
    loaded = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sorted(loaded) == [
        "/api/docs/static/favicon.png",
        "/api/docs/static/swagger-ui-bundle.js",
        "/api/docs/static/swagger-ui.css",
    ]
    for path in loaded:
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert asset.content
        assert missing_security_headers(asset) == []
    bundle = await client.get("/api/docs/static/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))

    openapi = await client.get("/openapi.json")
    assert openapi.status_code == 200
    assert openapi.headers["content-security-policy"].startswith("default-src 'none'")
    schemes = openapi.json()["components"]["securitySchemes"]
    oauth2 = {name: scheme for name, scheme in schemes.items() if scheme["type"] == "oauth2"}
    assert [s["flows"]["password"]["tokenUrl"] for s in oauth2.values()] == ["/api/v1/auth/token"]
    me = openapi.json()["paths"]["/api/v1/auth/me"]["get"]
    assert [{name: []} for name in oauth2] == [
        requirement for requirement in me["security"] if set(requirement) <= set(oauth2)
    ]


async def test_the_authorize_button_flow_works(client: httpx.AsyncClient) -> None:
    # What Swagger UI's Authorize button sends: a urlencoded password grant with an empty
    # scope, and the (empty) client id and secret in the body or in a Basic header. authkeep
    # has public clients only: those are ignored, the empty scope counts as none.
    await register(client)
    grant = {"grant_type": "password", "username": "alice@example.com", "password": PASSWORD}
    for extra, headers in (
        ({"scope": ""}, {"Authorization": "Basic Og=="}),
        ({"scope": "", "client_id": "", "client_secret": ""}, {}),
    ):
        response = await client.post("/api/v1/auth/token", data={**grant, **extra}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["pragma"] == "no-cache"
        token = response.json()["access_token"]
        me = await client.get("/api/v1/auth/me", headers=bearer(token))
        assert me.status_code == 200


async def test_production_serves_no_docs(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        env="production",
        secret_key=STRONG,
        trusted_hosts=["localhost"],
        email_backend="file",
        email_file_dir=tmp_path,
        public_url="https://app.example.com",
        data_keys=[TEST_DATA_KEY],
    )
    assert settings.is_production
    app = create_app(settings)
    async with running(app), client_for(app) as http:
        for path in (
            "/api/docs",
            "/openapi.json",
            "/docs",
            "/redoc",
            "/api/docs/static/swagger-ui-bundle.js",
        ):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert missing_security_headers(response) == []
        assert (await http.get("/health")).status_code == 200
