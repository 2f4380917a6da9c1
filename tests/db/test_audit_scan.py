"""``authkeep.db.audit_scan``: the fast reader and hasher behind ``authkeep audit verify``
(issue 18) give exactly what the audit module's own ``entry_hash`` gives, and pages walk
every row once, in order, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from audit_helpers import rows
from authkeep.db import audit as audit_rows
from authkeep.db import audit_scan
from authkeep.db.audit import EntryRecord, NewEntry
from authkeep.db.engine import Database
from authkeep.services.audit_admin import snapshot

ORG = uuid.UUID("3c0a4a7e-11b2-4f5e-9d61-5e5e5e5e5e5e")

# Any text at all (quotes, backslashes, control characters, other scripts): the quoting of
# the template must be json.dumps' own.
_text = st.text(max_size=24)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)
_shared = audit_scan.row_hasher()  # across examples: its details memo is hit and refilled


@settings(max_examples=300, deadline=None)
@given(
    at=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    org_id=st.none() | st.uuids(),
    actor_user_id=st.none() | st.uuids(),
    actor_api_key_id=st.none() | st.uuids(),
    request_id=st.none() | _text,
    ip=st.none() | _text,
    action=_text,
    entity_type=st.none() | _text,
    entity_id=st.none() | _text,
    outcome=st.sampled_from(["success", "failure"]) | _text,
    details=st.dictionaries(_text, _json, max_size=4),
    prev_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_the_fast_hash_is_entry_hash(**fields: Any) -> None:
    record = EntryRecord(
        id=1, hash="", **{**fields, "details": audit_rows.normalize_details(fields["details"])}
    )
    row = audit_scan.scan_row(record)
    expected = record.computed_hash()
    assert audit_scan.row_hasher()(row) == expected
    assert _shared(row) == expected


def test_a_changed_field_changes_the_fast_hash() -> None:
    record = EntryRecord(
        id=1,
        at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        org_id=ORG,
        actor_user_id=None,
        actor_api_key_id=None,
        request_id="r",
        ip=None,
        action="auth.login",
        entity_type=None,
        entity_id=None,
        outcome="success",
        details={"a": 1},
        prev_hash="0" * 64,
        hash="",
    )
    row = audit_scan.scan_row(record)
    hash_of = audit_scan.row_hasher()
    original = hash_of(row)
    # Each position the hash covers (all but id and hash itself), changed alone.
    for position in range(1, 13):
        changed = list(row)
        changed[position] = '{"a":2}' if position == 11 else (row[position] or "") + "x"
        assert hash_of(changed) != original, position
    # null and the string "null" are different contents.
    as_text = list(row)
    as_text[6] = "null"
    assert hash_of(as_text) != original
    # A prev_hash that is no hash at all (other characters) fails the comparison, no error.
    forged = list(row)
    forged[12] = "é" * 64
    assert hash_of(forged) != original


async def _append(db: Database, count: int) -> None:
    async with db.transaction() as conn:
        for i in range(count):
            await audit_rows.append(
                conn,
                NewEntry(
                    action="test.scan",
                    org_id=ORG if i % 3 == 0 else None,
                    request_id=f"req-{i}",
                    details={"i": i, "text": "é\u2028\"'\\"},
                ),
            )


async def test_pages_walk_every_row_once_in_order(db: Database) -> None:
    await _append(db, 50)
    stored = await rows(db)
    async with snapshot(db) as conn:
        pages = [page async for page in audit_scan.pages(conn, page=7)]
        rest = [row async for page in audit_scan.pages(conn, after=stored[19].id) for row in page]
    assert [len(page) for page in pages] == [7] * 7 + [1]
    scanned = [row for page in pages for row in page]
    assert [row[0] for row in scanned] == [row.id for row in stored]
    assert [row[0] for row in rest] == [row.id for row in stored[20:]]
    hash_of = audit_scan.row_hasher()
    for row, record in zip(scanned, stored, strict=True):
        assert row[12:14] == (record.prev_hash, record.hash)
        assert row[2] == (None if record.org_id is None else str(record.org_id))
        assert hash_of(row) == record.hash


async def test_stopping_early_leaves_the_snapshot_usable(db: Database) -> None:
    # On PostgreSQL the next page is already requested when the reader stops: it must be
    # drained, not cancelled (which would abort the transaction it runs in).
    await _append(db, 30)
    async with snapshot(db) as conn:
        async with contextlib.aclosing(audit_scan.pages(conn, page=5)) as stream:
            async for page in stream:
                assert len(page) == 5
                break
        assert (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one() == 30
    assert await audit_scan_span(db) == 30


async def audit_scan_span(db: Database) -> int:
    async with db.reading() as conn:
        return await audit_scan.id_span(conn)
