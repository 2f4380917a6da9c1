"""Every attack of the corpus, in-process, on SQLite and on PostgreSQL + Redis, with HS256,
EdDSA and RS256 signing keys: refused with a 4xx, never a 500, nothing echoed."""

from __future__ import annotations

import pytest

from attacks.corpus import ATTACKS, Target, check


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_attack_is_refused(name: str, target: Target) -> None:
    responses = await ATTACKS[name](target)
    check(responses, target.access_token, target.refresh_token, target.password)


async def test_the_corpus_target_is_genuine(target: Target) -> None:
    """The starting position is real: the same client with the untampered token gets in, so
    every refusal above is the server's doing, not a broken fixture."""
    response = await target.http.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {target.access_token}"}
    )
    assert response.status_code == 200
    assert response.json()["email"] == target.email
