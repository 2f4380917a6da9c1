"""``GET /.well-known/oauth-authorization-server`` (RFC 8414)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from authkeep import Settings, create_app
from authkeep.security.keys import generate_key
from helpers import client_for, login, missing_security_headers, register, running
from session_helpers import claims_of

METADATA = "/.well-known/oauth-authorization-server"


async def test_the_metadata_names_every_endpoint_and_the_tokens_issuer(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(METADATA)
    assert response.status_code == 200
    assert missing_security_headers(response) == [
        "cache-control: 'public, max-age=300'"
    ]  # public facts, cacheable like the JWKS
    await register(client)
    issued = claims_of((await login(client))["access_token"])["iss"]
    assert response.json() == {
        "issuer": issued,
        "token_endpoint": "http://localhost/api/v1/auth/token",
        "revocation_endpoint": "http://localhost/api/v1/auth/revoke",
        "introspection_endpoint": "http://localhost/api/v1/auth/introspect",
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
    }


async def test_the_endpoints_follow_the_public_url_and_the_issuer_the_setting(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        public_url="https://auth.example.com/base/", jwt_issuer="https://auth.example.com/base"
    )
    app = create_app(settings)
    async with running(app), client_for(app) as http:
        body = (await http.get(METADATA)).json()
        await register(http)
        issued = claims_of((await login(http))["access_token"])["iss"]
    assert body["issuer"] == issued == "https://auth.example.com/base"
    assert body["token_endpoint"] == "https://auth.example.com/base/api/v1/auth/token"
    assert body["introspection_endpoint"].startswith("https://auth.example.com/base/")


async def test_jwks_uri_is_given_when_tokens_are_signed_with_a_public_key(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    generate_key(keys, "EdDSA")
    app = create_app(make_settings(jwt_keys_dir=keys))
    async with running(app), client_for(app) as http:
        body = (await http.get(METADATA)).json()
        jwks = await http.get(body["jwks_uri"])
    assert body["jwks_uri"] == "http://localhost/.well-known/jwks.json"
    assert len(jwks.json()["keys"]) == 1
