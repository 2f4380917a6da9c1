"""Numbers read from the database for metrics, cached briefly so scrapes stay cheap."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuthSession


class SessionStats:
    """The number of live sessions, recomputed at most every ``ttl_seconds``.

    Counted in the database at scrape time rather than kept in a gauge: a gauge maintained
    by each worker would drift (expiry happens without any event) and would need special
    care in multiprocess mode.
    """

    def __init__(self, db: Database, ttl_seconds: float = 10.0) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._value = 0
        self._until = 0.0

    async def active_sessions(self) -> int:
        """Sessions neither revoked nor expired."""
        now = time.monotonic()
        if now >= self._until:
            async with self._db.reading() as conn:
                self._value = int(
                    (
                        await conn.execute(
                            select(func.count())
                            .select_from(AuthSession)
                            .where(
                                AuthSession.revoked_at.is_(None), AuthSession.expires_at > utcnow()
                            )
                        )
                    ).scalar_one()
                )
            self._until = now + self._ttl
        return self._value
