"""Single use of email tokens, at the database: of concurrent uses exactly one wins."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from fastapi import FastAPI

from authkeep.db import account_tokens as token_rows
from authkeep.db.base import utcnow
from authkeep.security.email_tokens import EmailTokenKey
from authkeep.services.email_flows import store_token
from helpers import authkeep_of, client_for, register


async def test_concurrent_uses_of_one_token_have_exactly_one_winner(app: FastAPI) -> None:
    async with client_for(app) as http:
        user = await register(http, "tok@example.com")
    db, envelope = authkeep_of(app).services.db, authkeep_of(app).services.envelope
    key = EmailTokenKey.from_secret("x" * 40)
    issued = key.issue()
    now = utcnow()
    async with db.transaction() as conn:
        await store_token(
            conn,
            envelope,
            user_id=uuid.UUID(user["id"]),
            purpose="password_reset",
            token=issued,
            email="tok@example.com",
            now=now,
            ttl=timedelta(hours=1),
        )

    async def use() -> bool:
        async with db.transaction() as conn:
            found = await token_rows.find_usable(
                conn, envelope, issued.hash, "password_reset", utcnow()
            )
            await asyncio.sleep(0.05)  # both have seen the token usable
            spent = await token_rows.consume(
                conn, envelope, issued.hash, "password_reset", utcnow()
            )
            return found is not None and spent is not None

    results = await asyncio.gather(*(use() for _ in range(5)), return_exceptions=True)
    assert [r for r in results if r is True] == [True], results
    async with db.reading() as conn:
        found = await token_rows.find_usable(
            conn, envelope, issued.hash, "password_reset", utcnow()
        )
        assert found is None


async def test_a_token_is_only_good_for_its_purpose_and_until_voided(app: FastAPI) -> None:
    async with client_for(app) as http:
        user = await register(http, "pur@example.com")
    db, envelope = authkeep_of(app).services.db, authkeep_of(app).services.envelope
    key = EmailTokenKey.from_secret("x" * 40)
    first, second = key.issue(), key.issue()
    user_id = uuid.UUID(user["id"])
    async with db.transaction() as conn:
        for token in (first, second):
            await store_token(
                conn,
                envelope,
                user_id=user_id,
                purpose="email_change",
                token=token,
                email="new@example.com",
                now=utcnow(),
                ttl=timedelta(hours=1),
            )
    async with db.transaction() as conn:
        assert (
            await token_rows.consume(conn, envelope, second.hash, "verify_email", utcnow()) is None
        )
        assert (
            await token_rows.consume(conn, envelope, first.hash, "email_change", utcnow()) is None
        )
        record = await token_rows.consume(conn, envelope, second.hash, "email_change", utcnow())
        assert record is not None
        assert (record.user_id, record.email) == (user_id, "new@example.com")
