"""The audit writer and its hash chains, on SQLite and on PostgreSQL (as the app role)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from audit_helpers import dba_execute, rows
from authkeep.db import audit as audit_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry, User
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.audit_admin import verify
from authkeep.services.context import RequestInfo
from authkeep.settings import Problem
from helpers import envelope_for_tests

ORG_A = uuid.UUID("0b5c4f43-6a34-4a2f-9d0c-1a1a1a1a1a1a")
ORG_B = uuid.UUID("7f3e2d1c-0b9a-4877-8665-2b2b2b2b2b2b")
INFO = RequestInfo(ip="198.51.100.4", user_agent="tests", request_id="req-123")


async def test_row_holds_the_event_and_request(db: Database) -> None:
    audit = AuditLog(db)
    actor = Actor(uuid.uuid4())
    await audit.record_alone(
        AuditEvent(
            "user.thing_done",
            "failure",
            actor=actor,
            entity_type="user",
            entity_id=actor.user_id,
            details={"reason": "because", "count": 2},
        ),
        INFO,
    )
    [row] = await rows(db)
    assert (row.action, row.outcome, row.actor_user_id) == (
        "user.thing_done",
        "failure",
        actor.user_id,
    )
    assert (row.entity_type, row.entity_id) == ("user", str(actor.user_id))
    # Built without the envelope, the log keeps no address (never one in clear): the sealed
    # addresses are tests/services/test_audit_ips.py's.
    assert (row.request_id, row.ip) == ("req-123", None)
    assert row.details == {"reason": "because", "count": 2}
    assert row.org_id is None
    assert row.prev_hash == audit_rows.genesis_hash("platform")
    assert row.hash == row.computed_hash()


async def test_details_are_redacted_before_storage(db: Database) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    await AuditLog(db).record_alone(
        AuditEvent(
            "test.redaction",
            details={"password": "hunter2-but-long", "note": f"got {jwt}", "refresh_token": "x"},
        )
    )
    [row] = await rows(db)
    assert row.details["password"] == "[REDACTED]"
    assert row.details["refresh_token"] == "[REDACTED]"
    assert jwt not in row.details["note"]


async def test_change_and_row_commit_together(db: Database) -> None:
    audit = AuditLog(db)
    async with db.transaction() as conn:
        user = await user_rows.insert_user(
            conn,
            envelope_for_tests(),
            email="a@example.com",
            email_key="a@example.com",
            hashed_password="x",
            full_name=None,
        )
        await audit.record(conn, AuditEvent(Action.USER_REGISTERED, actor=Actor(user.id)))
    assert len(await rows(db, Action.USER_REGISTERED)) == 1


async def test_failure_after_the_audit_write_leaves_neither(db: Database) -> None:
    audit = AuditLog(db)

    async def change_then_fail() -> None:
        async with db.transaction() as conn:
            await user_rows.insert_user(
                conn,
                envelope_for_tests(),
                email="b@example.com",
                email_key="b@example.com",
                hashed_password="x",
                full_name=None,
            )
            await audit.record(conn, AuditEvent(Action.USER_REGISTERED))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await change_then_fail()
    async with db.reading() as conn:
        users = (await conn.execute(select(func.count()).select_from(User))).scalar_one()
    assert users == 0
    assert await rows(db) == []


async def test_chains_link_per_organization(db: Database) -> None:
    audit = AuditLog(db)
    for org in (None, ORG_A, None, ORG_B, ORG_A, None):
        await audit.record_alone(AuditEvent("test.event", org_id=org))
    found = await rows(db)
    by_chain: dict[str, list[audit_rows.EntryRecord]] = {}
    for row in found:
        by_chain.setdefault(row.chain, []).append(row)
    assert {k: len(v) for k, v in by_chain.items()} == {"platform": 3, str(ORG_A): 2, str(ORG_B): 1}
    for chain, chain_rows in by_chain.items():
        assert chain_rows[0].prev_hash == audit_rows.genesis_hash(chain)
        for before, after in itertools.pairwise(chain_rows):
            assert after.prev_hash == before.hash
    result = await verify(db)
    assert result.ok
    assert result.rows == 6
    assert {head.chain: head.rows for head in result.chains} == {
        "platform": 3,
        str(ORG_A): 2,
        str(ORG_B): 1,
    }


async def test_twenty_concurrent_writers_leave_one_valid_chain(db: Database) -> None:
    audit = AuditLog(db)

    async def write(i: int) -> None:
        await audit.record_alone(
            AuditEvent(
                "test.concurrent", details={"writer": i}, org_id=ORG_A if i % 4 == 0 else None
            )
        )

    await asyncio.gather(*(write(i) for i in range(20)))
    found = await rows(db)
    assert sorted(row.details["writer"] for row in found) == list(range(20))
    result = await verify(db)
    assert result.ok, result.broken
    assert {head.chain: head.rows for head in result.chains} == {"platform": 15, str(ORG_A): 5}


async def test_the_database_refuses_a_fork(db: Database) -> None:
    audit = AuditLog(db)
    await audit.record_alone(AuditEvent("test.event"))
    [first] = await rows(db, "test.event")
    with pytest.raises(IntegrityError):
        async with db.transaction() as conn:
            # A second successor of the genesis value: what a writer skipping the chain lock
            # would produce.
            await conn.execute(
                insert(AuditEntry).values(
                    at=utcnow(),
                    action="test.fork",
                    outcome="success",
                    details={},
                    prev_hash=first.prev_hash,
                    hash="0" * 64,
                )
            )


async def test_verify_names_an_edited_row(backend: Any, db: Database) -> None:
    audit = AuditLog(db)
    for i in range(4):
        await audit.record_alone(AuditEvent("test.event", details={"i": i}))
    target = (await rows(db))[2]
    await dba_execute(backend, f"UPDATE audit_log SET outcome = 'failure' WHERE id = {target.id}")
    result = await verify(db)
    assert result.broken is not None
    assert result.broken.row_id == target.id
    assert "edited" in result.broken.reason


async def test_verify_names_the_row_after_a_deleted_one(backend: Any, db: Database) -> None:
    audit = AuditLog(db)
    for i in range(4):
        await audit.record_alone(AuditEvent("test.event", details={"i": i}))
    found = await rows(db)
    await dba_execute(backend, f"DELETE FROM audit_log WHERE id = {found[1].id}")
    result = await verify(db)
    assert result.broken is not None
    assert result.broken.row_id == found[2].id
    assert f"row {found[0].id}" in result.broken.reason


async def test_verify_catches_deleted_oldest_rows(backend: Any, db: Database) -> None:
    audit = AuditLog(db)
    for i in range(3):
        await audit.record_alone(AuditEvent("test.event", details={"i": i}))
    found = await rows(db)
    await dba_execute(backend, f"DELETE FROM audit_log WHERE id = {found[0].id}")
    result = await verify(db)
    assert result.broken is not None
    assert result.broken.row_id == found[1].id


async def test_a_rehashed_row_still_breaks_the_next_link(backend: Any, db: Database) -> None:
    # An editor who also recomputes the edited row's hash is caught one row later.
    audit = AuditLog(db)
    for i in range(3):
        await audit.record_alone(AuditEvent("test.event", details={"i": i}))
    found = await rows(db)
    forged = audit_rows.entry_hash(
        at=found[1].at,
        org_id=None,
        actor_user_id=None,
        actor_api_key_id=None,
        request_id=None,
        ip=None,
        action="test.event",
        entity_type=None,
        entity_id=None,
        outcome="failure",
        details={"i": 1},
        prev_hash=found[1].prev_hash,
    )
    await dba_execute(
        backend,
        f"UPDATE audit_log SET outcome = 'failure', hash = '{forged}' WHERE id = {found[1].id}",
    )
    result = await verify(db)
    assert result.broken is not None
    assert result.broken.row_id == found[2].id


async def test_disabled_audit_writes_nothing(db: Database) -> None:
    audit = AuditLog(db, enabled=False)
    assert await audit.record_alone(AuditEvent("test.event")) is None
    async with db.transaction() as conn:
        assert await audit.record(conn, AuditEvent("test.event")) is None
    assert await rows(db) == []


async def test_rate_limit_hook_is_throttled_per_limit_and_key(db: Database) -> None:
    audit = AuditLog(db)
    for _ in range(5):
        await audit.rate_limited(INFO, limit="login_email", key="k1", retry_after=30)
    await audit.rate_limited(INFO, limit="login_email", key="k2")
    await audit.rate_limited(INFO, limit="login_ip", key="k1")
    found = await rows(db, Action.RATE_LIMITED)
    assert [(row.details["limit"], row.outcome) for row in found] == [
        ("login_email", "failure"),
        ("login_email", "failure"),
        ("login_ip", "failure"),
    ]
    assert found[0].details["retry_after"] == 30
    assert all("k1" not in str(row.details) for row in found)


async def test_config_problems_are_recorded_once(db: Database) -> None:
    problems = [
        Problem("AUTHKEEP_REDIS_URL", "no redis", "warning"),
        Problem("AUTHKEEP_TRUSTED_HOSTS", "not set", "production"),
    ]
    assert await AuditLog(db).config_problems(problems) == 2
    # A second worker of the same start (another AuditLog, same database) adds nothing.
    assert await AuditLog(db).config_problems(problems) == 0
    found = await rows(db, Action.CONFIG_PROBLEM)
    assert [(row.entity_id, row.details["level"]) for row in found] == [
        ("AUTHKEEP_REDIS_URL", "warning"),
        ("AUTHKEEP_TRUSTED_HOSTS", "production"),
    ]
    assert all(row.actor_user_id is None and row.outcome == "failure" for row in found)


async def test_details_round_trip_exactly(db: Database) -> None:
    # JSONB rewrites numbers; whatever is hashed must read back identical.
    await AuditLog(db).record_alone(
        AuditEvent(
            "test.values",
            details={"float": 1.0, "big": 1e20, "small": 1.5e-7, "nested": {"b": [1, "x", None]}},
        )
    )
    [row] = await rows(db)
    assert row.hash == row.computed_hash()
    assert (await verify(db)).ok


async def test_time_never_goes_backwards_along_a_chain(db: Database) -> None:
    audit = AuditLog(db)
    await asyncio.gather(*(audit.record_alone(AuditEvent("test.t")) for _ in range(10)))
    found = await rows(db)
    assert all(b.at >= a.at for a, b in itertools.pairwise(found))


async def test_a_purged_chain_goes_on_from_its_anchor_on_both_backends(db: Database) -> None:
    # On PostgreSQL the append runs in SQL (authkeep_audit_append), elsewhere in Python: both
    # must find the anchor a purge left, and hash exactly as verify recomputes.
    org = uuid.uuid4()
    anchor = "ab" * 32
    async with db.transaction() as conn:
        await audit_rows.append(
            conn,
            audit_rows.NewEntry(
                action=audit_rows.PURGE_ACTION, details={"anchors": {str(org): anchor}}
            ),
        )
    async with db.transaction() as conn:
        first = await audit_rows.append(
            conn, audit_rows.NewEntry(action="org.created", org_id=org, details={"n": 1.5})
        )
    async with db.transaction() as conn:
        second = await audit_rows.append(
            conn, audit_rows.NewEntry(action="org.updated", org_id=org)
        )

    assert first.prev_hash == anchor
    assert second.prev_hash == first.hash
    assert second.at >= first.at
    assert first.computed_hash() == first.hash
    stored = {row.id: row for row in await rows(db)}
    assert stored[first.id].hash == first.hash
    assert stored[first.id].computed_hash() == first.hash
