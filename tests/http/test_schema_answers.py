"""The answers every route can give match what the OpenAPI schema says."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/orgs", "GET, POST"),
        ("/api/v1/orgs/00000000-0000-0000-0000-000000000000", "DELETE, GET, PATCH"),
        ("/api/v1/auth/login", "POST"),
    ],
)
async def test_405_lists_every_method_of_the_resource(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    response = await client.put(path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def test_schema_documents_malformed_and_oversized_bodies(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    login = paths["/api/v1/auth/login"]["post"]["responses"]
    assert {"400", "413", "429", "503"} <= set(login)
    me = paths["/api/v1/auth/me"]["get"]["responses"]
    assert {"429", "503"} <= set(me)
    assert "400" not in me  # no body, nothing to parse


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 422), (b"\x19=\x1e0\xff\xfe", 400)],
)
async def test_unparsable_bodies_get_a_documented_4xx(
    client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["detail"]
