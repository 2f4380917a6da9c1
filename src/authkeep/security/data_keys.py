"""Data keys: authenticated encryption of what authkeep stores but must not keep in clear.

MFA secrets and webhook signing secrets must be readable by the service (it computes codes
and signatures with them), so they cannot be hashed; a stolen database dump must still not
yield them. They are sealed with AES-256-GCM under a key of the data-key ring
(``AUTHKEEP_DATA_KEYS``, a :class:`~authkeep.security.key_ring.SecretRing`: the newest key
seals, every key opens, so a rotation voids nothing).

Rules this module enforces:

* Every sealed value names its key (``<kid>.<base64url(nonce | ciphertext | tag)>``), so a
  rotation can tell which rows still need re-sealing and old rows keep opening.
* A fresh 96-bit random nonce per seal (AES-GCM's limit of 2**32 seals per key is far away
  for secrets sealed once each).
* The caller's ``context`` (table, column, row id) is GCM's associated data: a sealed value
  copied into another row or column fails to open instead of decrypting there.
* Any failure to open — unknown key, tampering, wrong context, garbage — is one
  :class:`SealedValueError`, raised from its cause, with no detail an attacker could use.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authkeep.security.key_ring import RingKey, SecretRing

__all__ = [
    "DATA_KEY_ID",
    "SealedValueError",
    "SecretBox",
    "new_data_key_entry",
    "parse_data_key",
]

DATA_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NONCE_BYTES = 12


class SealedValueError(ValueError):
    """A sealed value that cannot be opened with this ring and context."""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_data_key(entry: str) -> RingKey:
    """One ``AUTHKEEP_DATA_KEYS`` entry, ``"<key id>:<base64url of 32 random bytes>"``.

    Raises ValueError naming what is wrong (never the key material)."""
    kid, sep, encoded = entry.strip().partition(":")
    if not sep or not DATA_KEY_ID.match(kid):
        raise ValueError(
            "a data key is '<key id>:<base64url of 32 bytes>', its id 1-32 letters, digits, "
            "'-' or '_'"
        )
    try:
        material = _b64decode(encoded.strip())
    except (binascii.Error, ValueError):
        raise ValueError(f"data key {kid!r} is not base64url") from None
    if len(material) != 32:
        raise ValueError(f"data key {kid!r} must be 32 bytes (256 bits), not {len(material)}")
    return RingKey(kid, material)


def new_data_key_entry(kid: str | None = None) -> str:
    """A new ``AUTHKEEP_DATA_KEYS`` entry with 32 random bytes (id: a random one if None)."""
    key_id = kid if kid is not None else "dk-" + secrets.token_hex(4)
    if not DATA_KEY_ID.match(key_id):
        raise ValueError("a data key id is 1-32 letters, digits, '-' or '_'")
    material = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    return f"{key_id}:{material}"


class SecretBox:
    """Seal and open small values with a data-key ring (AES-256-GCM)."""

    __slots__ = ("_aead", "_ring")

    def __init__(self, ring: SecretRing) -> None:
        self._ring = ring
        self._aead = {key.kid: AESGCM(key.material) for key in ring.keys}

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> SecretBox:
        """A box over ``AUTHKEEP_DATA_KEYS`` entries, newest first."""
        return cls(SecretRing([parse_data_key(entry) for entry in entries]))

    @property
    def ring(self) -> SecretRing:
        """The data-key ring (its newest key seals)."""
        return self._ring

    def seal(self, plaintext: bytes, *, context: bytes) -> str:
        """``plaintext`` encrypted under the newest key, bound to ``context``."""
        kid = self._ring.newest.kid
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead[kid].encrypt(nonce, plaintext, context)
        return kid + "." + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, sealed: str, *, context: bytes) -> bytes:
        """The plaintext of ``sealed``, which must have been sealed with ``context``."""
        kid, _, body = sealed.partition(".")
        aead = self._aead.get(kid)
        if aead is None or not body:
            raise SealedValueError("sealed with an unknown data key, or not a sealed value")
        try:
            raw = _b64decode(body)
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context)
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealedValueError("sealed value does not open in this context") from exc

    def needs_resealing(self, sealed: str) -> bool:
        """Whether ``sealed`` was made with an older key than the newest."""
        return sealed.partition(".")[0] != self._ring.newest.kid

    def __repr__(self) -> str:
        return f"SecretBox({self._ring!r})"
