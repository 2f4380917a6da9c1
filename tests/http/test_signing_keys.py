"""Asymmetric signing keys over HTTP: the ``kid`` of issued tokens, rotation across restarts,
forged ``kid``/``alg`` refused with 401, and ``/.well-known/jwks.json``. Keys are a property of
the token codec, not of the database, so these run on SQLite alone."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jwt
import pytest

from authkeep import Settings
from authkeep.security.keys import KeyRing, generate_key
from conftest import TEST_SECRET
from forgery import forgeries, genuine
from helpers import login, register
from session_helpers import claims_of, me, refresh, started

JWKS = "/.well-known/jwks.json"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
Alg = Literal["EdDSA", "RS256"]


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_template: Path) -> Callable[..., Settings]:
    """Settings on a fresh copy of the migrated SQLite database."""
    path = tmp_path / "authkeep.db"
    shutil.copy(sqlite_template, path)

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "database_url": f"sqlite+aiosqlite:///{path}",
            "hash_workers": 1,
            "rate_limit_enabled": False,
            **overrides,
        }
        return Settings(**values)

    return build


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_hs256_publishes_no_key(sqlite_settings: Callable[..., Settings]) -> None:
    async with started(sqlite_settings(secret_key=TEST_SECRET)) as (_app, http):
        response = await http.get(JWKS)

    assert response.status_code == 200
    assert response.json() == {"keys": []}
    assert TEST_SECRET not in response.text


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
async def test_key_rotation_across_restarts(
    sqlite_settings: Callable[..., Settings], tmp_path: Path, alg: Alg
) -> None:
    keys = tmp_path / "keys"
    old_kid = generate_key(keys, alg).stem
    settings = sqlite_settings(jwt_keys_dir=keys)
    async with started(settings) as (_app, http):
        await register(http)
        old = await login(http)
        published = (await http.get(JWKS)).json()["keys"]
    assert kid_of(old["access_token"]) == kid_of(old["refresh_token"]) == old_kid
    assert [key["kid"] for key in published] == [old_kid]

    new_kid = generate_key(keys, alg).stem
    async with started(settings) as (_app, http):
        # Tokens signed with the old key keep working until they expire...
        assert (await me(http, old["access_token"])).status_code == 200
        rotated = await refresh(http, old["refresh_token"])
        assert rotated.status_code == 200
        # ...and everything issued now carries the newest kid.
        assert kid_of(rotated.json()["access_token"]) == new_kid
        assert kid_of(rotated.json()["refresh_token"]) == new_kid
        new = await login(http)
        assert kid_of(new["access_token"]) == new_kid
        jwks = (await http.get(JWKS)).json()
    assert [key["kid"] for key in jwks["keys"]] == [old_kid, new_kid]
    for key in jwks["keys"]:
        assert key["alg"] == alg
        assert not PRIVATE_JWK_MEMBERS & set(key)

    # Once the old key is retired, what it signed is dead; the rest lives on.
    (keys / f"{old_kid}.pem").unlink()
    async with started(settings) as (_app, http):
        assert (await me(http, old["access_token"])).status_code == 401
        assert (await me(http, new["access_token"])).status_code == 200
        assert [key["kid"] for key in (await http.get(JWKS)).json()["keys"]] == [new_kid]


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
async def test_forged_kid_or_alg_is_401(
    sqlite_settings: Callable[..., Settings], tmp_path: Path, alg: Alg
) -> None:
    keys = tmp_path / "keys"
    generate_key(keys, alg)
    ring = KeyRing.from_directory(keys)
    async with started(sqlite_settings(jwt_keys_dir=keys)) as (_app, http):
        await register(http)
        pair = await login(http)
        claims = claims_of(pair["access_token"])
        refresh_claims = claims_of(pair["refresh_token"])

        assert (await me(http, genuine(ring, claims))).status_code == 200
        for attack, token in forgeries(ring, claims).items():
            response = await me(http, token)
            assert response.status_code == 401, attack
            assert response.headers["www-authenticate"] == "Bearer"
        for attack, token in forgeries(ring, refresh_claims).items():
            response = await refresh(http, token)
            assert response.status_code == 401, attack
        # None of it disturbed the real session.
        assert (await refresh(http, pair["refresh_token"])).status_code == 200


async def test_hs256_token_cannot_pass_for_an_asymmetric_one(
    sqlite_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # A deployment that moved from HS256 to a key pair must not keep honouring tokens made
    # with the old shared secret.
    async with started(sqlite_settings(secret_key=TEST_SECRET)) as (_app, http):
        await register(http)
        old = await login(http)
    keys = tmp_path / "keys"
    generate_key(keys, "EdDSA")
    async with started(sqlite_settings(secret_key=TEST_SECRET, jwt_keys_dir=keys)) as (_a, http):
        assert (await me(http, old["access_token"])).status_code == 401
        assert (await refresh(http, old["refresh_token"])).status_code == 401


async def test_jwks_is_public_and_cacheable(
    sqlite_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    generate_key(keys, "EdDSA")
    async with started(sqlite_settings(jwt_keys_dir=keys)) as (_app, http):
        response = await http.get(JWKS)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "max-age" in response.headers["cache-control"]
    assert len(response.json()["keys"]) == 1
