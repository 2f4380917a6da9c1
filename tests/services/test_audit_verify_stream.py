"""``audit_admin.verify`` streams the log in pages (issue 18): a tampered row deep inside a
long log is still found, with the reason, and progress is reported page by page — on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from audit_helpers import dba_execute, rows
from authkeep.db import audit as audit_rows
from authkeep.db import audit_scan
from authkeep.db.audit import NewEntry
from authkeep.db.engine import Database
from authkeep.services import audit_verify
from authkeep.services.audit_admin import BrokenLink, Verification, verify

ORG_A = uuid.UUID("6a1b9a8e-2f0e-4c1e-8a3f-4d4d4d4d4d4d")
ORG_B = uuid.UUID("9e8d7c6b-5a49-4c38-9b27-6e6e6e6e6e6e")
ROWS = 1200
PAGE = 50
EDITED = "hash does not match the row's content: the row was edited"


async def long_log(db: Database) -> None:
    """``ROWS`` rows over three chains; details repeat (the hasher's memo hits) and differ
    (it fills up and is emptied: see the monkeypatched size)."""
    async with db.transaction() as conn:
        for i in range(ROWS):
            await audit_rows.append(
                conn,
                NewEntry(
                    action="test.stream",
                    outcome="failure" if i % 7 == 0 else "success",
                    org_id=(None, ORG_A, ORG_B)[i % 3],
                    request_id=f"req-{i}",
                    ip="203.0.113.9",
                    details={"kind": i % 4} if i % 2 else {"n": i, "note": "ü"},
                ),
            )


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_scan, "PAGE", PAGE)
    monkeypatch.setattr(audit_scan, "_MEMO_SIZE", 8)


async def test_an_edit_deep_inside_a_long_log_is_found(backend: Any, db: Database) -> None:
    await long_log(db)
    seen: list[tuple[int, int]] = []
    result = await verify(db, lambda done, expected: seen.append((done, expected)))
    assert result.ok, result.broken
    assert result.rows == ROWS
    assert {head.chain: head.rows for head in result.chains} == {
        "platform": ROWS // 3,
        str(ORG_A): ROWS // 3,
        str(ORG_B): ROWS // 3,
    }
    # One report per page, rising to the whole log.
    assert seen == [(PAGE * (n + 1), ROWS) for n in range(ROWS // PAGE)]

    stored = await rows(db)
    target = stored[ROWS // 2 + 16]  # even: its details are {"n": …}
    # Another row's details: what the memo already holds, and still this row's edit.
    await dba_execute(
        backend,
        f"UPDATE audit_log SET details = '{json.dumps({'kind': 1})}' WHERE id = {target.id}",
    )
    broken = await verify(db)
    assert broken.broken is not None
    assert broken.broken.row_id == target.id
    assert broken.broken.chain == target.chain
    assert "edited" in broken.broken.reason
    assert broken.rows == ROWS // 2 + 17  # counted up to and with the broken row


async def test_a_row_deleted_deep_inside_a_long_log_is_found(backend: Any, db: Database) -> None:
    await long_log(db)
    stored = await rows(db)
    gone = stored[ROWS - 3 * PAGE]
    await dba_execute(backend, f"DELETE FROM audit_log WHERE id = {gone.id}")
    result = await verify(db)
    assert result.broken is not None
    successor = next(r for r in stored if r.id > gone.id and r.chain == gone.chain)
    assert result.broken.row_id == successor.id
    assert "deleted or inserted" in result.broken.reason


@pytest.mark.slow  # starts worker processes
@pytest.mark.parametrize(
    "backend",
    [pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
)
async def test_in_parallel_the_result_is_the_sequential_one(
    backend: Any, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever is broken and wherever (inside a segment, or at a segment's first row of a
    # chain), the workers plus the join report what one process does.
    monkeypatch.setattr(audit_verify, "PARALLEL_FROM", 100)
    await long_log(db)
    stored = await rows(db)

    async def both() -> Verification:
        alone = await verify(db)
        seen: list[int] = []
        together = await verify(db, lambda done, _: seen.append(done), jobs=2)
        assert together == alone
        if together.ok:
            assert seen[-1] == together.rows  # the workers' progress, summed
        return alone

    assert (await both()).ok
    # An edit in the second segment (ids past the middle).
    edited = stored[ROWS * 3 // 4]
    await dba_execute(backend, f"UPDATE audit_log SET action = 'x' WHERE id = {edited.id}")
    assert (await both()).broken == BrokenLink(edited.id, edited.chain, EDITED)
    await dba_execute(
        backend, f"UPDATE audit_log SET action = '{edited.action}' WHERE id = {edited.id}"
    )
    # The last row of the first segment deleted: the next row of its chain is the first of
    # that chain in the second segment, whose link only the join can check.
    gone = stored[ROWS // 2 - 1]
    await dba_execute(backend, f"DELETE FROM audit_log WHERE id = {gone.id}")
    linked = await both()
    assert linked.broken is not None
    assert linked.broken.row_id == next(
        r.id for r in stored if r.id > gone.id and r.chain == gone.chain
    )
