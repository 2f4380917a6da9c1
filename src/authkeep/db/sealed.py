"""Sealed columns: how ``db/*.py`` write and read personal data (``security/envelope.py``).

Writes seal; reads open, so that everything above the persistence layer sees plaintext.
A value that does not open reads as None and is logged (``sealed_value_unreadable``: table,
column, row — never the value); it is never an exception, so no reader turns a damaged row
into a 500:

* no user key (the account was erased: crypto-shredding) — expected, not logged;
* the user key does not unwrap, or the value does not open in its row's context (a sealed
  value copied from another row or column, a damaged row, a key missing from the ring) —
  an integrity problem, logged at error level.

What a missing value means is each reader's rule (``db/users.py``: an account whose address
cannot be read does not authenticate; docs/privacy.md).
"""

from __future__ import annotations

import uuid

import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import user_keys
from authkeep.security.envelope import Envelope, SealedValueError, field_context

__all__ = [
    "MissingUserKey",
    "open_master",
    "open_user",
    "require_cipher",
    "seal_master",
    "seal_user",
    "user_cipher",
]

log = structlog.get_logger("authkeep.db")


class MissingUserKey(LookupError):
    """A value about an account is being written, but the account has no user key (it was
    erased)."""


def _unreadable(table: str, column: str, row_id: object) -> None:
    log.error("sealed_value_unreadable", table=table, column=column, row_id=str(row_id))


def user_cipher(envelope: Envelope, user_id: uuid.UUID, wrapped: str | None) -> AESGCM | None:
    """The cipher of ``user_id``'s key from its stored (wrapped) form, read in the same query
    as the row (remembered keys are not unwrapped again); None when there is no key."""
    if wrapped is None:
        return None
    try:
        return envelope.cipher_for(user_id, wrapped)
    except SealedValueError:
        _unreadable("user_keys", "wrapped_key", user_id)
        return None


async def require_cipher(conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID) -> AESGCM:
    """The cipher of ``user_id``'s key for a write (remembered, else read: one query);
    :class:`MissingUserKey` when the account has none."""
    try:
        aead = await user_keys.cipher(conn, envelope, user_id)
    except SealedValueError:
        _unreadable("user_keys", "wrapped_key", user_id)
        aead = None
    if aead is None:
        raise MissingUserKey(str(user_id))
    return aead


def seal_user(
    aead: AESGCM, table: str, column: str, row_id: object, value: str | None
) -> str | None:
    """``value`` sealed with a user key, bound to ``table.column`` of row ``row_id``."""
    if value is None:
        return None
    return Envelope.seal_with(aead, value, context=field_context(table, column, row_id))


def open_user(
    aead: AESGCM | None, table: str, column: str, row_id: object, stored: str | None
) -> str | None:
    """The plaintext of a user-sealed ``stored``; None when absent, when there is no key
    (erased account) or when it does not open (logged)."""
    if stored is None or aead is None:
        return None
    try:
        return Envelope.open_with(aead, stored, context=field_context(table, column, row_id))
    except SealedValueError:
        _unreadable(table, column, row_id)
        return None


def seal_master(
    envelope: Envelope, table: str, column: str, row_id: object, value: str | None
) -> str | None:
    """``value`` sealed with the master ring (data that belongs to no account)."""
    if value is None:
        return None
    return envelope.seal(value, context=field_context(table, column, row_id))


def open_master(
    envelope: Envelope, table: str, column: str, row_id: object, stored: str | None
) -> str | None:
    """The plaintext of a master-sealed ``stored``; None when absent or unreadable (logged)."""
    if stored is None:
        return None
    try:
        return envelope.open(stored, context=field_context(table, column, row_id))
    except SealedValueError:
        _unreadable(table, column, row_id)
        return None
