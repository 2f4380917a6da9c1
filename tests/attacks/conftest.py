"""Fixtures for the attack suite: a running authkeep and an attacker's starting position."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from attacks.corpus import Target
from authkeep import Settings, create_app
from authkeep.security.keys import generate_key, load_private_key
from helpers import PASSWORD, client_for, login, register, running

KEY_KINDS = ("HS256", "EdDSA", "RS256")
REAL_LOGIN_LIMITS = ("login_rate_limit", "login_ip_failure_limit", "login_account_failure_limits")


@pytest.fixture(scope="session")
def key_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One key directory per asymmetric algorithm (RSA generation is slow: once)."""
    dirs = {}
    for alg in ("EdDSA", "RS256"):
        directory = tmp_path_factory.mktemp(f"keys-{alg}")
        generate_key(directory, alg)  # type: ignore[arg-type]
        dirs[alg] = directory
    return dirs


def attack_settings(**overrides: Any) -> dict[str, Any]:
    """Settings of an attacked deployment: real limits on login, a generous global limit so the
    corpus itself is not throttled, and no refresh grace window (replays count at once).
    Hashing is cheaper than production's: no attack here is about the password hash."""
    return {
        "refresh_reuse_interval_seconds": 0,
        "argon2_memory_kib": 8192,
        "argon2_time_cost": 1,
        "rate_limit_per_minute": 100_000,
        # make_settings makes every limit generous for the rest of the suite; an attacked
        # deployment has the real (default) login limits.
        **{name: Settings.model_fields[name].default for name in REAL_LOGIN_LIMITS},
        **overrides,
    }


def signer(settings: Settings) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """Sign with the deployment's real current key (for claim-validation attacks)."""
    if settings.jwt_keys_dir is None:
        assert settings.secret_key is not None
        from authkeep.security.keys import KeyRing

        ring = KeyRing.from_secret(settings.secret_key.get_secret_value())
    else:
        from authkeep.security.keys import KeyRing

        ring = KeyRing([load_private_key(p) for p in sorted(settings.jwt_keys_dir.glob("*.pem"))])
    key = ring.current

    def sign(claims: dict[str, Any], extra_headers: dict[str, Any]) -> str:
        return jwt.encode(
            claims,
            key.signing_material,
            algorithm=key.algorithm,
            headers={"kid": key.kid, **extra_headers},
        )

    return sign


async def make_target(http: httpx.AsyncClient, settings: Settings) -> Target:
    """Register a user, log in, and read the published keys, as an attacker would."""
    await register(http, "attacker@example.com")
    pair = await login(http, "attacker@example.com")
    keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
    return Target(
        http=http,
        email="attacker@example.com",
        password=PASSWORD,
        access_token=pair["access_token"],
        refresh_token=pair["refresh_token"],
        sign=signer(settings),
        public_keys=keys,
    )


@pytest.fixture(params=KEY_KINDS)
async def target(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    key_dirs: dict[str, Path],
) -> AsyncIterator[Target]:
    """An in-process authkeep (on the current backend) signing with HS256, EdDSA or RS256."""
    kind = request.param
    overrides = attack_settings()
    if kind != "HS256":
        overrides["jwt_keys_dir"] = key_dirs[kind]
    settings = make_settings(**overrides)
    app = create_app(settings)
    async with running(app), client_for(app) as http:
        yield await make_target(http, settings)
