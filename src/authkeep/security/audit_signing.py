"""Ed25519 keys that sign audit-log checkpoints.

A checkpoint is a signed statement "chain X had head row N with hash H at time T". The key
lives with the application (or with a separate checkpoint job), never in the database: a
database owner who rewrites a whole chain cannot sign a matching checkpoint. Verification
needs only the public key, so a verifier off the host can check checkpoints but never forge
one — the reason for Ed25519 rather than an HMAC.

Keys travel as base64url (no padding) of their 32 raw bytes. A key's id (``kid``) is the
first 16 hex digits of the SHA-256 of its public half; verifiers keep a list of trusted
public keys, so a rotated-out key keeps verifying the checkpoints it signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from authkeep.settings import load_or_create_once

# Domain separation: a checkpoint signature can never be replayed as any other signature
# this key might make, nor the reverse.
_CONTEXT = b"authkeep-audit-checkpoint:v1\n"
_RAW = serialization.Encoding.Raw


class CheckpointKeyError(ValueError):
    """A checkpoint key is not a valid base64url Ed25519 key."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise CheckpointKeyError(f"{what} is not base64url") from None
    if len(raw) != 32:
        raise CheckpointKeyError(f"{what} must be 32 bytes (an Ed25519 key), not {len(raw)}")
    return raw


def canonical(payload: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted-key, ASCII, whitespace-free JSON."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A trusted public key."""

    kid: str
    public: ed25519.Ed25519PublicKey

    @classmethod
    def from_text(cls, text: str) -> VerifyingKey:
        """A public key given as base64url of its 32 raw bytes."""
        raw = _unb64(text, "an audit checkpoint public key")
        return cls(key_id(raw), ed25519.Ed25519PublicKey.from_public_bytes(raw))

    def verify(self, payload: Mapping[str, Any], signature_hex: str) -> bool:
        """Whether ``signature_hex`` signs ``payload`` under this key."""
        try:
            self.public.verify(bytes.fromhex(signature_hex), _CONTEXT + canonical(payload))
        except (InvalidSignature, ValueError):
            return False
        return True


def key_id(public_raw: bytes) -> str:
    """The id of a public key: it names the key without revealing anything secret."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


class CheckpointSigner:
    """Signs checkpoints with one Ed25519 private key."""

    def __init__(self, private: ed25519.Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
        self.public_text = _b64(raw)
        self.verifying_key = VerifyingKey(key_id(raw), private.public_key())

    @property
    def kid(self) -> str:
        """The id of this key (also in every checkpoint it signs)."""
        return self.verifying_key.kid

    @classmethod
    def from_text(cls, text: str) -> CheckpointSigner:
        """A private key given as base64url of its 32 raw bytes."""
        raw = _unb64(text, "AUTHKEEP_AUDIT_CHECKPOINT_KEY")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def generate(cls) -> CheckpointSigner:
        """A new random key."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    def private_text(self) -> str:
        """The private key as base64url: what ``AUTHKEEP_AUDIT_CHECKPOINT_KEY`` holds."""
        raw = self._private.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return _b64(raw)

    def sign(self, payload: Mapping[str, Any]) -> str:
        """The signature of ``payload`` (hex: no character of it can look like a credential
        to the log redaction, which would mangle the copy in the log stream)."""
        return self._private.sign(_CONTEXT + canonical(payload)).hex()


def trusted_keys(signer: CheckpointSigner | None, public: Iterable[str]) -> list[VerifyingKey]:
    """The keys a verifier trusts: the configured signer's own and the listed public keys."""
    keys = [VerifyingKey.from_text(text) for text in public]
    if signer is not None:
        keys.append(signer.verifying_key)
    return keys


def load_or_create_dev_key(path: Path) -> tuple[CheckpointSigner, bool]:
    """The development checkpoint key kept in ``path`` (0600), created once; returns the
    signer and whether it was just created. Development only: production configures
    ``AUTHKEEP_AUDIT_CHECKPOINT_KEY`` from its secret store."""

    def valid(text: str) -> bool:
        try:
            CheckpointSigner.from_text(text)
        except CheckpointKeyError:
            return False
        return True

    text, created = load_or_create_once(
        path, valid, lambda: CheckpointSigner.generate().private_text()
    )
    return CheckpointSigner.from_text(text), created
