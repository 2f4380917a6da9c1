"""The database handle: one async engine, write transactions and cheap reads.

Two SQLite details matter for correctness under concurrency:

* write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the lock
  (``busy_timeout``) instead of failing with "database is locked" when one of them read
  first and the other committed in between;
* WAL journaling lets readers go on while one writer writes.

On PostgreSQL, reads run in autocommit mode: one round trip instead of BEGIN/SELECT/ROLLBACK.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

_WRITE = "authkeep_write"

ORG_SETTING = "app.org_id"
"""The PostgreSQL setting that row-level security policies compare ``organization_id`` with;
set per transaction (``set_config(..., true)``, i.e. ``SET LOCAL``) from a verified caller."""


async def set_local(conn: AsyncConnection, name: str, value: str) -> None:
    """Set a PostgreSQL setting until the current transaction ends (nothing on SQLite).

    Transaction-scoped on purpose: a pooled connection handed to the next request must not
    keep the previous request's organization (cross-tenant leak through the pool).
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value}
        )


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """Owns the engine. Build one per application; close it in the lifespan."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            # A file database: pooled connections; in-memory databases are per connection,
            # which authkeep does not support (tests use a temporary file).
            kwargs["connect_args"] = {"timeout": 15}
        elif self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        else:
            kwargs["poolclass"] = NullPool
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self.engine)
            self._read_engine = self.engine
            self._read_tx_engine = self.engine
        else:
            self._read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._read_tx_engine = self.engine.execution_options(postgresql_readonly=True)
        self._write_engine = self.engine.execution_options(**{_WRITE: True})

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL."""
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        async with self._write_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads that change nothing."""
        async with self._read_engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def read_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for reads that need transaction-scoped settings (``READ ONLY`` on
        PostgreSQL); rolled back at the end, as nothing in it may write."""
        async with self._read_tx_engine.connect() as conn, conn.begin() as tx:
            yield conn
            await tx.rollback()

    @asynccontextmanager
    async def tenant_transaction(self, org_id: uuid.UUID) -> AsyncIterator[AsyncConnection]:
        """A write transaction bound to one organization: on PostgreSQL, row-level security
        then shows and accepts only that organization's rows of tenant tables. On SQLite the
        binding is a no-op: queries must filter on ``organization_id`` themselves."""
        async with self.transaction() as conn:
            await set_local(conn, ORG_SETTING, str(org_id))
            yield conn

    @asynccontextmanager
    async def tenant_reading(self, org_id: uuid.UUID) -> AsyncIterator[AsyncConnection]:
        """Reads bound to one organization (see :meth:`tenant_transaction`)."""
        async with self.read_transaction() as conn:
            await set_local(conn, ORG_SETTING, str(org_id))
            yield conn

    async def ping(self) -> None:
        """Raise if the database does not answer."""
        async with self.reading() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
