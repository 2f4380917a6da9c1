"""Shared fixtures: every database-backed test runs on SQLite and on PostgreSQL + Redis.

PostgreSQL and Redis are real servers (``AUTHKEEP_TEST_PG_URL``, ``AUTHKEEP_TEST_REDIS_URL``;
defaults: the local ones). Each test session creates its own PostgreSQL database and drops it
at the end; each test gets its own Redis key prefix. Where a server is absent the tests that
need it are skipped with the reason, except when ``CI`` is set: then a missing server fails.

On PostgreSQL the roles are production's: migrations run as the admin user (the owner), and
the app under test connects as a per-session app role (LOGIN NOSUPERUSER NOBYPASSRLS, only
the grants the migrations give it); a per-session purge role exists for the audit purge.

Every log line of the whole session is captured as production renders it and checked, at
the end, for secrets (:func:`suite_log_capture`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from authkeep import Settings, create_app
from authkeep.db.engine import Database
from authkeep.db.migrate import upgrade
from authkeep.db.roles import RoleConfig
from authkeep.logging import configure_logging, formatter
from helpers import PASSWORD, client_for, running
from mail_helpers import SMTP_PASSWORD, SmtpSink
from servers import RedisProcess

PG_ADMIN_URL = os.environ.get("AUTHKEEP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AUTHKEEP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
# Roles are cluster-wide: unique names keep concurrent test sessions apart.
_SESSION_TAG = uuid.uuid4().hex[:10]
PG_APP_ROLE = f"authkeep_app_{_SESSION_TAG}"
PG_PURGE_ROLE = f"authkeep_purge_{_SESSION_TAG}"


def unavailable(what: str, reason: str) -> None:
    """Skip (laptop) or fail (CI) a test whose server is missing."""
    message = f"{what} is not reachable ({reason})"
    if IN_CI:
        pytest.fail(f"{message}; CI is set, so this is a failure, not a skip")
    pytest.skip(f"{message}; start it to run these tests")


async def _pg_admin(sql: list[str], database: str = "test") -> None:
    import asyncpg

    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


def pg_async_url(database: str, user: str | None = None) -> str:
    """SQLAlchemy URL of a database on the test server (as the admin user by default)."""
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{database}"
    if user is None:
        return url
    return make_url(url).set(username=user, password=None).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards), migrated by
    the admin user with :data:`PG_APP_ROLE` and :data:`PG_PURGE_ROLE` configured."""
    name = f"authkeep_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(
            _pg_admin(
                [
                    f'CREATE DATABASE "{name}"',
                    f"CREATE ROLE {PG_APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB "
                    "NOCREATEROLE",
                    f"CREATE ROLE {PG_PURGE_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB "
                    "NOCREATEROLE",
                ]
            )
        )
    except Exception as exc:
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")

    async def migrate() -> None:
        db = Database(pg_async_url(name))
        try:
            await upgrade(
                db, role_config=RoleConfig(app_role=PG_APP_ROLE, purge_role=PG_PURGE_ROLE)
            )
        finally:
            await db.close()

    asyncio.run(migrate())
    yield name
    asyncio.run(
        _pg_admin(
            [
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f"DROP ROLE IF EXISTS {PG_APP_ROLE}",
                f"DROP ROLE IF EXISTS {PG_PURGE_ROLE}",
            ]
        )
    )


@pytest.fixture(scope="session")
def redis_available() -> str:
    """The Redis URL, after checking that it answers."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        unavailable("Redis", f"{type(exc).__name__}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("template") / "authkeep.db"

    async def migrate() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade(db)
        finally:
            await db.close()

    asyncio.run(migrate())
    return path


async def _truncate_pg(database: str) -> None:
    import asyncpg

    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    conn = await asyncpg.connect(url, timeout=5)
    try:
        tables = [
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                # Schema state, not test data: the migrations wrote these rows.
                "AND tablename NOT IN ('alembic_version', 'audit_policy')"
            )
        ]
        sequences = [
            row["relname"]
            for row in await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S' AND n.nspname = 'public'"
            )
        ]
        # Replica mode skips user triggers for this session (the audit log's append-only
        # guard must not stop the per-test reset) and the foreign-key triggers (so the
        # order of the DELETEs does not matter). DELETE, not TRUNCATE: a test leaves a few
        # rows, and TRUNCATE makes and syncs new files for every table and index, about
        # eight times as long per test.
        await conn.execute(
            "SET session_replication_role = replica;"
            + "".join(f'DELETE FROM "{table}";' for table in tables)
            + "".join(f'ALTER SEQUENCE "{sequence}" RESTART;' for sequence in sequences)
        )
    finally:
        await conn.close()


@dataclass
class Backend:
    """Where a test's data lives."""

    name: str
    database_url: str
    redis_url: str | None
    redis_prefix: str
    owner_url: str | None = None
    """Where migrations and a DBA connect (the admin user on PostgreSQL)."""
    purge_url: str | None = None
    """The audit purge role's login (PostgreSQL only)."""

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgres"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """SQLite with in-process state, or PostgreSQL + Redis: each test runs on both."""
    prefix = f"authkeep-test:{uuid.uuid4().hex[:12]}:"
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "authkeep.db"
        shutil.copy(template, path)
        url = f"sqlite+aiosqlite:///{path}"
        return Backend("sqlite", url, None, prefix, owner_url=url)
    database: str = request.getfixturevalue("pg_database")
    redis_url: str = request.getfixturevalue("redis_available")
    asyncio.run(_truncate_pg(database))
    return Backend(
        "postgres",
        pg_async_url(database, PG_APP_ROLE),
        redis_url,
        prefix,
        owner_url=pg_async_url(database),
        purge_url=pg_async_url(database, PG_PURGE_ROLE),
    )


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Database]:
    """A :class:`Database` on the test's backend (the app role on PostgreSQL), closed after."""
    database = Database(backend.database_url)
    try:
        yield database
    finally:
        await database.close()


GENEROUS_LIMITS: dict[str, Any] = {
    "rate_limit_per_minute": 1_000_000,
    "login_rate_limit": "100000/minute",
    "login_ip_failure_limit": "100000/minute",
    "login_account_failure_limits": "100000/minute; 100000/day",
    "register_rate_limit": "100000/minute",
    "refresh_rate_limit": "100000/minute",
    "password_change_rate_limit": "100000/minute",
    "password_strength_rate_limit": "100000/minute",
    "mail_recipient_rate_limit": "100000/minute",
    "mail_ip_rate_limit": "100000/minute",
    "mfa_rate_limit": "100000/minute",
    "export_rate_limit": "100000/minute",
    # No challenge after failed logins (tests/http/test_login_challenge.py sets its own).
    "challenge_after_failures": 0,
}

CHEAP_HASHING: dict[str, Any] = {"argon2_memory_kib": 8 * 1024, "argon2_time_cost": 1}
"""argon2id at the lowest cost the settings accept (about 7 ms a hash instead of 50): the
default of :func:`make_settings`, since nearly every test registers and logs in, and a test
about something else learns nothing from production's cost."""

PRODUCTION_HASHING: dict[str, Any] = {
    name: Settings.model_fields[name].default
    for name in ("argon2_memory_kib", "argon2_time_cost", "argon2_parallelism")
}
"""The shipped argon2id cost, for the tests about hashing itself (the stored parameters,
the upgrade of a legacy hash, response times that must not depend on an account)."""


@pytest.fixture
def make_settings(backend: Backend) -> Callable[..., Settings]:
    """Build test settings on the current backend; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "secret_key": TEST_SECRET,
            "database_url": backend.database_url,
            "redis_url": backend.redis_url,
            "redis_prefix": backend.redis_prefix,
            "hash_workers": 2,
            **CHEAP_HASHING,
        }
        # Rate limiting stays on (every request still goes through the limiter) but with
        # budgets no test of another feature reaches; tests/http/test_rate_limits.py and
        # friends pass their own.
        values.update(GENEROUS_LIMITS)
        if backend.is_postgres:
            values.update(
                migration_database_url=backend.owner_url,
                database_app_role=PG_APP_ROLE,
                audit_purge_role=PG_PURGE_ROLE,
                audit_purge_database_url=backend.purge_url,
            )
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    """The authkeep service on the current backend, started."""
    application = create_app(make_settings())
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for :func:`app`."""
    async with client_for(app) as http:
        yield http


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything logged during the test, rendered exactly as production renders it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


# What must never appear in a log line, whatever the test did.
_LEAKS = (
    re.compile(re.escape(PASSWORD)),
    re.compile(re.escape(TEST_SECRET)),
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+"),
    re.compile(r"\$argon2(?:id|i|d)\$"),
    re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{20}"),
    re.compile(r"\bak_[A-Za-z0-9_-]{16,}"),
    re.compile(re.escape(SMTP_PASSWORD)),
)


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free loopback port, without authentication;
    ``smtp_server.settings()`` points authkeep at it."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="session", autouse=True)
def suite_log_capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every log line of the whole session, rendered by the production formatter into a
    file; at the end, no line may hold a test password, the test secret, a JWT, a password
    hash or an API key. Redaction is thus tested against everything the suite makes the code
    log, not only against the cases a redaction test thought of."""
    path = tmp_path_factory.mktemp("logs") / "suite.log"
    # structlog's default configuration prints straight to stdout, past every handler:
    # route it through the standard library (and so through this handler) from the start.
    configure_logging("INFO")
    stream = path.open("w", encoding="utf-8")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    handler.set_name("authkeep-suite-capture")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        stream.close()
    leaks = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if any(pattern.search(line) for pattern in _LEAKS):
                leaks.append(f"{path}:{number}: {line.strip()[:300]}")
    if leaks:
        pytest.fail(
            f"{len(leaks)} log line(s) of this session hold a secret:\n" + "\n".join(leaks[:10]),
            pytrace=False,
        )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test alone, on a free port: nothing else talks to it, and it
    can be stopped (outages) or counted."""
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
