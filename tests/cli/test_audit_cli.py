"""``authkeep audit verify | checkpoint | export | purge`` and ``authkeep migrate`` with
database roles."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from audit_helpers import dba_execute, rows
from authkeep.cli import app
from authkeep.db import audit as audit_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.security.audit_signing import CheckpointSigner
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


# Signed checkpoints (issue 12, defect 7): a database owner who cuts a chain's tail, deletes
# an organization's chain or re-hashes every row leaves plain `audit verify` saying OK; the
# checkpoints signed before catch each of them.

CHECKPOINT_KEY = CheckpointSigner.generate()
ORG = uuid.UUID("5d2c8a51-94c4-4f0e-8a43-3c3c3c3c3c3c")


def keyed(backend: Any, **extra: str) -> dict[str, str]:
    # INFO: `audit checkpoint` configures the process's logging, and the rest of the test
    # session expects the suite's level.
    values = {
        "AUTHKEEP_LOG_LEVEL": "INFO",
        "AUTHKEEP_AUDIT_CHECKPOINT_KEY": CHECKPOINT_KEY.private_text(),
        **extra,
    }
    return env_for(backend, **values)


def seed_chains(backend: Any) -> list[audit_rows.EntryRecord]:
    """Three platform rows and three rows of ``ORG``'s chain."""

    async def run() -> list[audit_rows.EntryRecord]:
        db = Database(backend.database_url)
        try:
            audit = AuditLog(db)
            for i in range(3):
                await audit.record_alone(AuditEvent("test.platform", details={"i": i}))
                await audit.record_alone(AuditEvent("org.updated", org_id=ORG, details={"i": i}))
            return await rows(db)
        finally:
            await db.close()

    return asyncio.run(run())


def checkpoint_now(backend: Any, directory: Path) -> Result:
    result = CliRunner().invoke(
        app, ["audit", "checkpoint", "--dir", str(directory)], env=keyed(backend)
    )
    assert result.exit_code == 0, result.output
    return result


def verify_with(backend: Any, directory: Path, **extra: str) -> Result:
    return CliRunner().invoke(
        app, ["audit", "verify", "--checkpoints", str(directory)], env=keyed(backend, **extra)
    )


def plain_verify_passes(backend: Any) -> None:
    # What the tamper does to today's check: nothing. The checkpoint check must catch it.
    result = CliRunner().invoke(app, ["audit", "verify"], env=env_for(backend))
    assert result.exit_code == 0, result.output


def test_checkpoint_signs_every_chain_head_and_verify_accepts_it(
    backend: Any, tmp_path: Path
) -> None:
    found = seed_chains(backend)
    result = checkpoint_now(backend, tmp_path)
    [written] = list(tmp_path.glob("checkpoints-*.jsonl"))
    lines = [json.loads(line) for line in written.read_text().splitlines()]
    heads = {line["chain"]: line for line in lines}
    assert set(heads) == {"platform", str(ORG)}
    assert heads[str(ORG)]["head_id"] == found[-1].id
    assert heads[str(ORG)]["head_hash"] == found[-1].hash
    assert heads["platform"]["rows"] == 3
    assert all(line["kid"] == CHECKPOINT_KEY.kid for line in lines)
    assert written.name in result.output

    verified = verify_with(backend, tmp_path)
    assert verified.exit_code == 0, verified.output
    assert "ok: 2 signed checkpoints hold" in verified.output

    # A verifier off the host holds only the public key.
    public_only = CliRunner().invoke(
        app,
        [
            "audit",
            "verify",
            "--checkpoints",
            str(tmp_path),
            "--public-key",
            CHECKPOINT_KEY.public_text,
        ],
        env=env_for(backend),
    )
    assert public_only.exit_code == 0, public_only.output


def test_checkpoints_catch_a_cut_tail(backend: Any, tmp_path: Path) -> None:
    found = seed_chains(backend)
    checkpoint_now(backend, tmp_path)
    platform = [row for row in found if row.org_id is None]
    asyncio.run(dba_execute(backend, f"DELETE FROM audit_log WHERE id = {platform[-1].id}"))
    plain_verify_passes(backend)

    result = verify_with(backend, tmp_path)
    assert result.exit_code == 1, result.output
    assert (
        f"chain platform ends at row {platform[-2].id}, before row {platform[-1].id}"
        in result.output
    )
    assert "tail was cut" in result.output
    # Nor does the next scheduled checkpoint bless the cut chain.
    again = CliRunner().invoke(
        app, ["audit", "checkpoint", "--dir", str(tmp_path)], env=keyed(backend)
    )
    assert again.exit_code == 1
    assert f"BROKEN  row {platform[-1].id} (chain platform)" in again.output


def test_checkpoints_catch_a_deleted_organization_chain(backend: Any, tmp_path: Path) -> None:
    seed_chains(backend)
    checkpoint_now(backend, tmp_path)
    asyncio.run(dba_execute(backend, "DELETE FROM audit_log WHERE org_id IS NOT NULL"))
    plain_verify_passes(backend)

    result = verify_with(backend, tmp_path)
    assert result.exit_code == 1, result.output
    assert f"chain {ORG} is gone" in result.output


def rehash_statements(chain: list[audit_rows.EntryRecord]) -> list[str]:
    """Edit the chain's first row and recompute every hash after it, as a forger would."""
    statements = []
    prev = chain[0].prev_hash
    for index, row in enumerate(chain):
        outcome = "failure" if index == 0 else row.outcome
        new_hash = audit_rows.entry_hash(
            at=row.at,
            org_id=row.org_id,
            actor_user_id=row.actor_user_id,
            actor_api_key_id=row.actor_api_key_id,
            request_id=row.request_id,
            ip=row.ip,
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            outcome=outcome,
            details=row.details,
            prev_hash=prev,
        )
        statements.append(
            f"UPDATE audit_log SET outcome = '{outcome}', prev_hash = '{prev}', "
            f"hash = '{new_hash}' WHERE id = {row.id}"
        )
        prev = new_hash
    return statements


def test_checkpoints_catch_a_rehashed_chain(backend: Any, tmp_path: Path) -> None:
    found = seed_chains(backend)
    checkpoint_now(backend, tmp_path)
    org_rows = [row for row in found if row.org_id == ORG]
    asyncio.run(dba_execute(backend, *rehash_statements(org_rows)))
    plain_verify_passes(backend)

    result = verify_with(backend, tmp_path)
    assert result.exit_code == 1, result.output
    assert f"row {org_rows[-1].id} (chain {ORG}) is not the row of the checkpoint" in result.output
    assert "re-hashed" in result.output


def test_checkpoints_catch_a_forged_or_altered_checkpoint(backend: Any, tmp_path: Path) -> None:
    found = seed_chains(backend)
    checkpoint_now(backend, tmp_path)
    [written] = list(tmp_path.glob("checkpoints-*.jsonl"))
    # The forger truncates the chain and edits the checkpoint to match the new head.
    platform = [row for row in found if row.org_id is None]
    asyncio.run(dba_execute(backend, f"DELETE FROM audit_log WHERE id = {platform[-1].id}"))
    altered = written.read_text().replace(
        f'"head_hash":"{platform[-1].hash}","head_id":{platform[-1].id}',
        f'"head_hash":"{platform[-2].hash}","head_id":{platform[-2].id}',
    )
    assert altered != written.read_text()
    written.write_text(altered)
    result = verify_with(backend, tmp_path)
    assert result.exit_code == 1, result.output
    assert f"{written.name}:" in result.output
    assert "bad signature: the checkpoint was altered or forged" in result.output

    # Or signs it with a key of their own.
    forger = CheckpointSigner.generate()
    forged = tmp_path / "checkpoints-2999-01-01.jsonl"
    forged.write_text(
        CliRunner()
        .invoke(
            app,
            ["audit", "checkpoint", "--dir", str(tmp_path / "elsewhere")],
            env=keyed(backend, AUTHKEEP_AUDIT_CHECKPOINT_KEY=forger.private_text()),
        )
        .stdout
    )
    written.unlink()
    result = verify_with(backend, tmp_path)
    assert result.exit_code == 1, result.output
    assert f"signed by key {forger.kid}, which is not trusted" in result.output


def test_verify_fails_closed_without_checkpoints_or_keys(backend: Any, tmp_path: Path) -> None:
    seed_chains(backend)
    empty = verify_with(backend, tmp_path)
    assert empty.exit_code == 1
    assert "no checkpoint found" in empty.output
    checkpoint_now(backend, tmp_path)
    keyless = CliRunner().invoke(
        app, ["audit", "verify", "--checkpoints", str(tmp_path)], env=env_for(backend)
    )
    assert keyless.exit_code == 2
    assert "AUTHKEEP_AUDIT_CHECKPOINT_PUBLIC_KEYS" in keyless.output
    no_key = CliRunner().invoke(
        app, ["audit", "checkpoint", "--dir", str(tmp_path)], env=env_for(backend)
    )
    assert no_key.exit_code == 2
    assert "AUTHKEEP_AUDIT_CHECKPOINT_KEY" in no_key.output


def test_checkpoint_refuses_to_sign_a_broken_chain(backend: Any, tmp_path: Path) -> None:
    found = seed_chains(backend)
    asyncio.run(
        dba_execute(backend, f"UPDATE audit_log SET ip = '10.9.9.9' WHERE id = {found[1].id}")
    )
    result = CliRunner().invoke(
        app, ["audit", "checkpoint", "--dir", str(tmp_path)], env=keyed(backend)
    )
    assert result.exit_code == 1
    assert f"BROKEN  row {found[1].id} (chain {ORG})" in result.output
    # The intact platform chain is still signed; the broken one is not.
    lines = [json.loads(line) for line in next(tmp_path.glob("*.jsonl")).read_text().splitlines()]
    assert [line["chain"] for line in lines] == ["platform"]


def seed_old_chain(backend: Any, org: uuid.UUID) -> None:
    """Rows 800 days old in ``org``'s chain (past the default retention), one young
    platform row."""

    async def run() -> None:
        db = Database(backend.database_url)
        try:
            async with db.transaction() as conn:
                for i in range(2):
                    entry = AuditLog.entry(AuditEvent("test.old", org_id=org), None)
                    await audit_rows.append(conn, entry, at=utcnow() - timedelta(days=800 - i))
            await AuditLog(db).record_alone(AuditEvent("test.new"))
        finally:
            await db.close()

    asyncio.run(run())


def test_checkpoints_stay_verifiable_across_a_retention_purge(backend: Any, tmp_path: Path) -> None:
    old_org = uuid.uuid4()
    seed_old_chain(backend, old_org)
    checkpoint_now(backend, tmp_path)
    extra = {"AUTHKEEP_AUDIT_PURGE_DATABASE_URL": backend.purge_url} if backend.purge_url else {}
    purged = CliRunner().invoke(app, ["audit", "purge"], env=keyed(backend, **extra))
    assert purged.exit_code == 0, purged.output
    assert "purged 2 audit rows" in purged.output
    # The old chain's checkpointed head is gone, by the purge: that is no tamper.
    result = verify_with(backend, tmp_path)
    assert result.exit_code == 0, result.output
    # New checkpoints extend the purged log, and both sets verify together.
    checkpoint_now(backend, tmp_path)
    assert verify_with(backend, tmp_path).exit_code == 0

    # A young checkpointed head is not excused by a purge anchor: deleting it is a tamper.
    newest = asyncio.run(_newest_platform_row(backend))
    asyncio.run(dba_execute(backend, f"DELETE FROM audit_log WHERE id = {newest}"))
    cut = verify_with(backend, tmp_path)
    assert cut.exit_code == 1, cut.output
    assert "tail was cut" in cut.output


async def _newest_platform_row(backend: Any) -> int:
    db = Database(backend.database_url)
    try:
        return max(row.id for row in await rows(db) if row.org_id is None)
    finally:
        await db.close()


def test_checkpoint_key_prints_a_new_pair_and_the_public_half(backend: Any) -> None:
    made = CliRunner().invoke(app, ["audit", "checkpoint-key"], env=env_for(backend))
    assert made.exit_code == 0, made.output
    private = made.output.splitlines()[0].removeprefix("AUTHKEEP_AUDIT_CHECKPOINT_KEY=")
    public = made.output.splitlines()[1].rsplit(" ", 1)[1]
    shown = CliRunner().invoke(
        app,
        ["audit", "checkpoint-key", "--public"],
        env=env_for(backend, AUTHKEEP_AUDIT_CHECKPOINT_KEY=private),
    )
    assert shown.output.strip() == public
    assert CheckpointSigner.from_text(private).public_text == public


def test_verify_shows_progress_when_asked_and_reports_rows_per_second(backend: Any) -> None:
    # Issue 18: a progress bar on stderr (stdout stays the report), only on a terminal or
    # with --progress; the rate at the end either way.
    seed(backend)
    shown = CliRunner().invoke(app, ["audit", "verify", "--progress"], env=env_for(backend))
    assert shown.exit_code == 0, shown.output
    assert "verifying" in shown.stderr
    assert "100%" in shown.stderr
    assert "verifying" not in shown.stdout
    assert re.search(r"^checked 3 rows in [0-9.]+ s \([0-9,]+ rows/s\)$", shown.stdout, re.M)
    quiet = CliRunner().invoke(app, ["audit", "verify"], env=env_for(backend))
    assert quiet.exit_code == 0, quiet.output
    assert "verifying" not in quiet.stderr  # CliRunner's stderr is no terminal
    assert "rows/s" in quiet.stdout
