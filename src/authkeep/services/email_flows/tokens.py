"""Email tokens for the flows: issue one (voiding the older ones of its kind), check one,
spend one. The primitive is :mod:`authkeep.security.email_tokens`; the single-use rule is
:func:`authkeep.db.account_tokens.consume`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import account_tokens as token_rows
from authkeep.db.account_tokens import Purpose, TokenRecord
from authkeep.errors import EmailTokenUnusable
from authkeep.security.email_tokens import EmailTokenKey, IssuedEmailToken
from authkeep.security.envelope import Envelope


async def store_token(
    conn: AsyncConnection,
    envelope: Envelope,
    *,
    user_id: uuid.UUID,
    purpose: Purpose,
    token: IssuedEmailToken,
    email: str,
    now: datetime,
    ttl: timedelta,
) -> uuid.UUID:
    """Store ``token``'s hash for ``user_id``, sent to ``email``, usable for ``ttl``. A new
    link voids the older unused ones of its kind: only the latest email works, so an
    inbox that leaked an older message leaks nothing usable. ``email`` is sealed with the
    user's key (``envelope``)."""
    await token_rows.void_unused(conn, user_id=user_id, purposes=(purpose,), now=now)
    return await token_rows.insert_token(
        conn,
        envelope,
        user_id=user_id,
        purpose=purpose,
        token_hash=token.hash,
        email=email,
        now=now,
        expires_at=now + ttl,
    )


def _readable(found: TokenRecord) -> TokenRecord:
    # A link whose address cannot be read (the account was erased, the row is damaged)
    # proves nothing about any address: unusable, and the caller's rollback un-spends it.
    if not found.email:
        raise EmailTokenUnusable()
    return found


class EmailTokens:
    """Tokens hashed with the server's email-token key; the address each was sent to is
    sealed with the user's key (``envelope``)."""

    def __init__(self, key: EmailTokenKey, envelope: Envelope) -> None:
        self._key = key
        self._envelope = envelope

    @property
    def envelope(self) -> Envelope:
        """What seals and opens the addresses the tokens were sent to."""
        return self._envelope

    def issue(self) -> IssuedEmailToken:
        """A new token and its hash (nothing stored yet)."""
        return self._key.issue()

    def _hashes(self, token: str) -> list[str]:
        # One per key of the secret ring: a link sent before a rotation still works.
        hashed = self._key.hashes(token)
        if not hashed:
            raise EmailTokenUnusable()
        return hashed

    async def peek(
        self, conn: AsyncConnection, token: str, purpose: Purpose, now: datetime
    ) -> TokenRecord:
        """The usable token ``token`` of ``purpose``, not spent; EmailTokenUnusable if none."""
        for hashed in self._hashes(token):
            found = await token_rows.find_usable(conn, self._envelope, hashed, purpose, now)
            if found is not None:
                return _readable(found)
        raise EmailTokenUnusable()

    async def consume(
        self, conn: AsyncConnection, token: str, purpose: Purpose, now: datetime
    ) -> TokenRecord:
        """Spend ``token`` (in the caller's transaction: a rollback un-spends it);
        EmailTokenUnusable when it is unknown, used, expired or voided — or was just spent
        by a concurrent request."""
        for hashed in self._hashes(token):
            found = await token_rows.consume(conn, self._envelope, hashed, purpose, now)
            if found is not None:
                return _readable(found)
        raise EmailTokenUnusable()
