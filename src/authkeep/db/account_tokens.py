"""Queries on ``account_tokens``: single-use tokens sent by email, kept as keyed hashes.

A token is *usable* while it is unused and unexpired. Spending one is a single conditional
``UPDATE … SET used_at = now WHERE token_hash = :h AND used_at IS NULL AND expires_at > now``:
of two concurrent uses exactly one matches the row, so a link can never be used twice, on
any number of workers. Voiding (a newer token of the same purpose was issued, or a password
reset cancels pending changes) moves ``expires_at`` to now: the row stays as a record.

``email`` (the address a link was sent to) is sealed with the user's key, bound to the
token's row (``db/sealed.py``); a record whose address cannot be read has ``email`` ``""``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import sealed, user_keys
from authkeep.db.models import AccountToken
from authkeep.security.envelope import Envelope, SealedValueError

Purpose = Literal["verify_email", "password_reset", "email_change", "deletion_cancel"]

__all__ = ["Purpose", "TokenRecord", "consume", "find_usable", "insert_token", "void_unused"]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token row without its hash: whose, for what, and the address it was sent to."""

    id: uuid.UUID
    user_id: uuid.UUID
    purpose: str
    email: str


_COLUMNS = (AccountToken.id, AccountToken.user_id, AccountToken.purpose, AccountToken.email)


def _usable(token_hash: str, purpose: Purpose, now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        AccountToken.token_hash == token_hash,
        AccountToken.purpose == purpose,
        AccountToken.used_at.is_(None),
        AccountToken.expires_at > now,
    )


async def _record(
    conn: AsyncConnection, envelope: Envelope, row: Sequence[Any] | None
) -> TokenRecord | None:
    if row is None:
        return None
    token_id, user_id, purpose, stored = row
    try:
        aead = await user_keys.cipher(conn, envelope, user_id)
    except SealedValueError:
        aead = None
    email = sealed.open_user(aead, "account_tokens", "email", token_id, stored)
    return TokenRecord(token_id, user_id, purpose, "" if email is None else email)


async def insert_token(
    conn: AsyncConnection,
    envelope: Envelope,
    *,
    user_id: uuid.UUID,
    purpose: Purpose,
    token_hash: str,
    email: str,
    now: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    """Store a new token's hash (the address sealed with the user's key); returns its row
    id. :class:`~authkeep.db.sealed.MissingUserKey` for an erased account."""
    token_id = uuid.uuid4()
    aead = await sealed.require_cipher(conn, envelope, user_id)
    await conn.execute(
        insert(AccountToken).values(
            id=token_id,
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            email=sealed.seal_user(aead, "account_tokens", "email", token_id, email),
            created_at=now,
            expires_at=expires_at,
        )
    )
    return token_id


async def void_unused(
    conn: AsyncConnection, *, user_id: uuid.UUID, purposes: Iterable[Purpose], now: datetime
) -> int:
    """End every usable token of ``user_id`` for ``purposes`` (they expire now); returns
    how many there were."""
    result = await conn.execute(
        update(AccountToken)
        .where(
            AccountToken.user_id == user_id,
            AccountToken.purpose.in_(list(purposes)),
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > now,
        )
        .values(expires_at=now)
    )
    return int(result.rowcount or 0)


async def find_usable(
    conn: AsyncConnection, envelope: Envelope, token_hash: str, purpose: Purpose, now: datetime
) -> TokenRecord | None:
    """The usable token with this hash and purpose, without spending it (to check a request
    before doing the work; :func:`consume` decides)."""
    row = (await conn.execute(select(*_COLUMNS).where(*_usable(token_hash, purpose, now)))).first()
    return await _record(conn, envelope, row)


async def consume(
    conn: AsyncConnection, envelope: Envelope, token_hash: str, purpose: Purpose, now: datetime
) -> TokenRecord | None:
    """Spend the token with this hash and purpose; None when it is unknown, used, expired
    or voided. Atomic: of concurrent calls for one token, exactly one gets the record."""
    row = (
        await conn.execute(
            update(AccountToken)
            .where(*_usable(token_hash, purpose, now))
            .values(used_at=now)
            .returning(*_COLUMNS)
        )
    ).first()
    return await _record(conn, envelope, row)
