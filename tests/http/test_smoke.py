from __future__ import annotations

import httpx

from helpers import bearer, login, register


async def test_register_login_me(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    response = await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"
