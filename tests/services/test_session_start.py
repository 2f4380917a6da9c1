"""Opening a session (``Sessions.start``): the same rows on both backends, and on PostgreSQL
one statement for all of them (issue 18, login CPU).

On PostgreSQL a login's writes — the default organization's read, the session, its refresh
token and its audit row — go as one data-modifying statement in autocommit
(``authkeep.db.sessions.open_session``), where they were six round trips (BEGIN, four
statements, COMMIT; seven with the credentials' read). These tests pin what that must not change:
the rows and the audit row, exact on either backend; all or nothing when any part fails,
in the statement or at its commit (where the audit row joins its chain); and the count of
statements, so that a regression shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_helpers import dba_execute
from authkeep.db import audit as audit_rows
from authkeep.db import audit_ips
from authkeep.db import orgs as org_rows
from authkeep.db import sessions as session_rows
from authkeep.db.audit import EntryRecord
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry, AuthSession, Organization, RefreshToken
from authkeep.db.orgs import INVITATION, ActiveOrg
from authkeep.security.permissions import Role
from authkeep.services.accounts import Accounts
from authkeep.services.audit import AuditLog
from authkeep.services.audit_admin import verify
from authkeep.services.context import RequestInfo
from authkeep.services.sessions import Sessions, TokenPair, token_digest
from authkeep.wiring import Services
from helpers import PASSWORD, authkeep_of

postgres_only = pytest.mark.parametrize(
    "backend",
    [pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
)

INFO = RequestInfo(ip="198.51.100.23", user_agent="test-agent/1.0", request_id="req-start-1")


@pytest.fixture
def services(app: FastAPI) -> Services:
    return authkeep_of(app).services


@dataclass
class Login:
    """A login use case on the test's own :class:`Database` (nothing else of the running app
    uses it, so every statement on it is the login's)."""

    sessions: Sessions
    accounts: Accounts
    audit: AuditLog


def _login(services: Services, db: Database, *, audit_enabled: bool = True) -> Login:
    async def publish(_ids: Any) -> None:
        return None

    audit = AuditLog(db, enabled=audit_enabled, envelope=services.envelope)
    accounts = Accounts(
        db, services.hasher, publish, audit, users_changed=publish, envelope=services.envelope
    )
    sessions = Sessions(
        db,
        services.codec,
        accounts,
        publish,
        reuse_interval=timedelta(seconds=10),
        audit=audit,
        envelope=services.envelope,
    )
    return Login(sessions, accounts, audit)


async def _pair(login: Login, email: str) -> TokenPair:
    pair = await login.sessions.login(email, PASSWORD, INFO)
    assert isinstance(pair, TokenPair)
    return pair


async def _count(db: Database, model: Any, user_id: uuid.UUID) -> int:
    """The user's sessions, refresh tokens, or audit rows of a login (``AuditEntry``)."""
    where = (
        [AuditEntry.actor_user_id == user_id, AuditEntry.action == "auth.login"]
        if model is AuditEntry
        else [model.user_id == user_id]
    )
    async with db.reading() as conn:
        query = select(func.count()).select_from(model).where(*where)
        return int((await conn.execute(query)).scalar_one())


async def test_a_login_writes_the_same_rows_on_either_backend(
    services: Services, db: Database
) -> None:
    login = _login(services, db)
    user = await services.accounts.register(email="start@example.com", password=PASSWORD)
    other = await services.accounts.register(email="owner@example.com", password=PASSWORD)
    # The organization a session starts in: the oldest membership the user created or
    # accepted, in a live organization. Older ones that do not qualify come first here.
    base = utcnow() - timedelta(hours=1)
    async with db.transaction() as conn:
        legacy = await org_rows.insert_org(conn, name="Legacy", creator=other.id, now=base)
        await org_rows.insert_member(
            conn, org_id=legacy.id, user_id=user.id, role=Role.ADMIN, now=base, origin="legacy"
        )
        gone = await org_rows.insert_org(
            conn, name="Gone", creator=user.id, now=base + timedelta(minutes=1)
        )
        await conn.execute(
            update(Organization).where(Organization.id == gone.id).values(deleted_at=base)
        )
        invited = await org_rows.insert_org(conn, name="Invited", creator=other.id, now=base)
        await org_rows.insert_member(
            conn,
            org_id=invited.id,
            user_id=user.id,
            role=Role.EDITOR,
            now=base + timedelta(minutes=2),
            origin=INVITATION,
        )
        await org_rows.insert_org(
            conn, name="Newer", creator=user.id, now=base + timedelta(minutes=3)
        )
        expected = await org_rows.default_org(conn, user.id)
    assert expected == ActiveOrg(invited.id, Role.EDITOR)

    pair = await _pair(login, "start@example.com")

    claims = services.codec.decode_access(pair.access_token)
    assert (claims.org_id, claims.role) == (str(invited.id), "editor")
    refresh = services.codec.decode_refresh(pair.refresh_token)
    assert refresh.session_id == str(pair.session_id)
    async with db.reading() as conn:
        stored = await session_rows.get_session(conn, services.envelope, pair.session_id)
        org_of_session = await org_rows.session_org(conn, pair.session_id)
        token = await session_rows.get_refresh(conn, refresh.token_id)
    assert stored is not None
    assert token is not None
    assert org_of_session == expected
    assert (stored.user_id, stored.ip, stored.user_agent) == (user.id, INFO.ip, INFO.user_agent)
    assert (stored.amr, stored.revoked_at) == ("pwd", None)
    assert stored.auth_time == stored.created_at == stored.last_used_at
    assert stored.expires_at == stored.created_at + services.codec.refresh_ttl
    assert (token.user_id, token.session_id) == (user.id, pair.session_id)
    assert token.token_hash == token_digest(pair.refresh_token)
    assert token.created_at == stored.created_at.replace(microsecond=0)
    assert token.expires_at == stored.expires_at
    assert (token.spent_at, token.successor_jti, token.revoked_at) == (None, None, None)

    async with db.reading() as conn:
        logins = [
            row
            for row in await _audit_rows(conn)
            if row.action == "auth.login" and row.actor_user_id == user.id
        ]
        ips = await audit_ips.reveal(conn, services.envelope, logins)
    assert len(logins) == 1
    row = logins[0]
    assert (row.org_id, row.actor_api_key_id, row.outcome) == (None, None, "success")
    assert (row.entity_type, row.entity_id) == ("session", str(pair.session_id))
    assert row.details == {"method": "password", "amr": ["pwd"]}
    assert row.request_id == INFO.request_id
    assert row.ip is not None
    assert row.ip != INFO.ip  # sealed at rest...
    assert ips == [INFO.ip]  # ...with the user's key
    result = await verify(db)
    assert result.ok, result.broken


async def _audit_rows(conn: AsyncConnection) -> list[EntryRecord]:
    return [row async for row in audit_rows.walk(conn)]


async def test_a_user_without_an_organization_gets_a_session_without_one(
    services: Services, db: Database
) -> None:
    login = _login(services, db)
    user = await services.accounts.register(email="solo@example.com", password=PASSWORD)
    pair = await _pair(login, "solo@example.com")
    claims = services.codec.decode_access(pair.access_token)
    assert (claims.org_id, claims.role) == (None, None)
    async with db.reading() as conn:
        org_id = (
            await conn.execute(select(AuthSession.org_id).where(AuthSession.id == pair.session_id))
        ).scalar_one()
    assert org_id is None
    assert await _count(db, RefreshToken, user.id) == 1


async def test_with_the_audit_log_off_the_session_is_written_without_a_row(
    services: Services, db: Database
) -> None:
    login = _login(services, db, audit_enabled=False)
    user = await services.accounts.register(email="quiet@example.com", password=PASSWORD)
    pair = await _pair(login, "quiet@example.com")
    assert await _count(db, AuthSession, user.id) == 1
    assert await _count(db, RefreshToken, user.id) == 1
    assert await _count(db, AuditEntry, user.id) == 0
    async with db.reading() as conn:
        assert await session_rows.get_session(conn, services.envelope, pair.session_id)


# -- PostgreSQL: one statement, all or nothing ----------------------------------------------


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """Every statement the client sends on ``db``'s connections in the block: SQLAlchemy's
    (its asyncpg adapter runs them as prepared statements, which asyncpg's query loggers do
    not see) and those sent to the driver directly, BEGIN and COMMIT included (which the
    loggers do see, and SQLAlchemy's events do not)."""
    sent: list[str] = []

    def logged(record: Any) -> None:
        sent.append(record.query)

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(logged)

    def on_checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.driver_connection.remove_query_logger(logged)

    def on_execute(_conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    engine = db.engine.sync_engine
    hooks = (("checkout", on_checkout), ("checkin", on_checkin))
    for name, hook in hooks:
        event.listen(engine.pool, name, hook)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        for name, hook in hooks:
            event.remove(engine.pool, name, hook)


@postgres_only
async def test_the_statement_counter_sees_begin_and_commit(db: Database) -> None:
    # The counter below must not flatter the login: a transaction of one SQLAlchemy
    # statement is three statements to it.
    async with db.reading() as conn:
        await conn.execute(text("SELECT 1"))  # a warm connection: no first-use queries
    with _statements(db) as sent:
        async with db.transaction() as conn:
            await conn.execute(text("SELECT 2"))
    # (SQLAlchemy's event fires before its adapter sends BEGIN: compare without order.)
    assert sorted(statement.split()[0].upper().rstrip(";") for statement in sent) == [
        "BEGIN",
        "COMMIT",
        "SELECT",
    ]


@postgres_only
async def test_a_login_is_two_statements_on_postgres(services: Services, db: Database) -> None:
    # Was 7: the credentials' read, then BEGIN, the default organization, the session, the
    # refresh token, the audit row, COMMIT.
    login = _login(services, db)
    await services.accounts.register(email="count@example.com", password=PASSWORD)
    await _pair(login, "count@example.com")  # warms the connection and the user's key
    with _statements(db) as sent:
        pair = await _pair(login, "count@example.com")
    assert len(sent) == 2, sent
    credentials, start = sent
    assert credentials.lstrip().upper().startswith("SELECT")
    assert start.startswith("WITH org AS (")
    for table in ("auth_sessions", "refresh_tokens", "audit_pending"):
        assert f"INSERT INTO {table} " in start
    # One statement, in autocommit: committed, and the audit row already in its chain.
    async with db.reading() as conn:
        rows = await _audit_rows(conn)
        pending = (await conn.execute(text("SELECT count(*) FROM audit_pending"))).scalar_one()
    assert pending == 0
    assert [row.entity_id for row in rows if row.action == "auth.login"][-1] == str(pair.session_id)
    result = await verify(db)
    assert result.ok, result.broken


@postgres_only
async def test_with_the_audit_log_off_a_start_is_still_one_statement(
    services: Services, db: Database
) -> None:
    login = _login(services, db, audit_enabled=False)
    user = await services.accounts.register(email="quiet-count@example.com", password=PASSWORD)
    await _pair(login, "quiet-count@example.com")
    with _statements(db) as sent:
        await login.sessions.start(user, INFO)
    assert len(sent) == 1, sent
    assert "audit_pending" not in sent[0]


@postgres_only
@pytest.mark.parametrize(
    "table", ["audit_pending", "audit_log"], ids=["in-the-statement", "at-its-commit"]
)
async def test_a_failing_audit_row_leaves_no_session_token_or_row(
    services: Services, db: Database, backend: Any, table: str
) -> None:
    # audit_pending: the audit row's own insert fails, after the session's and the token's
    # ran. audit_log: the deferred trigger fails, appending the row to its chain at the
    # statement's implicit commit. Either way nothing of the login may remain.
    login = _login(services, db)
    user = await services.accounts.register(email="atomic@example.com", password=PASSWORD)
    await _pair(login, "atomic@example.com")
    before = {
        model: await _count(db, model, user.id) for model in (AuthSession, RefreshToken, AuditEntry)
    }
    constraint = f"test_refuses_logins_{uuid.uuid4().hex[:8]}"
    await dba_execute(
        backend,
        f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK (action <> 'auth.login') NOT VALID",
    )
    try:
        with _statements(db) as sent, pytest.raises(Exception, match=constraint):
            await login.sessions.start(user, INFO)
        assert len(sent) == 1, sent
    finally:
        await dba_execute(backend, f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    after = {
        model: await _count(db, model, user.id) for model in (AuthSession, RefreshToken, AuditEntry)
    }
    assert after == before
    async with db.reading() as conn:
        pending = (await conn.execute(text("SELECT count(*) FROM audit_pending"))).scalar_one()
    assert pending == 0
    # The pooled connection is fine afterwards (no transaction left open on it).
    await login.sessions.start(user, INFO)
    assert await _count(db, AuthSession, user.id) == before[AuthSession] + 1
    result = await verify(db)
    assert result.ok, result.broken


@postgres_only
async def test_the_tables_of_the_statement_have_no_row_level_security(db: Database) -> None:
    # The statement runs in autocommit, outside any transaction that could SET LOCAL the
    # tenant (app.org_id). That is right only while none of its tables has a policy: one
    # that gains one needs Database.tenant_transaction around the statement instead.
    tables = [
        "memberships",
        "organizations",
        "auth_sessions",
        "refresh_tokens",
        "audit_pending",
        "audit_log",
    ]
    async with db.reading() as conn:
        found = dict(
            (
                await conn.execute(
                    text(
                        "SELECT relname, relrowsecurity FROM pg_class "
                        "WHERE relname = ANY(:tables) AND relkind = 'r'"
                    ),
                    {"tables": tables},
                )
            ).all()
        )
    assert found == dict.fromkeys(tables, False)
