"""Single-use tokens sent by email: verify an address, reset a password, confirm an email
change, accept an invitation.

Rules this module enforces:

* A token is 32 bytes from :mod:`secrets`, base64url without padding (43 characters):
  256 bits, so guessing one (online, at any rate a server survives) is hopeless.
* Only a keyed hash is stored: HMAC-SHA256 under a key derived with HKDF-SHA256 from
  ``AUTHKEEP_SECRET_KEY`` for this one purpose (:func:`derive_token_key`). A copy of the
  database (a backup, a replica, an injection) therefore yields no working link, and unlike
  a plain SHA-256 the stored value cannot even be matched against a captured link without
  the server's secret. The derived key signs nothing else, and the secret never touches a
  hash directly.
* A presented value that does not have the shape of a token is refused before any database
  work (:func:`looks_like_token`): junk never reaches a query.

Key rotation: the key follows the secret ring (:mod:`authkeep.security.key_ring`): a new
token is hashed under the key derived from ``AUTHKEEP_SECRET_KEY``, a presented one is looked
up under it and under the keys derived from ``AUTHKEEP_PREVIOUS_SECRET_KEYS``
(:meth:`EmailTokenKey.hashes`), so a rotation voids no link in flight; dropping a previous
secret voids the links hashed under it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authkeep.security.key_ring import SecretRing

__all__ = [
    "TOKEN_BYTES",
    "EmailTokenKey",
    "IssuedEmailToken",
    "derive_token_key",
    "looks_like_token",
    "new_token",
    "token_hash",
]

TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
# HKDF "info": binds the derived key to this use; another use derives with another label.
_PURPOSE = b"authkeep/email-token-hash/v1"


def derive_token_key(secret: str | bytes, purpose: bytes = _PURPOSE) -> bytes:
    """A 32-byte key for hashing email tokens, derived from the server secret (HKDF-SHA256,
    ``purpose`` as its info) so that it is independent of every other use of the secret."""
    material = secret.encode() if isinstance(secret, str) else secret
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(material)


def new_token() -> str:
    """A fresh token: 32 random bytes, base64url without padding."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(value: str) -> bool:
    """Whether ``value`` has the shape of a token from :func:`new_token`."""
    return _TOKEN_SHAPE.fullmatch(value) is not None


def token_hash(key: bytes, token: str) -> str:
    """The stored form of ``token``: HMAC-SHA256 under ``key``, 64 hex characters."""
    return hmac.new(key, token.encode("ascii", "replace"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedEmailToken:
    """A new token (for the email) and its hash (for the database)."""

    token: str
    hash: str


class EmailTokenKey:
    """The key email tokens are hashed with: issue new tokens, hash presented ones."""

    __slots__ = ("_key", "_previous")

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        self._key = key
        self._previous = tuple(previous)

    @classmethod
    def from_ring(cls, ring: SecretRing) -> EmailTokenKey:
        """Keys derived from every secret of ``ring``: the newest hashes new tokens."""
        newest, *older = (derive_token_key(key.material) for key in ring.keys)
        return cls(newest, older)

    @classmethod
    def from_secret(cls, secret: str | bytes) -> EmailTokenKey:
        """The key derived from the server secret (see :func:`derive_token_key`)."""
        return cls(derive_token_key(secret))

    def issue(self) -> IssuedEmailToken:
        """A new token and its hash."""
        token = new_token()
        return IssuedEmailToken(token, token_hash(self._key, token))

    def hash(self, token: str) -> str | None:
        """The hash to look ``token`` up by, or None when it cannot be a token."""
        if not looks_like_token(token):
            return None
        return token_hash(self._key, token)

    def hashes(self, token: str) -> list[str]:
        """Every hash ``token`` may be stored under (newest key first), or none when it
        cannot be a token."""
        if not looks_like_token(token):
            return []
        return [token_hash(key, token) for key in (self._key, *self._previous)]

    def __repr__(self) -> str:
        return "EmailTokenKey(<hidden>)"
