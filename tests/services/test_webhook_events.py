"""Webhook events: every catalogue entry becomes its events once the audited change that
causes it committed (read from its audit row: the change writes nothing more), carries the
audit row's sequence number and hash, matches its documented JSON schema, and is fanned out
once per endpoint — on SQLite and on PostgreSQL (where the audit row is written by the
trigger at COMMIT)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select

from authkeep.db import event_source
from authkeep.db import orgs as org_rows
from authkeep.db import users as user_rows
from authkeep.db import webhooks as webhook_rows
from authkeep.db.audit import chain_key
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry, OutboxMessage, WebhookDelivery
from authkeep.db.outbox import ClaimedMessage
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.outbox import Outbox
from authkeep.services.webhooks import EVENT_TYPES, SOURCES, TEST_EVENT, FanOutHandler
from authkeep.services.webhooks.events import EVENT_KIND, WebhookEvents, event_body, timestamp
from authkeep.services.webhooks.source import AuditEventSource, event_id
from helpers import envelope_for_tests

ROOT = Path(__file__).resolve().parents[2]
USER = uuid.UUID("11111111-1111-4111-8111-111111111111")
ADMIN = uuid.UUID("22222222-2222-4222-8222-222222222222")
ORG = uuid.UUID("33333333-3333-4333-8333-333333333333")
THING = uuid.UUID("44444444-4444-4444-8444-444444444444")
SESSION = uuid.UUID("55555555-5555-4555-8555-555555555555")


def _user_event(action: Action, outcome: str = "success", **details: Any) -> AuditEvent:
    return AuditEvent(
        action,
        outcome,  # type: ignore[arg-type]
        actor=Actor(USER),
        entity_type="user",
        entity_id=USER,
        details=details,
    )


def _org_event(
    action: Action, entity_type: str, entity_id: uuid.UUID, **details: Any
) -> AuditEvent:
    return AuditEvent(
        action,
        actor=Actor(ADMIN),
        entity_type=entity_type,
        entity_id=str(entity_id),
        org_id=ORG,
        details=details,
    )


# Each key of SOURCES, as the service that records it writes it (see their modules).
SAMPLES: dict[tuple[str, str], AuditEvent] = {
    (Action.USER_REGISTERED, "success"): _user_event(Action.USER_REGISTERED),
    (Action.EMAIL_VERIFIED, "success"): _user_event(Action.EMAIL_VERIFIED, via="verification_link"),
    (Action.USER_ERASED, "success"): AuditEvent(
        Action.USER_ERASED,
        actor=Actor(ADMIN),
        entity_type="user",
        entity_id=USER,
        details={"origin": "admin", "removed": {"auth_sessions": 1}},
    ),
    (Action.PASSWORD_CHANGED, "success"): _user_event(Action.PASSWORD_CHANGED, sessions_ended=2),
    (Action.PASSWORD_RESET, "success"): _user_event(
        Action.PASSWORD_RESET, sessions_ended=1, links_voided=0, email_verified=True
    ),
    (Action.SESSION_REVOKED, "success"): AuditEvent(
        Action.SESSION_REVOKED,
        actor=Actor(USER),
        entity_type="session",
        entity_id=SESSION,
        details={"reason": "revoked_by_user", "sessions_ended": 1},
    ),
    (Action.LOGOUT, "success"): AuditEvent(
        Action.LOGOUT,
        actor=Actor(USER),
        entity_type="session",
        entity_id=SESSION,
        details={"reason": "logout", "sessions_ended": 1},
    ),
    (Action.LOGOUT_ALL, "success"): _user_event(
        Action.LOGOUT_ALL, reason="logout_all", sessions_ended=3
    ),
    (Action.SESSIONS_ENDED, "success"): _user_event(
        Action.SESSIONS_ENDED, reason="deactivated", sessions_ended=2
    ),
    (Action.REFRESH_REUSE, "failure"): AuditEvent(
        Action.REFRESH_REUSE,
        "failure",
        actor=Actor(USER),
        entity_type="session",
        entity_id=SESSION,
        details={"sessions_revoked": 1, "reason": "reused"},
    ),
    (Action.ORG_CREATED, "success"): _org_event(
        Action.ORG_CREATED, "organization", ORG, name="Acme"
    ),
    (Action.MEMBER_ADDED, "success"): _org_event(Action.MEMBER_ADDED, "user", USER, role="viewer"),
    (Action.MEMBER_ROLE_CHANGED, "success"): _org_event(
        Action.MEMBER_ROLE_CHANGED, "user", USER, **{"from": "viewer", "to": "editor"}
    ),
    (Action.MEMBER_REMOVED, "success"): _org_event(
        Action.MEMBER_REMOVED, "user", USER, role="editor", left=False
    ),
    (Action.INVITATION_CREATED, "success"): _org_event(
        Action.INVITATION_CREATED, "invitation", THING, role="editor", emailed=True
    ),
    (Action.INVITATION_ACCEPTED, "success"): _org_event(
        Action.INVITATION_ACCEPTED,
        "invitation",
        THING,
        role="editor",
        user_id=str(USER),
        joined=True,
    ),
    (Action.INVITATION_DECLINED, "success"): _org_event(
        Action.INVITATION_DECLINED, "invitation", THING
    ),
    (Action.INVITATION_REVOKED, "success"): _org_event(
        Action.INVITATION_REVOKED, "invitation", THING
    ),
    (Action.API_KEY_CREATED, "success"): _org_event(
        Action.API_KEY_CREATED,
        "api_key",
        THING,
        prefix="ak_abcd1234",
        role="viewer",
        expires_at=None,
    ),
    (Action.API_KEY_REVOKED, "success"): _org_event(
        Action.API_KEY_REVOKED, "api_key", THING, prefix="ak_abcd1234"
    ),
    (Action.MFA_TOTP_ENROLLED, "success"): _user_event(Action.MFA_TOTP_ENROLLED, recovery_codes=10),
    (Action.MFA_TOTP_REMOVED, "success"): _user_event(Action.MFA_TOTP_REMOVED, mfa_enabled=False),
    (Action.MFA_PASSKEY_REGISTERED, "success"): AuditEvent(
        Action.MFA_PASSKEY_REGISTERED,
        actor=Actor(USER),
        entity_type="webauthn_credential",
        entity_id=THING,
        details={"device_type": "multi_device", "backed_up": True},
    ),
    (Action.MFA_PASSKEY_REMOVED, "success"): AuditEvent(
        Action.MFA_PASSKEY_REMOVED,
        actor=Actor(USER),
        entity_type="webauthn_credential",
        entity_id=THING,
        details={"mfa_enabled": False},
    ),
    (Action.MFA_RESET, "success"): AuditEvent(
        Action.MFA_RESET,
        actor=Actor(ADMIN),
        entity_type="user",
        entity_id=USER,
        details={"reason": "lost phone", "sessions_ended": 1},
    ),
}


def test_the_samples_cover_the_mapping_and_the_mapping_covers_the_catalogue() -> None:
    # Extending the mapping without a sample (or the catalogue without a source) fails here.
    assert {(str(a), o) for a, o in SAMPLES} == set(SOURCES)
    produced = {event_type for sources in SOURCES.values() for event_type, _ in sources}
    assert produced == set(EVENT_TYPES) - {TEST_EVENT}


def test_every_event_type_is_documented_with_its_schema() -> None:
    page = (ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")
    for name, event in EVENT_TYPES.items():
        assert f"`{name}`" in page, name
        jsonschema.Draft202012Validator.check_schema(event.data_schema)
        for field in event.data_schema["properties"]:
            assert f"`{field}`" in page, (name, field)


async def _queued(db: Database) -> list[dict[str, Any]]:
    """The ``webhook.event`` messages in the outbox, as they are now."""
    async with db.reading() as conn:
        found = await conn.execute(
            select(OutboxMessage.payload).where(OutboxMessage.kind == EVENT_KIND)
        )
        return [dict(row[0]) for row in found]


async def _events(db: Database) -> list[dict[str, Any]]:
    """The events of everything committed so far: a worker's reader run to the end."""
    source = AuditEventSource(db, Outbox())
    while await source.pump():
        pass
    return await _queued(db)


async def _audit_rows(db: Database) -> dict[int, Any]:
    async with db.reading() as conn:
        found = await conn.execute(
            select(
                AuditEntry.id,
                AuditEntry.hash,
                AuditEntry.org_id,
                AuditEntry.at,
                AuditEntry.details,
            )
        )
        return {int(row[0]): row for row in found}


async def _bodies(db: Database) -> list[dict[str, Any]]:
    """What endpoints would receive for each queued event (as fan-out builds it)."""
    async with db.reading() as conn:
        return [await event_body(conn, event) for event in await _events(db)]


@pytest.mark.parametrize("key", sorted(SOURCES), ids=lambda key: f"{key[0]}/{key[1]}")
async def test_each_catalogue_entry_is_an_event_with_its_audit_row(
    db: Database, key: tuple[str, str]
) -> None:
    outbox = Outbox()
    audit = AuditLog(db, events=WebhookEvents(outbox))
    async with db.transaction() as conn:
        await audit.record(conn, SAMPLES[key])  # type: ignore[index]
    events = await _events(db)
    assert [event["type"] for event in events] == [t for t, _ in SOURCES[key]]
    [row] = (await _audit_rows(db)).values()
    # The audit row is what it would be without webhooks ...
    assert row.details == AuditLog.entry(SAMPLES[key], None).details  # type: ignore[index]
    for event, body in zip(events, await _bodies(db), strict=True):
        assert set(body) == {"type", "timestamp", "data", "audit"}
        schema = EVENT_TYPES[body["type"]].data_schema
        jsonschema.validate(body["data"], schema, format_checker=jsonschema.FormatChecker())
        # ... and each event names it exactly (found by its content digest): a consumer
        # finds the row and notices a gap against the chain.
        assert body["audit"] == {"seq": row.id, "hash": row.hash, "chain": chain_key(row.org_id)}
        assert body["timestamp"] == timestamp(row.at)
        assert event["org_id"] == (None if row.org_id is None else str(row.org_id))


async def test_a_rolled_back_change_leaves_no_event(db: Database) -> None:
    audit = AuditLog(db, events=WebhookEvents(Outbox()))

    class Boom(Exception):
        pass

    async def change() -> None:
        async with db.transaction() as conn:
            await audit.record(conn, SAMPLES[(Action.USER_REGISTERED, "success")])  # type: ignore[index]
            raise Boom

    with pytest.raises(Boom):
        await change()
    assert await _events(db) == []
    assert await _audit_rows(db) == {}


async def test_changes_outside_the_catalogue_and_failures_are_no_events(db: Database) -> None:
    audit = AuditLog(db, events=WebhookEvents(Outbox()))
    await audit.record_alone(AuditEvent(Action.LOGIN, actor=Actor(USER)))
    # A refused password change (wrong current password) is audited but changed nothing.
    await audit.record_alone(
        _user_event(Action.PASSWORD_CHANGED, "failure", reason="bad_current_password")
    )
    assert await _events(db) == []
    assert len(await _audit_rows(db)) == 2


async def test_webhooks_off_makes_no_event_and_on_again_starts_from_then(db: Database) -> None:
    audit = AuditLog(db, events=WebhookEvents(Outbox(), enabled=False))
    await audit.record_alone(SAMPLES[(Action.USER_REGISTERED, "success")])  # type: ignore[index]
    assert await AuditEventSource(db, Outbox(), enabled=False).pump() == 0
    assert await _queued(db) == []
    # Switched on again: what happened while they were off is not sent now.
    await audit.record_alone(SAMPLES[(Action.EMAIL_VERIFIED, "success")])  # type: ignore[index]
    assert [event["type"] for event in await _events(db)] == ["user.email_verified"]


async def test_the_audit_log_off_still_writes_the_event_without_a_reference(
    db: Database,
) -> None:
    audit = AuditLog(db, enabled=False, events=WebhookEvents(Outbox()))
    await audit.record_alone(SAMPLES[(Action.USER_REGISTERED, "success")])  # type: ignore[index]
    [body] = await _bodies(db)
    assert body["audit"] is None
    assert body["type"] == "user.created"


async def _platform_endpoint(
    db: Database, *, event_types: list[str] | None = None, org_id: uuid.UUID | None = None
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    tx = db.tenant_transaction(org_id) if org_id else db.transaction()
    async with tx as conn:
        await webhook_rows.insert_endpoint(
            conn,
            endpoint_id=endpoint_id,
            org_id=org_id,
            url="https://hooks.example.com/in",
            description="",
            event_types=event_types or [],
            secret_sealed="k.sealed",
            created_by=None,
            now=utcnow(),
        )
    return endpoint_id


async def _fan_out(db: Database) -> None:
    handler = FanOutHandler(db, Outbox())
    for event in await _events(db):
        message = ClaimedMessage(uuid.UUID(event["id"]), EVENT_KIND, event, 1, utcnow())
        await handler.deliver(message)


async def _deliveries(db: Database, *orgs: uuid.UUID) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """Deliveries visible to the app role: the platform's, and (row-level security on
    PostgreSQL) each organization's only in a transaction bound to it."""
    query = select(
        WebhookDelivery.event_id, WebhookDelivery.endpoint_id, WebhookDelivery.event_type
    )
    found: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
    async with db.reading() as conn:
        found.update(tuple(row) for row in await conn.execute(query))  # type: ignore[misc]
    for org in orgs:
        async with db.tenant_reading(org) as conn:
            found.update(tuple(row) for row in await conn.execute(query))  # type: ignore[misc]
    return sorted(found)


async def test_fan_out_gives_each_wanting_endpoint_one_delivery_even_when_it_runs_twice(
    db: Database, make_org: Callable[..., Any]
) -> None:
    org, other = await make_org(db), await make_org(db, "Other")
    everything = await _platform_endpoint(db)
    only_keys = await _platform_endpoint(db, event_types=["api_key.created"])
    own = await _platform_endpoint(db, org_id=org)
    other_org = await _platform_endpoint(db, org_id=other)
    audit = AuditLog(db, events=WebhookEvents(Outbox()))
    await audit.record_alone(SAMPLES[(Action.USER_REGISTERED, "success")])  # type: ignore[index]
    event = SAMPLES[(Action.INVITATION_CREATED, "success")]  # type: ignore[index]
    await audit.record_alone(
        AuditEvent(
            event.action,
            actor=event.actor,
            entity_type="invitation",
            entity_id=event.entity_id,
            org_id=org,
            details=event.details,
        )
    )
    await _fan_out(db)
    await _fan_out(db)  # a worker that died after fanning out, before settling: nothing new
    delivered = await _deliveries(db, org)
    got = sorted((endpoint, event_type) for _, endpoint, event_type in delivered)
    # Platform endpoints get every chain; an organization's only its own; filters apply.
    assert got == sorted(
        [
            (everything, "user.created"),
            (everything, "invitation.created"),
            (own, "invitation.created"),
        ]
    )
    assert only_keys not in {e for e, _ in got}
    assert other_org not in {e for e, _ in got}
    async with db.reading() as conn:
        messages = (
            await conn.execute(
                select(OutboxMessage.id).where(OutboxMessage.kind == "webhook.delivery")
            )
        ).all()
    assert len(messages) == 3
    if db.is_postgres:
        # Row-level security: outside its organization, an organization's delivery is not
        # even visible to the app role.
        assert {e for _, e, _ in await _deliveries(db)} == {everything}
        assert {e for _, e, _ in await _deliveries(db, other)} == {everything}


async def test_an_endpoint_registered_after_the_event_does_not_get_it(db: Database) -> None:
    audit = AuditLog(db, events=WebhookEvents(Outbox()))
    await audit.record_alone(SAMPLES[(Action.USER_REGISTERED, "success")])  # type: ignore[index]
    await _platform_endpoint(db)
    await _fan_out(db)
    assert await _deliveries(db) == []


@pytest.fixture
def make_org() -> Callable[..., Any]:
    async def make(db: Database, name: str = "Acme") -> uuid.UUID:
        async with db.transaction() as conn:
            user = await user_rows.insert_user(
                conn,
                envelope_for_tests(),
                email=f"{uuid.uuid4().hex[:8]}@example.com",
                email_key=f"{uuid.uuid4().hex}@example.com",
                hashed_password="x",
                full_name=None,
            )
            org = await org_rows.insert_org(conn, name=name, creator=user.id, now=utcnow())
        return org.id

    return make


async def test_an_audited_change_writes_its_audit_row_and_nothing_more(db: Database) -> None:
    # The events cost the audited request nothing: they are read from the row afterwards.
    audit = AuditLog(db, events=WebhookEvents(Outbox()))
    async with db.transaction() as conn:
        await audit.record(conn, SAMPLES[(Action.API_KEY_CREATED, "success")])  # type: ignore[index]
    assert await _queued(db) == []
    assert len(await _audit_rows(db)) == 1
    assert [event["type"] for event in await _events(db)] == ["api_key.created"]


async def test_event_ids_come_from_the_audit_row_so_every_reader_derives_the_same(
    db: Database,
) -> None:
    audit = AuditLog(db, events=WebhookEvents(Outbox()))
    await audit.record_alone(SAMPLES[(Action.INVITATION_ACCEPTED, "success")])  # type: ignore[index]
    [first, second] = await _events(db)
    [seq] = await _audit_rows(db)
    assert (first["id"], second["id"]) == (str(event_id(seq, 0)), str(event_id(seq, 1)))
    assert len({first["id"], second["id"], str(event_id(seq + 1, 0))}) == 3


async def test_readers_in_parallel_queue_each_event_once(db: Database) -> None:
    audit = AuditLog(db, events=WebhookEvents(Outbox()))
    for _ in range(30):
        await audit.record_alone(SAMPLES[(Action.USER_REGISTERED, "success")])  # type: ignore[index]
    # Four workers' readers at once, in small batches: the cursor row lets one through at a
    # time (the others pass), and each row's events are queued once.
    readers = [AuditEventSource(db, Outbox(), batch_size=7) for _ in range(4)]
    for _ in range(10):
        await asyncio.gather(*(reader.pump() for reader in readers))
    events = await _queued(db)
    assert len(events) == 30
    assert len({event["id"] for event in events}) == 30
    assert sorted(event["audit"]["seq"] for event in events) == sorted(await _audit_rows(db))


async def test_a_reader_that_fails_before_its_commit_changes_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = AuditLog(db, events=WebhookEvents(Outbox()))
    await audit.record_alone(SAMPLES[(Action.USER_REGISTERED, "success")])  # type: ignore[index]

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("the database went away mid-batch")

    with monkeypatch.context() as patched:
        patched.setattr(webhook_rows, "insert_events", crash)
        with pytest.raises(ConnectionResetError):
            await AuditEventSource(db, Outbox()).pump()
    assert await _queued(db) == []
    # The next reader starts from the same row: the event is not lost.
    assert [event["type"] for event in await _events(db)] == ["user.created"]


def _row(seq: int) -> event_source.AuditRow:
    event = SAMPLES[(Action.USER_REGISTERED, "success")]  # type: ignore[index]
    return event_source.AuditRow(
        id=seq,
        at=utcnow(),
        hash=f"{seq:064x}",
        org_id=None,
        actor_user_id=USER,
        actor_api_key_id=None,
        action=str(event.action),
        outcome=event.outcome,
        entity_type=event.entity_type,
        entity_id=str(event.entity_id),
        details={},
    )


def test_the_reader_waits_at_a_gap_and_passes_it_only_after_the_grace() -> None:
    # On PostgreSQL ids are drawn at COMMIT: 12 may be visible before 11 commits. Passing
    # 11 at once would lose its event; waiting for ever would stop every event after it.
    now = [utcnow()]
    source = AuditEventSource(None, Outbox(), gap_grace=timedelta(seconds=60), clock=lambda: now[0])  # type: ignore[arg-type]
    events: list[dict[str, Any]] = []
    start = event_source.Position(10)
    at_gap = source.advance(start, [_row(12), _row(13)], events)
    assert at_gap == event_source.Position(10, now[0])
    assert events == []
    # 11 committed meanwhile: read in order, the wait forgotten.
    assert source.advance(at_gap, [_row(11), _row(12)], events) == event_source.Position(12)
    assert [e["audit"]["seq"] for e in events] == [11, 12]
    # A gap that stays (an id drawn by a commit that then failed): still waited for inside
    # the grace, passed after it.
    events.clear()
    waiting = source.advance(event_source.Position(12), [_row(14)], events)
    now[0] += timedelta(seconds=59)
    assert source.advance(waiting, [_row(14)], events) == waiting
    now[0] += timedelta(seconds=2)
    assert source.advance(waiting, [_row(14)], events) == event_source.Position(14)
    assert [e["audit"]["seq"] for e in events] == [14]


def test_the_position_reads_back_as_written() -> None:
    moment = utcnow()
    for position in (event_source.Position(0), event_source.Position(41, moment)):
        assert event_source.Position.parse(position.text()) == position
    assert event_source.Position.parse("17") == event_source.Position(17)
