"""A stock OAuth2 client against authkeep: authlib's ``AsyncOAuth2Client`` discovers the
endpoints (RFC 8414), gets a token with the password grant, refreshes it by itself when it
expires (``grant_type=refresh_token``), fails with ``invalid_grant`` on a wrong password,
and revokes (RFC 7009). Runs on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import time
import warnings
from typing import Any

import authlib.deprecate  # noqa: F401  (installs its own "always" filter: first)
import pytest
from fastapi import FastAPI
from httpx import ASGITransport

with warnings.catch_warnings():
    # authlib 1.9 announces, on import, a move to a future "httpx2" package that this lock
    # does not have; its httpx integration is the one it supports today.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from helpers import PASSWORD, PEER, client_for, register

# authlib refuses plain http for token requests (and rightly): the in-process transport
# serves https://localhost instead.
BASE = "https://localhost"
METADATA = "/.well-known/oauth-authorization-server"
ME = "/api/v1/auth/me"


def oauth2_client(app: FastAPI, **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(transport=ASGITransport(app=app, client=PEER), base_url=BASE, **kwargs)


async def discover(app: FastAPI) -> dict[str, Any]:
    async with oauth2_client(app) as http:
        response = await http.request("GET", METADATA, withhold_token=True)
    assert response.status_code == 200
    return dict(response.json())


async def test_authlib_password_grant_auto_refresh_and_revocation(app: FastAPI) -> None:
    async with client_for(app) as setup:
        await register(setup)
    metadata = await discover(app)
    assert metadata["token_endpoint"] == f"{BASE}/api/v1/auth/token"

    async with oauth2_client(app, token_endpoint=metadata["token_endpoint"]) as oauth:
        token = await oauth.fetch_token(
            metadata["token_endpoint"], username="alice@example.com", password=PASSWORD
        )
        assert token["token_type"] == "bearer"
        first = await oauth.get(ME)
        assert first.status_code == 200
        assert first.json()["email"] == "alice@example.com"

        # The access token runs out: the next call refreshes it first, by itself.
        spent_refresh = token["refresh_token"]
        oauth.token["expires_at"] = int(time.time()) - 120
        again = await oauth.get(ME)
        assert again.status_code == 200
        assert oauth.token["refresh_token"] != spent_refresh
        assert oauth.token["access_token"] != token["access_token"]
        assert not oauth.token.is_expired()

        # The spent refresh token is no good any more, and authlib says so.
        with pytest.raises(OAuthError) as replay:
            await oauth.refresh_token(metadata["token_endpoint"], refresh_token="x.y.z")
        assert replay.value.error == "invalid_grant"

        revoked = await oauth.revoke_token(
            metadata["revocation_endpoint"],
            token=oauth.token["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert revoked.status_code == 200
        assert (await oauth.get(ME)).status_code == 401


async def test_authlib_raises_invalid_grant_on_a_wrong_password(app: FastAPI) -> None:
    async with client_for(app) as setup:
        await register(setup)
    metadata = await discover(app)
    async with oauth2_client(app) as oauth:
        with pytest.raises(OAuthError) as refused:
            await oauth.fetch_token(
                metadata["token_endpoint"], username="alice@example.com", password="wrong"
            )
        # Before: a 401 {"detail": …} that authlib handed over as if it were a token.
        assert refused.value.error == "invalid_grant"
        assert refused.value.description == "Incorrect email or password"
        assert oauth.token is None
