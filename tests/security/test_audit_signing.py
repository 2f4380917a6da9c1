"""Checkpoint keys: Ed25519 signatures a verifier checks with the public key alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from authkeep.security.audit_signing import (
    CheckpointKeyError,
    CheckpointSigner,
    VerifyingKey,
    load_or_create_dev_key,
    trusted_keys,
)

PAYLOAD = {"chain": "platform", "head_id": 7, "head_hash": "ab" * 32}


def test_the_public_key_verifies_and_nothing_else_does() -> None:
    signer = CheckpointSigner.generate()
    signature = signer.sign(PAYLOAD)
    public = VerifyingKey.from_text(signer.public_text)
    assert public.kid == signer.kid
    assert public.verify(PAYLOAD, signature)
    assert not public.verify({**PAYLOAD, "head_id": 8}, signature)
    assert not public.verify(PAYLOAD, signature[:-2] + ("00" if signature[-2:] != "00" else "11"))
    assert not public.verify(PAYLOAD, "not hex")
    assert not VerifyingKey.from_text(CheckpointSigner.generate().public_text).verify(
        PAYLOAD, signature
    )


def test_signatures_are_hex_so_log_redaction_leaves_them_whole() -> None:
    signature = CheckpointSigner.generate().sign(PAYLOAD)
    assert len(signature) == 128
    int(signature, 16)


def test_a_private_key_round_trips_through_its_text() -> None:
    signer = CheckpointSigner.generate()
    again = CheckpointSigner.from_text(signer.private_text())
    assert again.public_text == signer.public_text
    assert VerifyingKey.from_text(signer.public_text).verify(PAYLOAD, again.sign(PAYLOAD))


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA", "A" * 60])
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(CheckpointKeyError):
        CheckpointSigner.from_text(text)
    with pytest.raises(CheckpointKeyError):
        VerifyingKey.from_text(text)


def test_trusted_keys_are_the_listed_ones_and_the_signers_own() -> None:
    signer, old = CheckpointSigner.generate(), CheckpointSigner.generate()
    kids = [key.kid for key in trusted_keys(signer, [old.public_text])]
    assert kids == [old.kid, signer.kid]
    assert trusted_keys(None, []) == []


def test_the_development_key_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "dir" / ".authkeep-audit-key"
    first, created = load_or_create_dev_key(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_dev_key(path)
    assert not created_again
    assert again.public_text == first.public_text
