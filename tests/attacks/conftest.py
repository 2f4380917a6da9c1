"""Fixtures for the attack suite: a running authkeep and an attacker's starting position."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from attacks.corpus import Target, attack_settings, make_target
from authkeep import Settings, create_app
from authkeep.security.keys import generate_key
from helpers import client_for, running

KEY_KINDS = ("HS256", "EdDSA", "RS256")


@pytest.fixture(scope="session")
def key_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One key directory per asymmetric algorithm (RSA generation is slow: once)."""
    dirs = {}
    for alg in ("EdDSA", "RS256"):
        directory = tmp_path_factory.mktemp(f"keys-{alg}")
        generate_key(directory, alg)  # type: ignore[arg-type]
        dirs[alg] = directory
    return dirs


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
