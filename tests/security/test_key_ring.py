"""Signing keys without HTTP: key files, the ring's order, JWKS content, rotation and the
refusal of every token whose ``kid`` or ``alg`` does not match a key of the ring."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path
from typing import Literal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from authkeep.errors import InvalidToken
from authkeep.security.keys import KeyConfigError, KeyRing, generate_key
from authkeep.security.tokens import TokenCodec
from forgery import forgeries, genuine, public_pem

Alg = Literal["EdDSA", "RS256"]
ALGS: list[Alg] = ["EdDSA", "RS256"]
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def codec(ring: KeyRing) -> TokenCodec:
    return TokenCodec(
        ring,
        issuer="authkeep",
        audience="authkeep",
        access_ttl=timedelta(minutes=5),
        refresh_ttl=timedelta(days=1),
    )


def access(c: TokenCodec) -> str:
    return c.issue_access(user_id="u1", email="a@example.com", session_id="s1").token


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@pytest.mark.parametrize("alg", ALGS)
def test_generated_key_is_private_to_its_owner(tmp_path: Path, alg: Alg) -> None:
    directory = tmp_path / "keys"
    path = generate_key(directory, alg)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    ring = KeyRing.from_directory(directory)
    assert ring.current.kid == path.stem
    assert ring.current.algorithm == alg


def test_newest_key_signs_even_when_made_in_the_same_second(tmp_path: Path) -> None:
    paths = [generate_key(tmp_path, "EdDSA") for _ in range(5)]

    ring = KeyRing.from_directory(tmp_path)

    assert ring.current.kid == paths[-1].stem
    assert [key.kid for key in ring.keys] == [path.stem for path in paths]


def test_a_key_that_would_not_sign_is_refused(tmp_path: Path) -> None:
    generate_key(tmp_path, "EdDSA").rename(tmp_path / "zzz-hand-named.pem")

    with pytest.raises(KeyConfigError, match="would not sign"):
        generate_key(tmp_path, "EdDSA")


def test_unusable_key_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="keys generate"):
        KeyRing.from_directory(tmp_path)
    (tmp_path / "public.pem").write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(KeyConfigError, match="private key"):
        KeyRing.from_directory(tmp_path)
    (tmp_path / "public.pem").unlink()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    (tmp_path / "weak.pem").write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyConfigError, match="2048"):
        KeyRing.from_directory(tmp_path)


@pytest.mark.parametrize("alg", ALGS)
def test_jwks_holds_public_parts_only(tmp_path: Path, alg: Alg) -> None:
    first = generate_key(tmp_path, alg)
    second = generate_key(tmp_path, alg)

    keys = KeyRing.from_directory(tmp_path).jwks()["keys"]

    assert [key["kid"] for key in keys] == [first.stem, second.stem]
    for key in keys:
        assert key["alg"] == alg
        assert key["use"] == "sig"
        assert not PRIVATE_JWK_MEMBERS & set(key)
        assert key["kty"] == ("OKP" if alg == "EdDSA" else "RSA")
        assert jwt.PyJWK(key).algorithm_name == alg


def test_hs256_secret_is_never_published() -> None:
    secret = "a-long-enough-secret-0123456789-abcdefghijklmnop"
    ring = KeyRing.from_secret(secret)

    assert ring.jwks() == {"keys": []}
    assert secret not in ring.current.kid


@pytest.mark.parametrize("alg", ALGS)
def test_rotation_old_tokens_verify_new_ones_use_the_new_kid(tmp_path: Path, alg: Alg) -> None:
    old_path = generate_key(tmp_path, alg)
    old_codec = codec(KeyRing.from_directory(tmp_path))
    old_token = access(old_codec)
    new_path = generate_key(tmp_path, alg)

    new_codec = codec(KeyRing.from_directory(tmp_path))
    new_token = access(new_codec)

    assert kid_of(old_token) == old_path.stem
    assert kid_of(new_token) == new_path.stem
    assert new_codec.decode_access(old_token).user_id == "u1"
    assert new_codec.decode_access(new_token).user_id == "u1"
    # The old ring has never heard of the new key.
    with pytest.raises(InvalidToken):
        old_codec.decode_access(new_token)
    # Retiring the old key (once its tokens expired) ends them.
    old_path.unlink()
    with pytest.raises(InvalidToken):
        codec(KeyRing.from_directory(tmp_path)).decode_access(old_token)


@pytest.mark.parametrize("alg", ALGS)
def test_key_and_algorithm_confusion_is_refused(tmp_path: Path, alg: Alg) -> None:
    generate_key(tmp_path, alg)
    ring = KeyRing.from_directory(tmp_path)
    c = codec(ring)
    claims = jwt.decode(access(c), options={"verify_signature": False})

    assert c.decode_access(genuine(ring, claims)).user_id == "u1"
    for attack, token in forgeries(ring, claims).items():
        try:
            c.decode_access(token)
        except InvalidToken:
            continue
        pytest.fail(f"accepted a forgery: {attack}")
