"""Signing keys: one HS256 secret, or a directory of Ed25519/RSA key pairs with ``kid``s.

A key ring signs with its newest key and verifies with all of them, so rotating means adding
a key (``authkeep keys generate``) and deleting the old one once every token it signed has
expired. Each key is bound to exactly one algorithm; the verifier is told that algorithm and no
other, which is what stops algorithm-confusion attacks (an HS256 token "signed" with a public
key, ``alg: none`` and the like).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

Algorithm = Literal["HS256", "EdDSA", "RS256"]
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class KeyConfigError(ValueError):
    """A key file or key configuration is unusable."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key: its id, its single algorithm, and the material to sign and verify with."""

    kid: str
    algorithm: Algorithm
    signing_material: Any
    verifying_material: Any

    def public_jwk(self) -> dict[str, Any] | None:
        """The public half as a JWK, or None for a symmetric key (never published)."""
        if self.algorithm == "HS256":
            return None
        if self.algorithm == "EdDSA":
            jwk = json.loads(OKPAlgorithm.to_jwk(self.verifying_material))
        else:
            jwk = json.loads(RSAAlgorithm.to_jwk(self.verifying_material))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return dict(jwk)


class KeyRing:
    """The keys tokens are signed and verified with."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        ordered = list(keys)
        if not ordered:
            raise KeyConfigError("a key ring needs at least one key")
        self._by_kid = {key.kid: key for key in ordered}
        self.current = ordered[-1]

    @classmethod
    def from_secret(cls, secret: str) -> KeyRing:
        """A ring of one HS256 key; its kid is derived from (and reveals nothing of) it."""
        kid = "hs256-" + hashlib.sha256(b"authkeep-kid\x00" + secret.encode()).hexdigest()[:12]
        return cls([SigningKey(kid, "HS256", secret.encode(), secret.encode())])

    @classmethod
    def from_directory(cls, directory: Path) -> KeyRing:
        """Load every ``<kid>.pem`` private key in ``directory``; the last by name signs."""
        files = sorted(directory.glob("*.pem"))
        if not files:
            raise KeyConfigError(
                f"no *.pem key in AUTHKEEP_JWT_KEYS_DIR; create one with "
                f"'authkeep keys generate --dir {directory}'"
            )
        return cls(load_private_key(path) for path in files)

    def get(self, kid: str) -> SigningKey | None:
        """The key with this id, or None."""
        return self._by_kid.get(kid)

    @property
    def keys(self) -> list[SigningKey]:
        """All keys, oldest first."""
        return list(self._by_kid.values())

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys as a JWK Set (empty for HS256)."""
        return {"keys": [jwk for key in self.keys if (jwk := key.public_jwk()) is not None]}


def _algorithm_for(private: Any) -> Algorithm:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < 2048:
            raise KeyConfigError("RSA keys must be at least 2048 bits")
        return "RS256"
    raise KeyConfigError("only Ed25519 and RSA private keys are supported")


def load_private_key(path: Path) -> SigningKey:
    """Read one PEM private key; its file name (without ``.pem``) is its kid."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyConfigError(f"{path.name} is not an unencrypted PEM private key") from exc
    algorithm = _algorithm_for(private)
    return SigningKey(path.stem, algorithm, private, private.public_key())


def generate_key(directory: Path, algorithm: Literal["EdDSA", "RS256"] = "EdDSA") -> Path:
    """Create a new private key file (0600) in ``directory``; it becomes the signing key."""
    private: PrivateKey
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    # The newest key by name signs, so a new kid must sort after every kid already there:
    # microseconds keep two keys made in the same second in order.
    kid = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)
    newest = max((path.stem for path in directory.glob("*.pem")), default="")
    if kid <= newest:
        raise KeyConfigError(
            f"{newest}.pem sorts after a key made now, so the new key would not sign; "
            "rename the key files so that names sort oldest first"
        )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / f"{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path
