"""Every response, whatever its status or origin in the stack, carries the contract's security
headers and an X-Request-ID."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from authkeep import Authkeep, Settings
from helpers import (
    PASSWORD,
    bearer,
    client_for,
    login,
    missing_security_headers,
    register,
    running,
)

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def failing_app(settings: Settings) -> FastAPI:
    """A host app with authkeep installed, one route that crashes and one that sets its own
    headers."""
    app = FastAPI()
    Authkeep(settings).install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom: the database password is hunter2")

    @app.get("/framed")
    async def framed() -> JSONResponse:
        return JSONResponse({}, headers={"X-Frame-Options": "SAMEORIGIN"})

    return app


async def test_every_status_carries_every_header(
    client: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    responses: dict[int, httpx.Response] = {}
    responses[200] = await client.get("/health")
    responses[202] = await client.post(
        "/api/v1/auth/register", json={"email": "alice@example.com", "password": PASSWORD}
    )
    pair = await login(client)
    responses[201] = await client.post(
        "/api/v1/orgs", json={"name": "Acme"}, headers=bearer(pair["access_token"])
    )
    responses[204] = await client.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))
    responses[401] = await client.get("/api/v1/auth/me")
    responses[404] = await client.get("/no/such/route")
    responses[405] = await client.get("/api/v1/auth/login")
    responses[413] = await client.post(
        "/api/v1/auth/register",
        content=b"x" * (1_048_576 + 1),
        headers={"content-type": "application/json"},
    )
    responses[422] = await client.post("/api/v1/auth/register", json={})
    responses[400] = await client.get("/health", headers={"Host": "evil.example.com"})

    app = failing_app(make_settings())
    async with running(app), client_for(app) as http:
        responses[500] = await http.get("/boom")

    assert {status: r.status_code for status, r in responses.items()} == {
        status: status for status in responses
    }
    problems = {status: missing_security_headers(r) for status, r in responses.items()}
    assert problems == {status: [] for status in responses}
    for response in responses.values():
        assert response.headers["content-security-policy"] == API_CSP


async def test_a_route_may_set_its_own_header(make_settings: Callable[..., Settings]) -> None:
    app = failing_app(make_settings())
    async with running(app), client_for(app) as http:
        response = await http.get("/framed")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"  # kept, not overwritten
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert missing_security_headers(response) == ["x-frame-options: 'SAMEORIGIN'"]


async def test_responses_with_tokens_or_user_data_are_not_cached(client: httpx.AsyncClient) -> None:
    user = await client.post(
        "/api/v1/auth/register", json={"email": "alice@example.com", "password": PASSWORD}
    )
    pair = await client.post(
        "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    me = await client.get("/api/v1/auth/me", headers=bearer(pair.json()["access_token"]))
    for response in (user, pair, me):
        assert response.headers["cache-control"] == "no-store"


async def test_user_bodies_never_carry_a_hash(client: httpx.AsyncClient) -> None:
    user = await register(client)
    pair = await login(client)
    me = await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    fields = {
        "id",
        "email",
        "full_name",
        "is_active",
        "created_at",
        "email_verified",
        "mfa_enabled",
    }
    for body in (user, pair["user"]):
        assert set(body) == fields
    # GET /me alone also says which required consents are outstanding (docs/privacy.md).
    assert set(me.json()) == fields | {"consents_outstanding"}
    assert "$argon2" not in me.text
