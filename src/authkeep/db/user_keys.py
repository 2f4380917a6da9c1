"""Queries on ``user_keys``: each account's wrapped user key (``security/envelope.py``)."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import after_commit
from authkeep.db.base import utcnow
from authkeep.db.models import UserKey
from authkeep.security.envelope import Envelope


async def create(conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID) -> AESGCM:
    """Make, wrap and store a new user key for ``user_id`` (in the caller's transaction);
    returns its cipher."""
    key = envelope.new_user_key()
    await conn.execute(
        insert(UserKey).values(
            user_id=user_id, wrapped_key=envelope.wrap(user_id, key), created_at=utcnow()
        )
    )
    return envelope.remember(user_id, key)


async def cipher(conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID) -> AESGCM | None:
    """The cipher of ``user_id``'s key (remembered, or read and unwrapped); None when the
    account has no key (never had one, or it was destroyed)."""
    aead = envelope.remembered(user_id)
    if aead is not None:
        return aead
    wrapped = (
        await conn.execute(select(UserKey.wrapped_key).where(UserKey.user_id == user_id))
    ).scalar_one_or_none()
    return None if wrapped is None else envelope.cipher_for(user_id, wrapped)


async def destroy(conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID) -> bool:
    """Delete ``user_id``'s key (crypto-shredding: what it sealed can no longer be read).
    Returns whether a key was there."""
    envelope.forget(user_id)
    # Again once the delete committed: until then another task of this process may read the
    # row (still there for it) and remember the key, which would then outlive its erasure.
    after_commit.after_commit(conn, lambda: envelope.forget(user_id))
    result = await conn.execute(delete(UserKey).where(UserKey.user_id == user_id))
    return bool(result.rowcount)
