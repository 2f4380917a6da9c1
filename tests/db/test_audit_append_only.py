"""``audit_log`` is append-only at the database level, and the retention purge is the one
deletion — on SQLite (triggers) and on PostgreSQL (grants, a guard trigger and roles)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from audit_helpers import rows
from authkeep.db import audit as audit_rows
from authkeep.db import roles
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.services.audit import Action, AuditEvent, AuditLog
from authkeep.services.audit_admin import purge, verify

ORG = uuid.UUID("11111111-2222-4333-8444-555555555555")
# Runs only on the PostgreSQL backend (roles, grants and superusers do not exist on SQLite).
postgres_only = pytest.mark.parametrize(
    "backend",
    [pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
)


async def _seed(db: Database, *, old: int = 0, new: int = 1, org: uuid.UUID | None = None) -> None:
    """``old`` rows three years back, then ``new`` rows now, in one chain."""
    async with db.transaction() as conn:
        for i in range(old):
            entry = AuditLog.entry(AuditEvent("test.old", details={"i": i}, org_id=org), None)
            await audit_rows.append(conn, entry, at=utcnow() - timedelta(days=1100 - i))
    audit = AuditLog(db)
    for i in range(new):
        await audit.record_alone(AuditEvent("test.new", details={"i": i}, org_id=org))


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET outcome = 'failure'", "DELETE FROM audit_log"],
)
async def test_the_app_cannot_update_or_delete(db: Database, statement: str) -> None:
    await _seed(db, old=1, new=1)
    with pytest.raises(DBAPIError) as caught:
        async with db.transaction() as conn:
            await conn.execute(text(statement))
    message = str(caught.value).lower()
    # SQLite: the trigger; PostgreSQL: the app role has no such grant at all.
    assert "append-only" in message or "permission denied" in message
    assert len(await rows(db)) == 2


@postgres_only
async def test_the_app_role_cannot_truncate_or_disable_the_guard(
    backend: Any, db: Database
) -> None:
    await _seed(db)
    for statement in (
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "DROP TRIGGER audit_log_append_only ON audit_log",
    ):
        with pytest.raises(DBAPIError, match=r"(?i)permission denied|must be owner"):
            async with db.transaction() as conn:
                await conn.execute(text(statement))
    assert len(await rows(db)) == 1


async def _superuser(backend: Any) -> Any:
    import asyncpg

    url = make_url(backend.owner_url).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


@postgres_only
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET outcome = 'failure'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE action = 'test.old'",
        "TRUNCATE audit_log",
    ],
)
async def test_the_trigger_stops_even_a_superuser(
    backend: Any, db: Database, statement: str
) -> None:
    import asyncpg

    await _seed(db, old=1, new=1)
    conn = await _superuser(backend)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)
    finally:
        await conn.close()
    assert len(await rows(db)) == 2


@postgres_only
async def test_the_purge_role_deletes_only_rows_past_retention(backend: Any, db: Database) -> None:
    await _seed(db, old=2, new=1)
    purger = Database(backend.purge_url)
    try:
        for statement in ("UPDATE audit_log SET outcome = 'failure'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match=r"append-only|permission denied"):
                async with purger.transaction() as conn:
                    await conn.execute(text(statement))
        async with purger.transaction() as conn:
            deleted = await conn.execute(text("DELETE FROM audit_log WHERE action = 'test.old'"))
        assert deleted.rowcount == 2
    finally:
        await purger.close()
    assert [row.action for row in await rows(db)] == ["test.new"]


@postgres_only
async def test_a_temp_table_cannot_shorten_the_retention(backend: Any, db: Database) -> None:
    # The guard reads its policy schema-qualified, with pg_temp last on its search_path: a
    # purge role's TEMP audit_policy (retention 0 days) is never consulted.
    await _seed(db, new=1)
    purger = Database(backend.purge_url)

    async def shadow_then_delete() -> None:
        async with purger.transaction() as conn:
            await conn.execute(
                text(
                    "CREATE TEMP TABLE audit_policy AS "
                    "SELECT 1 AS id, 0 AS retention_days, current_user::text AS purge_role"
                )
            )
            await conn.execute(text("DELETE FROM audit_log"))

    try:
        with pytest.raises(DBAPIError, match="append-only"):
            await shadow_then_delete()
    finally:
        await purger.close()
    assert len(await rows(db)) == 1


async def test_retention_purge_deletes_only_old_rows_and_keeps_the_chain(
    backend: Any, db: Database
) -> None:
    await _seed(db, old=3, new=2)
    await _seed(db, old=2, new=0, org=ORG)
    target = Database(backend.purge_url or backend.database_url)
    try:
        report = await purge(target, retention_days=730)
    finally:
        await target.close()
    assert report.deleted == 5
    assert set(report.anchors) == {"platform", str(ORG)}
    remaining = await rows(db)
    assert [row.action for row in remaining] == ["test.new", "test.new", Action.AUDIT_PURGED]
    assert remaining[-1].details["deleted"] == 5
    # The purged org chain goes on from its anchor; everything still verifies.
    await AuditLog(db).record_alone(AuditEvent("test.after", org_id=ORG))
    result = await verify(db)
    assert result.ok, result.broken
    # Nothing is old any more: a second purge deletes nothing and records nothing.
    target = Database(backend.purge_url or backend.database_url)
    try:
        assert (await purge(target, retention_days=730)).deleted == 0
    finally:
        await target.close()
    assert len(await rows(db, Action.AUDIT_PURGED)) == 1


async def test_after_a_purge_the_guard_is_back(backend: Any, db: Database) -> None:
    await _seed(db, old=1, new=1)
    target = Database(backend.purge_url or backend.database_url)
    try:
        await purge(target, retention_days=730)
    finally:
        await target.close()
    with pytest.raises(DBAPIError):
        async with db.transaction() as conn:
            await conn.execute(text("DELETE FROM audit_log"))
    assert len(await rows(db)) == 2


@postgres_only
async def test_the_app_role_cannot_purge(backend: Any, db: Database) -> None:
    await _seed(db, old=1, new=0)
    with pytest.raises(DBAPIError, match=r"(?i)permission denied"):
        await purge(db, retention_days=730)
    assert len(await rows(db)) == 1


@postgres_only
async def test_roles_refuse_a_superuser_or_missing_app_role(backend: Any) -> None:
    owner = Database(backend.owner_url)
    try:
        for role in ("postgres", "authkeep_no_such_role"):
            async with owner.transaction() as conn:
                with pytest.raises(roles.RoleError):
                    await conn.run_sync(roles.apply, roles.RoleConfig(app_role=role))
    finally:
        await owner.close()


@postgres_only
async def test_the_app_role_has_exactly_its_grants(backend: Any, db: Database) -> None:
    app_role = make_url(backend.database_url).username
    assert app_role is not None
    assert app_role.startswith("authkeep_app_")
    async with db.reading() as conn:
        assert await roles.connection_problems(conn) == []
        granted = {
            (table, privilege)
            for table in ("audit_log", "users", "alembic_version", "audit_policy")
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
            if (
                await conn.execute(
                    text("SELECT has_table_privilege(:role, :table, :privilege)"),
                    {"role": app_role, "table": table, "privilege": privilege},
                )
            ).scalar_one()
        }
    assert {p for t, p in granted if t == "audit_log"} == {"SELECT", "INSERT"}
    assert {p for t, p in granted if t == "users"} == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert not {p for t, p in granted if t in ("alembic_version", "audit_policy")}
    owner = Database(backend.owner_url)
    try:
        async with owner.reading() as conn:
            problems = await roles.connection_problems(conn)
    finally:
        await owner.close()
    assert any("superuser" in problem for problem in problems)
