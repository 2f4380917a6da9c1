"""The database handle: one async engine, write transactions and cheap reads.

Two SQLite details matter for correctness under concurrency:

* write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the lock
  (``busy_timeout``) instead of failing with "database is locked" when one of them read
  first and the other committed in between;
* WAL journaling lets readers go on while one writer writes.

On PostgreSQL, reads run in autocommit mode: one round trip instead of BEGIN/SELECT/ROLLBACK.
A pooled connection is pinged only when it sat idle for :data:`PING_AFTER_IDLE_SECONDS`
(SQLAlchemy's ``pool_pre_ping`` would add three round trips to every checkout, doubling the
database work of a login); a connection that broke while in use — a restart under load — is
reported as an outage (503) once, and SQLAlchemy then replaces every pooled connection.

TLS (:mod:`authkeep.tls`): the ``ssl`` argument of every new PostgreSQL connection comes from
a :class:`~authkeep.tls.DatabaseTLS`; a handshake that fails for a reason a retry does not
cure (an unknown CA, a certificate for another host, a server without TLS) is raised as
:class:`~authkeep.tls.TLSError`, one line naming the setting to fix, wherever the connection
was first needed (the start of the service, a migration, a request, ``/health/ready``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from authkeep.db import after_commit
from authkeep.tls import DatabaseTLS, TLSError

_WRITE = "authkeep_write"
PING_AFTER_IDLE_SECONDS = 5.0

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


def _outage_errors() -> tuple[type[BaseException], ...]:
    import asyncpg.exceptions as pg

    return (
        ConnectionError,  # refused or reset: the server is down or restarting
        TimeoutError,
        pg.PostgresConnectionError,  # SQLSTATE class 08, "connection was closed" included
        pg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
        pg.AdminShutdownError,  # 57P01: the server is shutting down
        pg.CrashShutdownError,  # 57P02: another backend crashed
        pg.TooManyConnectionsError,  # 53300: full, try again later
    )


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database does not answer right now" (an outage or restart
    that a retry may outlive), as opposed to a bug or a refused statement.

    SQLAlchemy reports some outages as ``DBAPIError`` (an invalidated connection, or the
    driver's error as the cause) and lets others through raw (a refused connect), so the
    whole chain of causes is inspected.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    outage = _outage_errors()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, outage):
            return True
        nxt = current.orig if isinstance(current, DBAPIError) else None
        current = nxt or current.__cause__ or current.__context__
    return False


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


def _install_idle_ping(engine: AsyncEngine) -> None:
    # SQLAlchemy's documented "pessimistic" recipe, limited to idle connections: raising
    # DisconnectionError from checkout makes the pool retry with a fresh connection.
    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("stale pooled connection") from exc


def _install_tls_errors(engine: AsyncEngine, tls: DatabaseTLS, url: str) -> None:
    # SQLAlchemy's documented hook for making the DBAPI connection ourselves: the same call
    # it would make, with a TLS failure renamed after the setting that caused it.
    @event.listens_for(engine.sync_engine, "do_connect")
    def _on_connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            reason = tls.explain(exc, url)
            if reason is None:
                raise
            raise TLSError(reason) from exc


class Database:
    """Owns the engine. Build one per application; close it in the lifespan.

    ``tls`` sets the TLS of PostgreSQL connections (ignored on SQLite); by default the URL's
    own choice. Raises :class:`~authkeep.tls.TLSError` when its CA file cannot be loaded.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        tls: DatabaseTLS | None = None,
    ) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        self.tls = tls or DatabaseTLS()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            # A file database: pooled connections; in-memory databases are per connection,
            # which authkeep does not support (tests use a temporary file).
            kwargs["connect_args"] = {"timeout": 15}
        elif self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
            ssl_arg = self.tls.connect_arg()
            if ssl_arg is not None:
                # Overrides the URL's ?ssl= (SQLAlchemy lets connect_args win).
                kwargs["connect_args"] = {"ssl": ssl_arg}
        else:
            kwargs["poolclass"] = NullPool
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "postgresql":
            _install_idle_ping(self.engine)
            _install_tls_errors(self.engine, self.tls, url)
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
        """A write transaction: committed when the block ends, rolled back if it raises.
        Callbacks registered with :func:`authkeep.db.after_commit.after_commit` run after
        the commit (e.g. the outbox waking its worker)."""
        opened: AsyncConnection | None = None
        try:
            async with self._write_engine.begin() as conn:
                opened = conn
                yield conn
        except BaseException:
            if opened is not None:
                after_commit.discard(opened)
            raise
        after_commit.run(conn)

    @asynccontextmanager
    async def schema_transaction(self) -> AsyncIterator[AsyncConnection]:
        """The migrations' write transaction. On SQLite, foreign-key enforcement is off
        inside it and checked (``PRAGMA foreign_key_check``) before the commit, as SQLite's
        procedure for schema changes asks: Alembic's batch mode rebuilds a table by dropping
        the old one, and a DROP TABLE under enforcement deletes every row that references
        it through ON DELETE CASCADE (a users rebuild would empty sessions, memberships...).
        The pragma only takes effect outside a transaction, hence set before BEGIN."""
        if self.dialect != "sqlite":
            async with self.transaction() as conn:
                yield conn
            return
        async with self._write_engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            await driver.execute("PRAGMA foreign_keys=OFF")
            try:
                async with conn.begin():
                    yield conn
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"foreign keys broken by a migration: {broken[:5]}")
            finally:
                await driver.execute("PRAGMA foreign_keys=ON")

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
