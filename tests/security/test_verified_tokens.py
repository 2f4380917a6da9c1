"""The codec remembers access tokens it has verified (``_VerifiedTokens``). What it must never
do: accept a string it did not verify, or keep accepting one after its ``exp``."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from jwt.algorithms import HMACAlgorithm

import authkeep.security.tokens as tokens_module
from authkeep.errors import InvalidToken
from authkeep.security.keys import KeyRing, generate_key
from authkeep.security.tokens import TokenCodec
from forgery import forgeries, public_pem

SECRET = "verified-tokens-secret-0123456789-abcdefghijklmnop"


def codec(ring: KeyRing, *, ttl: timedelta = timedelta(minutes=5), leeway: int = 10) -> TokenCodec:
    return TokenCodec(
        ring,
        issuer="authkeep",
        audience="authkeep",
        access_ttl=ttl,
        refresh_ttl=timedelta(days=1),
        leeway_seconds=leeway,
    )


def access(c: TokenCodec, user: str = "u1") -> str:
    return c.issue_access(user_id=user, email="a@example.com", session_id="s1").token


def test_a_verified_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    c = codec(KeyRing.from_secret(SECRET))
    token = access(c)
    first = c.decode_access(token)

    def no_second_verification(*_args: object) -> None:
        raise AssertionError("verified again")

    monkeypatch.setattr(c, "decode", no_second_verification)
    assert c.decode_access(token) == first


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_any_changed_byte_of_a_remembered_token_is_verified_afresh(segment: int) -> None:
    c = codec(KeyRing.from_secret(SECRET))
    token = access(c)
    c.decode_access(token)
    parts = token.split(".")
    # Swap one character of the segment for another of the alphabet: still well-formed.
    old = parts[segment][5]
    parts[segment] = parts[segment][:5] + ("A" if old != "A" else "B") + parts[segment][6:]

    with pytest.raises(InvalidToken):
        c.decode_access(".".join(parts))
    assert c.decode_access(token).user_id == "u1"


def test_forgeries_with_the_claims_of_a_remembered_token_are_refused(tmp_path: Path) -> None:
    ring = KeyRing.from_directory(generate_key(tmp_path, "EdDSA").parent)
    c = codec(ring)
    token = access(c)
    claims = jwt.decode(token, options={"verify_signature": False})
    c.decode_access(token)

    payload = token.split(".")[1]
    for attack, forged in forgeries(ring, claims).items():
        header, _, signature = forged.split(".")
        # The genuine payload, byte for byte, under the attacker's header and signature.
        with pytest.raises(InvalidToken):
            c.decode_access(f"{header}.{payload}.{signature}")
        with pytest.raises(InvalidToken):
            c.decode_access(forged)
        assert forged != token, attack


def test_a_remembered_token_stops_working_at_its_expiry() -> None:
    c = codec(KeyRing.from_secret(SECRET), ttl=timedelta(seconds=1), leeway=0)
    token = access(c)
    expires_at = c.decode_access(token).expires_at  # remembered from here on
    while time.time() < expires_at - 0.2:
        c.decode_access(token)  # still accepted, from memory
        time.sleep(0.05)
    while time.time() < expires_at + 0.05:
        time.sleep(0.05)

    with pytest.raises(InvalidToken):
        c.decode_access(token)


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "VERIFIED_TOKENS_KEPT", 3)
    c = codec(KeyRing.from_secret(SECRET))
    issued = [access(c, user=f"u{i}") for i in range(10)]
    for token in issued:
        c.decode_access(token)

    assert len(c._verified._claims) <= 3
    # Forgotten tokens are verified again, and still accepted.
    assert [c.decode_access(token).user_id for token in issued] == [f"u{i}" for i in range(10)]


def test_each_hs256_secret_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[object] = []
    original = HMACAlgorithm.prepare_key

    def counting(self: HMACAlgorithm, key: str | bytes) -> bytes:
        checks.append(key)
        return original(self, key)

    monkeypatch.setattr(HMACAlgorithm, "prepare_key", counting)
    c = codec(KeyRing.from_secret(SECRET))
    for user in ("a", "b", "c"):
        c.decode_refresh(
            c.new_refresh(user_id=user, session_id="s1").token
        )  # refresh tokens: never remembered, always verified

    assert len(checks) == 1


def test_an_asymmetric_key_is_still_refused_as_an_hs256_secret(tmp_path: Path) -> None:
    ring = KeyRing.from_directory(generate_key(tmp_path, "RS256").parent)
    pem = public_pem(ring.current.signing_material).decode()
    c = codec(KeyRing.from_secret(pem))

    with pytest.raises(jwt.InvalidKeyError):
        access(c)
