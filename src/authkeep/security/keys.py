"""Signing keys: one HS256 secret, or a directory of Ed25519/RSA key pairs with ``kid``s.

A key ring signs with its newest *active* key and verifies with all of them, so rotating means
adding a key and deleting the old one once every token it signed has expired. A key file's
name starts with the moment it becomes active (``20250101T000000000000Z-<random>``):
``authkeep keys generate`` makes a key active at once, ``authkeep keys rotate`` one active only
after a pre-publication period, during which it is already in the JWKS, so that verifiers
that cache the JWKS know the key before the first token it signs reaches them. The switch
happens in every worker at the same moment without a restart. For HS256, the previous
secrets (``AUTHKEEP_PREVIOUS_SECRET_KEYS``) keep verifying, each with its own kid
(:func:`authkeep.security.key_ring.kid_of`). Each key is bound to exactly one algorithm; the
verifier is told that algorithm and no other, which is what stops algorithm-confusion attacks
(an HS256 token "signed" with a public key, ``alg: none`` and the like).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from authkeep.security.key_ring import kid_of

Algorithm = Literal["HS256", "EdDSA", "RS256"]
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

_KID_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_KID_TIME = re.compile(r"(\d{8}T\d{12}Z)-")


def kid_activation(kid: str) -> datetime | None:
    """When the key named ``kid`` starts signing (the time its name starts with), or None
    for a kid without one (active from the start)."""
    match = _KID_TIME.match(kid)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), _KID_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


class KeyConfigError(ValueError):
    """A key file or key configuration is unusable."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key: its id, its single algorithm, and the material to sign and verify with."""

    kid: str
    algorithm: Algorithm
    signing_material: Any
    verifying_material: Any
    active_from: datetime | None = None
    """Signs only from this moment on (published before it); None: at once."""

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
        # Newest first, with the epoch from which each may sign: ``current`` is asked on
        # every token issued, so it compares floats and nothing else.
        self._signers = [
            (key.active_from.timestamp() if key.active_from else float("-inf"), key)
            for key in reversed(ordered)
        ]

    @property
    def current(self) -> SigningKey:
        """The key that signs now: the newest one already active (the oldest key when none
        is, so that a ring of only pre-published keys still signs)."""
        now = time.time()
        for active_from, key in self._signers:
            if active_from <= now:
                return key
        return self._signers[-1][1]

    @classmethod
    def from_secret(cls, secret: str, previous: Iterable[str] = ()) -> KeyRing:
        """An HS256 ring: ``secret`` signs, the ``previous`` secrets (newest first) still
        verify. Each kid is derived from (and reveals nothing of) its secret."""
        ordered = [*reversed(list(previous)), secret]
        return cls(
            SigningKey(kid_of(value), "HS256", value.encode(), value.encode()) for value in ordered
        )

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
    return SigningKey(
        path.stem, algorithm, private, private.public_key(), kid_activation(path.stem)
    )


def generate_key(
    directory: Path,
    algorithm: Literal["EdDSA", "RS256"] = "EdDSA",
    *,
    active_from: datetime | None = None,
) -> Path:
    """Create a new private key file (0600) in ``directory``; it becomes the signing key at
    ``active_from`` (default: now), and is published in the JWKS from the moment it is
    loaded."""
    private: PrivateKey
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    # The newest key by name signs, so a new kid must sort after every kid already there:
    # microseconds keep two keys made in the same second in order.
    kid = (
        (active_from or datetime.now(UTC)).astimezone(UTC).strftime(_KID_TIME_FORMAT)
        + "-"
        + secrets.token_hex(4)
    )
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
