"""Queries on ``consents``: each user's latest decision per consent purpose.

A decision is one statement, ``INSERT … ON CONFLICT (user_id, purpose) DO UPDATE … WHERE``
the stored decision differs (:func:`decide`): concurrent requests for one user and purpose
leave one row, and only a request that changed something gets a row back (so only a change
is audited).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.models import Consent

__all__ = ["ConsentRecord", "decide", "for_user", "get", "insert_grants"]

_TABLE = Consent.__table__


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """A stored decision: ``granted`` (True) or withdrawn (False) for ``version``."""

    purpose: str
    version: str
    granted: bool
    at: datetime


_COLUMNS = (Consent.purpose, Consent.version, Consent.granted, Consent.at)


async def for_user(conn: AsyncConnection, user_id: uuid.UUID) -> dict[str, ConsentRecord]:
    """Every stored decision of the user, by purpose."""
    rows = await conn.execute(select(*_COLUMNS).where(Consent.user_id == user_id))
    return {row.purpose: ConsentRecord(*row) for row in rows}


async def get(conn: AsyncConnection, user_id: uuid.UUID, purpose: str) -> ConsentRecord | None:
    """The user's decision on ``purpose``, if any (one primary-key look-up)."""
    row = (
        await conn.execute(
            select(*_COLUMNS).where(Consent.user_id == user_id, Consent.purpose == purpose)
        )
    ).first()
    return ConsentRecord(*row) if row else None


async def insert_grants(
    conn: AsyncConnection, user_id: uuid.UUID, grants: Mapping[str, str], now: datetime
) -> None:
    """Store the grants of a new account (purpose -> version), in one statement."""
    if not grants:
        return
    await conn.execute(
        insert(Consent),
        [
            {"user_id": user_id, "purpose": p, "version": v, "granted": True, "at": now}
            for p, v in grants.items()
        ],
    )


async def decide(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    purpose: str,
    *,
    version: str,
    granted: bool,
    now: datetime,
) -> ConsentRecord | None:
    """Store the user's decision on ``purpose``; the stored row when it changed something
    (a first decision, or another version or answer), None when it was already so."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_TABLE).values(
        user_id=user_id, purpose=purpose, version=version, granted=granted, at=now
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[Consent.user_id, Consent.purpose],
        set_={"version": excluded.version, "granted": excluded.granted, "at": excluded.at},
        where=or_(Consent.version != excluded.version, Consent.granted != excluded.granted),
    ).returning(*_COLUMNS)
    row = (await conn.execute(statement)).first()
    return ConsentRecord(*row) if row else None
