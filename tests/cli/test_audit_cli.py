"""``authkeep audit verify | export | purge`` and ``authkeep migrate`` with database roles."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from audit_helpers import dba_execute, rows
from authkeep.cli import app
from authkeep.db import audit as audit_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.services.audit import AuditEvent, AuditLog

SECRET = "cli-audit-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def env_for(backend: Any, **extra: str) -> dict[str, str]:
    values = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": SECRET,
        "AUTHKEEP_DATABASE_URL": backend.database_url,
        "AUTHKEEP_LOG_LEVEL": "WARNING",
    }
    values.update(extra)
    return values


def seed(backend: Any, *, old: int = 0, new: int = 3) -> list[audit_rows.EntryRecord]:
    async def run() -> list[audit_rows.EntryRecord]:
        db = Database(backend.database_url)
        try:
            async with db.transaction() as conn:
                for i in range(old):
                    entry = AuditLog.entry(AuditEvent("test.old", details={"i": i}), None)
                    await audit_rows.append(conn, entry, at=utcnow() - timedelta(days=800 - i))
            audit = AuditLog(db)
            for i in range(new):
                await audit.record_alone(
                    AuditEvent("test.new", "failure" if i % 2 else "success", details={"i": i})
                )
            return await rows(db)
        finally:
            await db.close()

    return asyncio.run(run())


def test_verify_reports_heads_then_names_a_tampered_row(backend: Any) -> None:
    found = seed(backend)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"], env=env_for(backend))
    assert ok.exit_code == 0, ok.output
    assert "ok: 3 rows in 1 chains" in ok.output
    assert found[-1].hash in ok.output

    asyncio.run(
        dba_execute(
            backend,
            f"UPDATE audit_log SET ip = '10.9.9.9' WHERE id = {found[1].id}",
        )
    )
    broken = runner.invoke(app, ["audit", "verify"], env=env_for(backend))
    assert broken.exit_code == 1
    assert f"BROKEN  row {found[1].id} " in broken.output


def test_export_prints_json_lines_with_filters(backend: Any) -> None:
    seed(backend)
    runner = CliRunner()
    everything = runner.invoke(app, ["audit", "export"], env=env_for(backend))
    assert everything.exit_code == 0, everything.output
    lines = [json.loads(line) for line in everything.output.splitlines()]
    assert [line["details"]["i"] for line in lines] == [0, 1, 2]
    assert all(len(line["hash"]) == 64 for line in lines)
    failures = runner.invoke(
        app,
        ["audit", "export", "--outcome", "failure", "--org", "platform", "--action", "test.new"],
        env=env_for(backend),
    )
    assert [json.loads(line)["details"]["i"] for line in failures.output.splitlines()] == [1]
    none = runner.invoke(
        app,
        ["audit", "export", "--since", (utcnow() + timedelta(days=1)).date().isoformat()],
        env=env_for(backend),
    )
    assert none.output == ""
    bad = runner.invoke(app, ["audit", "export", "--actor", "bob"], env=env_for(backend))
    assert bad.exit_code == 2


def test_purge_deletes_rows_past_retention(backend: Any) -> None:
    seed(backend, old=2, new=1)
    extra = {"AUTHKEEP_AUDIT_PURGE_DATABASE_URL": backend.purge_url} if backend.purge_url else {}
    result = CliRunner().invoke(app, ["audit", "purge"], env=env_for(backend, **extra))
    assert result.exit_code == 0, result.output
    assert "purged 2 audit rows" in result.output
    verified = CliRunner().invoke(app, ["audit", "verify"], env=env_for(backend))
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize(
    "backend",
    [pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
)
def test_on_postgres_purge_needs_its_own_login(backend: Any) -> None:
    seed(backend, old=1, new=0)
    result = CliRunner().invoke(app, ["audit", "purge"], env=env_for(backend))
    assert result.exit_code == 2
    assert "AUTHKEEP_AUDIT_PURGE_DATABASE_URL" in result.output


@pytest.mark.parametrize(
    "backend",
    [pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
)
def test_migrate_runs_as_the_owner_and_grants_the_app_role(backend: Any) -> None:
    from sqlalchemy.engine import make_url

    app_role = make_url(backend.database_url).username
    assert app_role is not None
    result = CliRunner().invoke(
        app,
        ["migrate"],
        env=env_for(
            backend,
            AUTHKEEP_MIGRATION_DATABASE_URL=backend.owner_url,
            AUTHKEEP_DATABASE_APP_ROLE=app_role,
            AUTHKEEP_AUDIT_PURGE_ROLE=make_url(backend.purge_url).username or "",
        ),
    )
    assert result.exit_code == 0, result.output
    # Migrating as the restricted app role itself is refused by the database.
    as_app = CliRunner().invoke(app, ["migrate"], env=env_for(backend))
    assert as_app.exit_code != 0
