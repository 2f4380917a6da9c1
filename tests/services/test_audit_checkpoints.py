"""Checkpoints as a service: incremental signing, the periodic task of ``serve``, the log
stream copy, and the checks ``audit verify --checkpoints`` runs (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit_helpers import dba_execute, rows
from authkeep import Settings, create_app
from authkeep.db.engine import Database
from authkeep.logging import configure_logging
from authkeep.security.audit_signing import CheckpointSigner
from authkeep.services import audit_checkpoints
from authkeep.services.audit import AuditEvent, AuditLog
from authkeep.services.audit_checkpoints import (
    Checkpoint,
    CheckpointScheduler,
    CheckpointWriter,
    read_directory,
    scheduler_from_settings,
    take,
)
from helpers import running

KEY = CheckpointSigner.generate()
ORG = uuid.UUID("3a1f0c9e-2b7d-4e65-9c84-4d4d4d4d4d4d")


async def write(db: Database, count: int, org_id: uuid.UUID | None = None) -> None:
    audit = AuditLog(db)
    for i in range(count):
        await audit.record_alone(AuditEvent("test.event", org_id=org_id, details={"i": i}))


async def test_only_chains_that_moved_are_signed_again(db: Database) -> None:
    await write(db, 2)
    await write(db, 2, ORG)
    first = await take(db, KEY)
    assert sorted(c.chain for c in first.signed) == sorted(["platform", str(ORG)])
    previous = {c.chain: c for c in first.signed}
    await write(db, 1, ORG)
    second = await take(db, KEY, previous=previous)
    assert [c.chain for c in second.signed] == [str(ORG)]
    assert second.signed[0].rows == 3
    assert second.broken == []


async def test_a_chain_rewritten_since_the_last_checkpoint_is_not_signed(
    backend: Any, db: Database
) -> None:
    await write(db, 3)
    previous = {c.chain: c for c in (await take(db, KEY)).signed}
    found = await rows(db)
    await dba_execute(backend, f"DELETE FROM audit_log WHERE id = {found[-1].id}")
    await write(db, 1)  # the chain moves on from the cut tail
    run = await take(db, KEY, previous=previous)
    assert run.signed == []
    [broken] = run.broken
    assert (broken.chain, broken.row_id) == ("platform", found[-1].id)


async def test_a_chain_deleted_since_the_last_checkpoint_is_reported(
    backend: Any, db: Database
) -> None:
    await write(db, 1)
    await write(db, 2, ORG)
    previous = {c.chain: c for c in (await take(db, KEY)).signed}
    await dba_execute(backend, "DELETE FROM audit_log WHERE org_id IS NOT NULL")
    run = await take(db, KEY, previous=previous, retention_days=730)
    assert [(b.chain, b.row_id) for b in run.broken] == [(str(ORG), previous[str(ORG)].head_id)]
    assert "deleted" in run.broken[0].reason


async def test_an_edited_row_after_the_last_checkpoint_is_not_signed(
    backend: Any, db: Database
) -> None:
    await write(db, 2)
    previous = {c.chain: c for c in (await take(db, KEY)).signed}
    await write(db, 2)
    found = await rows(db)
    await dba_execute(backend, f"UPDATE audit_log SET ip = '10.1.1.1' WHERE id = {found[-1].id}")
    run = await take(db, KEY, previous=previous)
    assert [b.row_id for b in run.broken] == [found[-1].id]


async def test_the_scheduler_writes_the_file_and_the_log_stream(
    db: Database, tmp_path: Path, log_output: io.StringIO
) -> None:
    configure_logging("INFO")  # as `serve` does (a CLI test may have left WARNING)
    await write(db, 2)
    scheduler = CheckpointScheduler(db, KEY, CheckpointWriter(tmp_path), interval=3600)
    run = await scheduler.tick()
    [checkpoint] = run.signed
    found = read_directory(tmp_path, [KEY.verifying_key])
    assert (found.checkpoints, found.problems) == ([checkpoint], [])
    logged = [json.loads(line) for line in log_output.getvalue().splitlines()]
    copies = [line["checkpoint"] for line in logged if line["event"] == "audit_checkpoint"]
    # The log stream carries the very line, signature intact, for a collector off the host.
    assert copies == [checkpoint.line()]
    assert Checkpoint.parse(copies[0]).verified_by([KEY.verifying_key])
    # Nothing moved: the next round signs nothing.
    assert (await scheduler.tick()).signed == []


async def test_a_restarted_scheduler_resumes_from_its_newest_checkpoint(
    db: Database, tmp_path: Path
) -> None:
    await write(db, 2)
    await CheckpointScheduler(db, KEY, CheckpointWriter(tmp_path), interval=3600).tick()
    restarted = CheckpointScheduler(db, KEY, CheckpointWriter(tmp_path), interval=3600)
    restarted.start()
    try:
        assert (await restarted.tick()).signed == []
    finally:
        await restarted.stop()


async def test_serve_checkpoints_periodically(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        audit_checkpoint_key=KEY.private_text(),
        audit_checkpoint_dir=tmp_path,
        audit_checkpoint_interval_seconds=1,
    )
    async with running(create_app(settings)):
        found = read_directory(tmp_path, [KEY.verifying_key])
        for _ in range(200):  # a generous bound, not a timing assertion
            if found.checkpoints:
                break
            await asyncio.sleep(0.05)
            found = read_directory(tmp_path, [KEY.verifying_key])
    assert found.problems == []
    # The start-up's own rows (config problems) are in the platform chain: it was signed.
    assert [c.chain for c in found.checkpoints][:1] == ["platform"]


def test_no_key_or_no_interval_means_no_periodic_task(
    make_settings: Callable[..., Settings],
) -> None:
    db = Database("sqlite+aiosqlite://")
    assert scheduler_from_settings(make_settings(), db) is None
    assert (
        scheduler_from_settings(
            make_settings(
                audit_checkpoint_key=KEY.private_text(), audit_checkpoint_interval_seconds=0
            ),
            db,
        )
        is None
    )
    assert isinstance(
        scheduler_from_settings(make_settings(audit_checkpoint_key=KEY.private_text()), db),
        CheckpointScheduler,
    )


async def test_check_names_each_contradiction(backend: Any, db: Database) -> None:
    await write(db, 2)
    await write(db, 2, ORG)
    signed = (await take(db, KEY)).signed
    assert await audit_checkpoints.check(db, signed, retention_days=730) == []
    await dba_execute(backend, "DELETE FROM audit_log WHERE org_id IS NOT NULL")
    [problem] = await audit_checkpoints.check(db, signed, retention_days=730)
    assert problem.startswith(f"chain {ORG} is gone")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: {**d, "rows": d["rows"] + 1},  # altered, signature kept
        lambda d: {**d, "v": 2},
        lambda d: {k: v for k, v in d.items() if k != "kid"},
        lambda d: {**d, "head_id": str(d["head_id"])},
        lambda d: {**d, "at": d["at"].replace("+00:00", "")},
    ],
)
async def test_altered_lines_are_refused(
    db: Database, tmp_path: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    await write(db, 1)
    [checkpoint] = (await take(db, KEY)).signed
    (tmp_path / "checkpoints-x.jsonl").write_text(
        json.dumps(edit(json.loads(checkpoint.line()))) + "\n"
    )
    found = read_directory(tmp_path, [KEY.verifying_key])
    assert found.checkpoints == []
    assert len(found.problems) == 1
