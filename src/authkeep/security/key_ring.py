"""Symmetric key rings: the newest key writes, every key of the ring reads.

Rotating a secret must log nobody out and void nothing in flight, so a secret is never
replaced, it is *pushed down*: the new value becomes ``AUTHKEEP_SECRET_KEY`` and the old one
moves to ``AUTHKEEP_PREVIOUS_SECRET_KEYS``. Everything made with a key (an HS256 signature,
a keyed hash of an email token) is then made with the newest key and checked against all of
them, until the old key is dropped once nothing it made can still be valid.

Rules this module enforces:

* A key's id (``kid``) is a truncated SHA-256 of the key under a fixed label: 48 bits, which
  names the key in token headers and logs without revealing anything usable about a secret of
  at least 32 characters (a brute force of the secret through its kid is as hard as through
  any token it signed).
* A ring derives one independent subkey per purpose with HKDF-SHA256 (:meth:`SecretRing.
  derive`, the purpose as HKDF's ``info``): a keyed hash stored in the database never uses
  the signing secret itself, so a hash cannot be turned into a signature or the reverse
  (cross-protocol key reuse), and the subkeys keep their parent's kid so that rotation moves
  them all together.
* Key material never appears in a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["RingKey", "SecretRing", "kid_of"]

_KID_LABEL = b"authkeep-kid\x00"


def kid_of(secret: str | bytes) -> str:
    """The public id of a secret: ``hs256-`` and 12 hex digits of a labelled SHA-256."""
    material = secret.encode() if isinstance(secret, str) else secret
    return "hs256-" + hashlib.sha256(_KID_LABEL + material).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class RingKey:
    """One key of a ring: its id and its bytes (hidden from ``repr``)."""

    kid: str
    material: bytes = field(repr=False)


class SecretRing:
    """Ordered symmetric keys, newest first: the first writes, all read."""

    __slots__ = ("_by_kid", "_keys")

    def __init__(self, keys: Sequence[RingKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        unique: dict[str, RingKey] = {}
        for key in keys:
            unique.setdefault(key.kid, key)  # the same secret listed twice counts once
        self._keys = tuple(unique.values())
        self._by_kid = unique

    @classmethod
    def from_secrets(cls, current: str | bytes, previous: Iterable[str | bytes] = ()) -> SecretRing:
        """A ring of ``current`` (writes) and the ``previous`` secrets (read only), each
        with its :func:`kid_of`."""
        secrets = [current, *previous]
        return cls([RingKey(kid_of(s), s.encode() if isinstance(s, str) else s) for s in secrets])

    @property
    def newest(self) -> RingKey:
        """The key that makes everything new."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[RingKey, ...]:
        """Every key, newest first."""
        return self._keys

    def get(self, kid: str) -> RingKey | None:
        """The key with id ``kid``, or None (a removed or foreign key)."""
        return self._by_kid.get(kid)

    def derive(self, purpose: bytes) -> SecretRing:
        """A ring of 32-byte subkeys for ``purpose`` (HKDF-SHA256 info), one per key,
        same kids, same order."""
        return SecretRing(
            [
                RingKey(
                    key.kid,
                    HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
                        key.material
                    ),
                )
                for key in self._keys
            ]
        )

    def mac(self, value: bytes) -> str:
        """HMAC-SHA256 of ``value`` under the newest key, hex."""
        return hmac.new(self.newest.material, value, hashlib.sha256).hexdigest()

    def macs(self, value: bytes) -> list[str]:
        """HMAC-SHA256 of ``value`` under every key, newest first: the values a stored
        hash may have been made with."""
        return [hmac.new(k.material, value, hashlib.sha256).hexdigest() for k in self._keys]

    def __repr__(self) -> str:
        return f"SecretRing(kids={[key.kid for key in self._keys]!r})"
