"""Envelope encryption of personal data, and the keyed blind index that finds an email.

Personal data (emails, names, IP addresses, user agents) is stored encrypted. Each account
has its own random 256-bit *user key*; values about that account are sealed with it
(AES-256-GCM), and the user key itself is stored *wrapped* — sealed by the master data-key
ring (``AUTHKEEP_DATA_KEYS``, :class:`~authkeep.security.data_keys.SecretBox`). Two things
follow:

* Rotating a master key re-wraps one short value per account; the values sealed with a
  user key do not change.
* Destroying an account's user key (crypto-shredding) makes every value sealed with it
  unreadable, including copies in backups that do not hold the key table (docs/privacy.md
  says how backups keep the keys apart).

Values that belong to no account (an invitation to an address with no account, an anonymous
failed sign-in's IP address) are sealed with the master ring directly.

Formats, so that a stored value names its key:

* a value sealed with a user key: ``uk1.<base64url(nonce | ciphertext | tag)>`` — the key is
  the user key of the account named in the value's context;
* a value sealed with the master ring: ``<kid>.<base64url(...)>`` (:class:`SecretBox`);
* a blind index: ``bi.<kid>.<base64url(HMAC-SHA256)>`` — the HMAC key is derived from master
  key ``kid`` with HKDF (its own key, never the encryption key), so the index is versioned
  with the ring and rotates with it.

Every seal takes a ``context`` (see :func:`field_context`: table, column and row) that becomes
GCM's associated data: a ciphertext copied into another row or column does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import uuid
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authkeep.security.data_keys import SealedValueError, SecretBox

__all__ = [
    "USER_SEALED_PREFIX",
    "Envelope",
    "SealedValueError",
    "field_context",
]

USER_SEALED_PREFIX = "uk1."
_BLIND_INDEX_INFO = b"authkeep/blind-index/v1"
_NONCE_BYTES = 12
_USER_KEY_BYTES = 32


def field_context(table: str, column: str, row_id: object) -> bytes:
    """The associated data that binds a sealed value to one column of one row."""
    return f"{table}.{column}:{row_id}".encode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _wrap_context(user_id: uuid.UUID) -> bytes:
    return field_context("user_keys", "wrapped_key", user_id)


class Envelope:
    """User keys (make, wrap, unwrap, remember), sealing with them, and the blind index.

    Unwrapped user keys are remembered in a bounded in-process map (``cache_size``
    accounts, least recently used out) so that a request's writes (a session's IP address,
    an audit row) need no key read of their own; :meth:`forget` drops one (the purge calls
    it before destroying the stored key).
    """

    __slots__ = ("_blind_keys", "_box", "_cache", "_cache_size")

    def __init__(self, box: SecretBox, *, cache_size: int = 10_000) -> None:
        self._box = box
        self._cache: OrderedDict[uuid.UUID, AESGCM] = OrderedDict()
        self._cache_size = cache_size
        self._blind_keys = tuple(
            (
                key.kid,
                HKDF(
                    algorithm=hashes.SHA256(), length=32, salt=None, info=_BLIND_INDEX_INFO
                ).derive(key.material),
            )
            for key in box.ring.keys
        )

    @property
    def box(self) -> SecretBox:
        """The master data-key box (seals values that belong to no account)."""
        return self._box

    # -- user keys -------------------------------------------------------------------------

    @staticmethod
    def new_user_key() -> bytes:
        """A fresh random user key."""
        return os.urandom(_USER_KEY_BYTES)

    def wrap(self, user_id: uuid.UUID, user_key: bytes) -> str:
        """``user_key`` sealed by the newest master key, bound to ``user_id``."""
        return self._box.seal(user_key, context=_wrap_context(user_id))

    def unwrap(self, user_id: uuid.UUID, wrapped: str) -> bytes:
        """The user key of ``user_id``; :class:`SealedValueError` if it does not open."""
        key = self._box.open(wrapped, context=_wrap_context(user_id))
        if len(key) != _USER_KEY_BYTES:
            raise SealedValueError("a user key is 32 bytes")
        return key

    def needs_rewrap(self, wrapped: str) -> bool:
        """Whether ``wrapped`` was made by an older master key than the newest."""
        return self._box.needs_resealing(wrapped)

    def remember(self, user_id: uuid.UUID, user_key: bytes) -> AESGCM:
        """Keep ``user_key`` for ``user_id`` in the bounded map; returns its cipher."""
        aead = self._cache.get(user_id)
        if aead is None:
            aead = AESGCM(user_key)
            self._cache[user_id] = aead
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(user_id)
        return aead

    def remembered(self, user_id: uuid.UUID) -> AESGCM | None:
        """The cipher of ``user_id``'s key if it is in the map."""
        aead = self._cache.get(user_id)
        if aead is not None:
            self._cache.move_to_end(user_id)
        return aead

    def cipher_for(self, user_id: uuid.UUID, wrapped: str) -> AESGCM:
        """The cipher of ``user_id``'s key, from the map or by unwrapping ``wrapped``."""
        aead = self.remembered(user_id)
        if aead is None:
            aead = self.remember(user_id, self.unwrap(user_id, wrapped))
        return aead

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop ``user_id``'s key from the map (its stored key is being destroyed)."""
        self._cache.pop(user_id, None)

    # -- values ----------------------------------------------------------------------------

    @staticmethod
    def seal_with(aead: AESGCM, value: str, *, context: bytes) -> str:
        """``value`` sealed with a user key's cipher, bound to ``context``."""
        nonce = os.urandom(_NONCE_BYTES)
        return USER_SEALED_PREFIX + _b64encode(nonce + aead.encrypt(nonce, value.encode(), context))

    @staticmethod
    def open_with(aead: AESGCM, sealed: str, *, context: bytes) -> str:
        """The value of ``sealed`` (made by :meth:`seal_with` with the same context)."""
        if not sealed.startswith(USER_SEALED_PREFIX):
            raise SealedValueError("not a value sealed with a user key")
        try:
            raw = _b64decode(sealed[len(USER_SEALED_PREFIX) :])
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealedValueError("sealed value does not open in this context") from exc

    def seal(self, value: str, *, context: bytes) -> str:
        """``value`` sealed with the master ring (for data that belongs to no account)."""
        return self._box.seal(value.encode(), context=context)

    def open(self, sealed: str, *, context: bytes) -> str:
        """The value of a master-sealed ``sealed``."""
        try:
            return self._box.open(sealed, context=context).decode()
        except UnicodeDecodeError as exc:
            raise SealedValueError("sealed value is not text") from exc

    @staticmethod
    def is_user_sealed(stored: str) -> bool:
        """Whether ``stored`` was sealed with a user key (else: with the master ring)."""
        return stored.startswith(USER_SEALED_PREFIX)

    # -- blind index -----------------------------------------------------------------------

    def blind_index(self, folded_email: str) -> str:
        """The index of a folded email under the newest key: what a write stores."""
        kid, key = self._blind_keys[0]
        return self._index(kid, key, folded_email)

    def blind_indexes(self, folded_email: str) -> tuple[str, ...]:
        """The index under every key of the ring, newest first: what a look-up matches
        (rows not yet re-indexed after a rotation are still found)."""
        return tuple(self._index(kid, key, folded_email) for kid, key in self._blind_keys)

    def index_is_current(self, index: str) -> bool:
        """Whether ``index`` was made with the newest key."""
        return index.startswith(f"bi.{self._blind_keys[0][0]}.")

    @staticmethod
    def _index(kid: str, key: bytes, folded_email: str) -> str:
        digest = hmac.new(key, folded_email.encode(), hashlib.sha256).digest()
        return f"bi.{kid}.{_b64encode(digest)}"

    def __repr__(self) -> str:
        return f"Envelope({self._box!r})"
