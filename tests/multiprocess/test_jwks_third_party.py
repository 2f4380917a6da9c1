"""A third-party verifier trusts authkeep's tokens through the JWKS URL alone.

PyJWT's ``PyJWKClient`` fetches ``/.well-known/jwks.json`` from a real ``authkeep serve`` over
HTTP, picks the key by the token's ``kid`` and verifies signature, issuer and audience —
what a resource server written by someone else would do. After a rotation, tokens signed by
the old key and by the new one both verify, until the old key is retired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import httpx
import jwt
import pytest

from authkeep.security.keys import generate_key
from conftest import TEST_SECRET
from helpers import PASSWORD
from servers import serving

pytestmark = pytest.mark.slow
Alg = Literal["EdDSA", "RS256"]


def _env(workdir: Path, keys: Path) -> dict[str, str]:
    return {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'authkeep.db'}",
        "AUTHKEEP_JWT_KEYS_DIR": str(keys),
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_ARGON2_MEMORY_KIB": "8192",
        "AUTHKEEP_ARGON2_TIME_COST": "1",
    }


def _access_token(base: str, *, register: bool) -> str:
    body = {"email": "verifier@example.com", "password": PASSWORD}
    if register:
        assert httpx.post(base + "/api/v1/auth/register", json=body).status_code == 202
    response = httpx.post(base + "/api/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _verify(base: str, token: str, alg: Alg) -> dict[str, object]:
    # A fresh client each time: no cache may hide what the endpoint publishes now.
    client = jwt.PyJWKClient(base + "/.well-known/jwks.json", cache_keys=False)
    key = client.get_signing_key_from_jwt(token)
    return dict(
        jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience="authkeep",
            issuer="authkeep",
            options={"require": ["exp", "iat", "sub"]},
        )
    )


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_pyjwkclient_verifies_tokens_across_a_rotation(tmp_path: Path, alg: Alg) -> None:
    keys = tmp_path / "keys"
    old_kid = generate_key(keys, alg).stem
    with serving(_env(tmp_path, keys), tmp_path, "before") as server:
        old_token = _access_token(server.url, register=True)
        assert _verify(server.url, old_token, alg)["token_type"] == "access"

    new_kid = generate_key(keys, alg).stem
    with serving(_env(tmp_path, keys), tmp_path, "after") as server:
        new_token = _access_token(server.url, register=False)
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        # Both generations verify through the published set while the old key is kept.
        assert (
            _verify(server.url, old_token, alg)["sub"] == _verify(server.url, new_token, alg)["sub"]
        )

    (keys / f"{old_kid}.pem").unlink()
    with serving(_env(tmp_path, keys), tmp_path, "retired") as server:
        assert _verify(server.url, new_token, alg)["token_type"] == "access"
        # The retired key is no longer published: a verifier can no longer find it.
        with pytest.raises(jwt.PyJWKClientError):
            _verify(server.url, old_token, alg)
