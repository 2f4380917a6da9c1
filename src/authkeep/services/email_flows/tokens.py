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


async def store_token(
    conn: AsyncConnection,
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
    inbox that leaked an older message leaks nothing usable."""
    await token_rows.void_unused(conn, user_id=user_id, purposes=(purpose,), now=now)
    return await token_rows.insert_token(
        conn,
        user_id=user_id,
        purpose=purpose,
        token_hash=token.hash,
        email=email,
        now=now,
        expires_at=now + ttl,
    )


class EmailTokens:
    """Tokens hashed with the server's email-token key."""

    def __init__(self, key: EmailTokenKey) -> None:
        self._key = key

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
            found = await token_rows.find_usable(conn, hashed, purpose, now)
            if found is not None:
                return found
        raise EmailTokenUnusable()

    async def consume(
        self, conn: AsyncConnection, token: str, purpose: Purpose, now: datetime
    ) -> TokenRecord:
        """Spend ``token`` (in the caller's transaction: a rollback un-spends it);
        EmailTokenUnusable when it is unknown, used, expired or voided — or was just spent
        by a concurrent request."""
        for hashed in self._hashes(token):
            found = await token_rows.consume(conn, hashed, purpose, now)
            if found is not None:
                return found
        raise EmailTokenUnusable()
