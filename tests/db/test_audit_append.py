"""An audit append costs the same whatever the log holds: the chain's head is one index step;
and the webhook events of an audited change cost no statement of their own.

The append reads its chain's head under the chain's lock, on every audited change. Written
as ``WHERE org_id = $1 ORDER BY id DESC LIMIT 1``, PostgreSQL walked the primary key back
from the newest row, filtering (every row of other chains since this chain's last one), or
read the whole chain and sorted it; the bench saw +1 ms per 4,000 rows. Work is counted
here in buffers (pages touched), which no load on the machine changes: the statements of
one append touch a few dozen, not one per row behind the head.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import audit as audit_rows
from authkeep.db.audit import chain_key
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry, OutboxMessage
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.audit_admin import verify
from authkeep.services.outbox import Outbox
from authkeep.services.webhooks.events import EVENT_KIND, WebhookEvents, event_body, timestamp
from authkeep.services.webhooks.source import AuditEventSource

BUSY = uuid.UUID("0b0b0b0b-0000-4000-8000-000000000001")
QUIET = uuid.UUID("0b0b0b0b-0000-4000-8000-000000000002")
BEHIND = 20_000
"""Rows appended after the probed chain's head: hundreds of pages."""
MAX_BUFFERS = 100
"""Pages one append may touch: the head's index step, the insert into the table and its
seven indexes, the function's catalogue look-ups (about 25 in all here)."""
CALLS = 7
"""PL/pgSQL plans a statement for its arguments five times, then may keep a generic plan:
both are probed (after one call that fills the session's catalogue caches)."""

postgres_only = pytest.mark.parametrize(
    "backend",
    [pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
)
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _bulk(db: Database, org_id: uuid.UUID | None, count: int) -> None:
    """``count`` rows of ``org_id``'s chain, straight into the table (their links are not
    checked here: only where the head lies matters)."""
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO audit_log (at, org_id, action, outcome, details, prev_hash, hash) "
                "SELECT now(), CAST(:org AS uuid), 'test.bulk', 'success', '{}', "
                "md5(:salt || g) || md5(g || :salt), md5(g || :salt) || md5(:salt || g) "
                "FROM generate_series(1, :count) AS g"
            ),
            {
                "org": None if org_id is None else str(org_id),
                "salt": uuid.uuid4().hex,
                "count": count,
            },
        )


async def _analyze(backend: Any) -> None:
    owner = Database(backend.owner_url)
    try:
        async with owner.transaction() as conn:
            await conn.execute(text("ANALYZE audit_log"))
    finally:
        await owner.close()


@asynccontextmanager
async def _session(db: Database, org_id: uuid.UUID | None) -> AsyncIterator[AsyncConnection]:
    """A connection whose first append (catalogue look-ups, the function's compilation:
    pages of the system catalogues) is behind it."""
    async with db.engine.connect() as conn:
        await _pages_of_one_append(conn, org_id)
        yield conn


async def _pages_of_one_append(conn: AsyncConnection, org_id: uuid.UUID | None) -> int:
    """Pages touched by one append to ``org_id``'s chain (in a transaction rolled back)."""
    lock, chain, genesis = audit_rows._chain_of(audit_rows.NewEntry("test.probe", org_id=org_id))
    transaction = await conn.begin()
    try:
        plan = (
            await conn.execute(
                text(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM authkeep_audit_append("
                    "CAST(:lock AS bigint), CAST(:chain AS text), CAST(:genesis AS text), "
                    "md5(random()::text), NULL::timestamptz, CAST(:org AS uuid), NULL::uuid, "
                    "NULL::uuid, NULL, NULL, 'test.probe', NULL, NULL, 'success', '{}'::jsonb)"
                ),
                {
                    "lock": lock,
                    "chain": chain,
                    "genesis": genesis,
                    "org": None if org_id is None else str(org_id),
                },
            )
        ).scalar_one()
    finally:
        await transaction.rollback()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


@postgres_only
@pytest.mark.parametrize(
    ("probed", "behind"),
    [
        pytest.param(None, BUSY, id="platform chain, a busy organization since its head"),
        pytest.param(QUIET, None, id="quiet organization, the platform busy since its head"),
        pytest.param(QUIET, BUSY, id="quiet organization, another one busy since its head"),
        pytest.param(None, None, id="platform chain, itself long"),
    ],
)
async def test_the_chain_head_is_one_index_step_however_far_back_it_lies(
    backend: Any, db: Database, probed: uuid.UUID | None, behind: uuid.UUID | None
) -> None:
    audit = AuditLog(db)
    await audit.record_alone(AuditEvent("test.head", org_id=probed))
    await _bulk(db, behind, BEHIND)
    # Without statistics (a young table, or autovacuum behind), then with them: the plan
    # must not depend on what the planner believes about the rows.
    for analyzed in (False, True):
        if analyzed:
            await _analyze(backend)
        async with _session(db, probed) as conn:
            pages = [await _pages_of_one_append(conn, probed) for _ in range(CALLS)]
        assert max(pages) < MAX_BUFFERS, (analyzed, pages)


@postgres_only
async def test_a_chain_emptied_by_a_purge_still_finds_its_anchor_in_one_step(
    backend: Any, db: Database
) -> None:
    # The first append to a chain without rows looks up the newest purge's anchor: through
    # the (action, id) index, not a walk over the log.
    await _bulk(db, BUSY, BEHIND)
    await _analyze(backend)
    async with _session(db, QUIET) as conn:
        pages = [await _pages_of_one_append(conn, QUIET) for _ in range(CALLS)]
    assert max(pages) < MAX_BUFFERS, pages


@sqlite_only
@pytest.mark.parametrize("org_id", [None, QUIET], ids=["platform", "organization"])
async def test_sqlite_finds_the_head_backwards_along_the_chain_index(
    db: Database, org_id: uuid.UUID | None
) -> None:
    statement = audit_rows._head_query(org_id).compile(
        dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}
    )
    async with db.reading() as conn:
        plan = " ".join(
            str(row[-1]) for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}")
        )
    assert "ix_audit_log_chain" in plan
    assert "TEMP B-TREE" not in plan  # no sort: the index gives the order


def _password_changed(user: uuid.UUID) -> AuditEvent:
    # An event of the catalogue (user.password_changed), in the platform chain.
    return AuditEvent(
        Action.PASSWORD_CHANGED,
        actor=Actor(user),
        entity_type="user",
        entity_id=user,
        details={"sessions_ended": 1},
    )


def _api_key_created(key: uuid.UUID) -> AuditEvent:
    # An event of the catalogue (api_key.created), in an organization's chain.
    return AuditEvent(
        Action.API_KEY_CREATED,
        actor=Actor(uuid.uuid4()),
        entity_type="api_key",
        entity_id=str(key),
        org_id=QUIET,
        details={"prefix": "ak_abcd1234", "role": "viewer", "expires_at": None},
    )


async def test_events_commit_with_their_rows_and_name_them_under_concurrency(
    db: Database,
) -> None:
    # Twenty audited changes at once, in two chains (whose commits may finish in either
    # order on PostgreSQL): every chain stays whole and verifies, and the reader of the log
    # gives each row its event, naming it (seq, hash, chain, time), one event per row.
    audit = AuditLog(db, events=WebhookEvents(Outbox()))

    async def change(i: int) -> None:
        async with db.transaction() as conn:
            event = _password_changed(uuid.uuid4()) if i % 2 else _api_key_created(uuid.uuid4())
            await audit.record(conn, event)

    await asyncio.gather(*(change(i) for i in range(20)))
    result = await verify(db)
    assert result.ok, result.broken
    assert {head.chain: head.rows for head in result.chains} == {"platform": 10, str(QUIET): 10}
    reader = AuditEventSource(db, Outbox(), batch_size=3)
    while await reader.pump():
        pass
    async with db.reading() as conn:
        stored = {
            int(row.id): row
            for row in await conn.execute(
                select(AuditEntry.id, AuditEntry.hash, AuditEntry.org_id, AuditEntry.at)
            )
        }
        events = [
            dict(payload)
            for (payload,) in await conn.execute(
                select(OutboxMessage.payload).where(OutboxMessage.kind == EVENT_KIND)
            )
        ]
        bodies = [await event_body(conn, event) for event in events]
    assert sorted(body["audit"]["seq"] for body in bodies) == sorted(stored)
    for body in bodies:
        row = stored[body["audit"]["seq"]]
        assert body["audit"] == {"seq": row.id, "hash": row.hash, "chain": chain_key(row.org_id)}
        assert body["timestamp"] == timestamp(row.at)


@postgres_only
async def test_an_event_costs_no_statement_of_its_own(db: Database) -> None:
    # An event once cost its own INSERT (a round trip, +8 points of the audited change's CPU
    # in bench/webhooks.py), then a row written by the audit row's statement (+27 %): now
    # the audited change writes its audit row and nothing else; the event is read from it.
    statements: dict[bool, list[str]] = {}
    for webhooks in (False, True):
        audit = AuditLog(db, events=WebhookEvents(Outbox(), enabled=webhooks))
        sent: list[str] = []

        def log(query: Any, sent: list[str] = sent) -> None:
            sent.append(query.query)

        async with db.transaction() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            raw.add_query_logger(log)
            try:
                await audit.record(conn, _password_changed(uuid.uuid4()))
            finally:
                raw.remove_query_logger(log)
        statements[webhooks] = sent
    assert len(statements[True]) == len(statements[False])
    async with db.reading() as conn:
        kinds = [kind for (kind,) in await conn.execute(select(OutboxMessage.kind))]
    assert kinds == []
