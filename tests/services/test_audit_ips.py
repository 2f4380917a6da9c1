"""``audit_log.ip`` encrypted at rest (``authkeep.db.audit_ips``), on SQLite and PostgreSQL:
sealed with the actor's user key or the master ring, hashed as ciphertext, opened by the
readers, unreadable once the account's key is destroyed."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from audit_helpers import dba_execute, rows
from authkeep.db import audit as audit_rows
from authkeep.db import audit_ips, user_keys
from authkeep.db.audit import AuditFilter, EntryRecord
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry
from authkeep.security.envelope import Envelope
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.audit_admin import export, verify
from authkeep.services.context import RequestInfo
from helpers import TEST_DATA_KEY, envelope_for_tests

IP = "198.51.100.4"
OTHER_IP = "2001:db8::7"


def info(ip: str = IP) -> RequestInfo:
    return RequestInfo(ip=ip, user_agent="tests", request_id=f"req-{uuid.uuid4().hex[:8]}")


async def new_user(db: Database, envelope: Envelope) -> uuid.UUID:
    """An account's user key (all an audit row's address needs of the account)."""
    user_id = uuid.uuid4()
    async with db.transaction() as conn:
        await user_keys.create(conn, envelope, user_id)
    return user_id


async def opened(
    db: Database, envelope: Envelope | None, found: list[EntryRecord]
) -> list[str | None]:
    async with db.reading() as conn:
        return await audit_ips.reveal(conn, envelope, found)


async def stored_ips(db: Database) -> list[str | None]:
    async with db.reading() as conn:
        return list((await conn.execute(select(AuditEntry.ip).order_by(AuditEntry.id))).scalars())


async def test_an_actor_users_address_is_sealed_with_their_key(db: Database) -> None:
    envelope = envelope_for_tests()
    alice = await new_user(db, envelope)
    await AuditLog(db, envelope=envelope).record_alone(
        AuditEvent(Action.LOGIN, actor=Actor(alice)), info()
    )
    [row] = await rows(db)
    assert row.ip is not None
    assert row.ip.startswith("uk1.")
    assert IP not in row.ip
    assert await opened(db, envelope, [row]) == [IP]
    # The chain covers the ciphertext: verifying needs no key.
    assert row.hash == row.computed_hash()
    assert (await verify(db)).ok


async def test_an_address_without_an_actor_user_is_sealed_with_the_master_ring(
    db: Database,
) -> None:
    envelope = envelope_for_tests()
    audit = AuditLog(db, envelope=envelope)
    await audit.record_alone(AuditEvent(Action.LOGIN, "failure"), info())
    await audit.record_alone(
        AuditEvent(Action.API_KEY_FIRST_USED, actor=Actor(api_key_id=uuid.uuid4())),
        info(OTHER_IP),
    )
    found = await rows(db)
    kid = TEST_DATA_KEY.split(":")[0]
    assert all(row.ip is not None and row.ip.startswith(kid + ".") for row in found)
    assert not {IP, OTHER_IP} & set(await stored_ips(db))
    assert await opened(db, envelope, found) == [IP, OTHER_IP]


async def test_a_destroyed_key_leaves_its_addresses_unreadable_and_the_chain_whole(
    db: Database,
) -> None:
    envelope = envelope_for_tests()
    alice, bob = await new_user(db, envelope), await new_user(db, envelope)
    audit = AuditLog(db, envelope=envelope)
    await audit.record_alone(AuditEvent(Action.LOGIN, actor=Actor(alice)), info())
    await audit.record_alone(AuditEvent(Action.LOGIN, actor=Actor(bob)), info(OTHER_IP))
    await audit.record_alone(AuditEvent(Action.LOGOUT, actor=Actor(alice)), info())
    async with db.transaction() as conn:
        assert await user_keys.destroy(conn, envelope, alice)
    found = await rows(db)
    assert await opened(db, envelope, found) == [None, OTHER_IP, None]
    # Also in a process that never saw the key (nothing remembered).
    assert await opened(db, envelope_for_tests(), found) == [None, OTHER_IP, None]
    assert (await verify(db)).ok
    # Nothing new about the erased account is kept; the event itself is.
    await audit.record_alone(AuditEvent(Action.LOGIN, "failure", actor=Actor(alice)), info())
    assert (await rows(db))[-1].ip is None
    assert (await verify(db)).ok


async def test_a_key_remembered_while_its_erasure_commits_is_forgotten_with_it(
    db: Database,
) -> None:
    # The in-process worker (or any other task) reads the key row, still there for it,
    # between the erasure's delete and its commit: once committed, nothing remembers it.
    envelope = envelope_for_tests()
    alice = await new_user(db, envelope)
    envelope.forget(alice)
    async with db.transaction() as conn:
        assert await user_keys.destroy(conn, envelope, alice)
        async with db.reading() as other:
            assert await user_keys.cipher(other, envelope, alice) is not None
        assert envelope.remembered(alice) is not None
    assert envelope.remembered(alice) is None


async def test_a_key_erased_by_another_process_no_longer_opens_here(db: Database) -> None:
    # Two worker processes, each with its own envelope: the one that remembers alice's key
    # must not reveal her address once the other erased the key.
    here, elsewhere = envelope_for_tests(), envelope_for_tests()
    alice = await new_user(db, here)
    await AuditLog(db, envelope=here).record_alone(
        AuditEvent(Action.LOGIN, actor=Actor(alice)), info()
    )
    found = await rows(db)
    assert await opened(db, here, found) == [IP]
    assert here.remembered(alice) is not None
    async with db.transaction() as conn:
        assert await user_keys.destroy(conn, elsewhere, alice)
    assert await opened(db, here, found) == [None]


async def test_without_an_envelope_no_address_is_stored(db: Database) -> None:
    await AuditLog(db).record_alone(AuditEvent(Action.LOGIN, "failure"), info())
    assert await stored_ips(db) == [None]


async def test_a_sealed_address_copied_into_another_row_does_not_open(
    db: Database, backend: object
) -> None:
    envelope = envelope_for_tests()
    alice = await new_user(db, envelope)
    audit = AuditLog(db, envelope=envelope)
    # Same account and action, another request: the copy is still refused.
    await audit.record_alone(AuditEvent(Action.LOGIN, actor=Actor(alice)), info())
    await audit.record_alone(AuditEvent(Action.LOGIN, actor=Actor(alice)), info(OTHER_IP))
    await audit.record_alone(AuditEvent(Action.LOGIN, "failure"), info())
    await audit.record_alone(AuditEvent(Action.LOGIN, "failure"), info(OTHER_IP))
    first, second, third, fourth = await rows(db)
    await dba_execute(
        backend,
        f"UPDATE audit_log SET ip = '{first.ip}' WHERE id = {second.id}",
        f"UPDATE audit_log SET ip = '{third.ip}' WHERE id = {fourth.id}",
    )
    assert await opened(db, envelope, await rows(db)) == [IP, None, IP, None]
    # And the edit is caught by the chain.
    assert not (await verify(db)).ok


async def test_addresses_stored_in_clear_before_encryption_still_read(db: Database) -> None:
    # Rows written before migration 0013 keep their clear address (rewriting them would
    # break the chain): readers show it as it is.
    async with db.transaction() as conn:
        await audit_rows.append(conn, audit_rows.NewEntry(action=Action.LOGIN, ip="192.0.2.9"))
        await audit_rows.append(conn, audit_rows.NewEntry(action=Action.LOGIN, ip="testclient"))
    envelope = envelope_for_tests()
    await AuditLog(db, envelope=envelope).record_alone(AuditEvent(Action.LOGIN), info())
    found = await rows(db)
    assert await opened(db, envelope, found) == ["192.0.2.9", "testclient", IP]
    assert (await verify(db)).ok


async def test_the_export_shows_the_address_and_what_the_hash_covers(db: Database) -> None:
    envelope = envelope_for_tests()
    alice = await new_user(db, envelope)
    await AuditLog(db, envelope=envelope).record_alone(
        AuditEvent(Action.LOGIN, actor=Actor(alice)), info()
    )
    [entry] = [row async for row in export(db, AuditFilter(), envelope=envelope)]
    line = entry.as_json()
    assert line["ip"] == IP
    assert line["ip_stored"].startswith("uk1.")
    # Anyone holding the export checks the hash with the stored value, no key needed.
    recomputed = audit_rows.entry_hash(
        at=entry.record.at,
        org_id=entry.record.org_id,
        actor_user_id=entry.record.actor_user_id,
        actor_api_key_id=entry.record.actor_api_key_id,
        request_id=line["request_id"],
        ip=line["ip_stored"],
        action=line["action"],
        entity_type=line["entity_type"],
        entity_id=line["entity_id"],
        outcome=line["outcome"],
        details=line["details"],
        prev_hash=line["prev_hash"],
    )
    assert recomputed == line["hash"]
    # Without the data keys, a sealed address exports as null.
    [keyless] = [row async for row in export(db)]
    assert keyless.as_json()["ip"] is None


async def test_the_export_opens_every_batch(db: Database) -> None:
    envelope = envelope_for_tests()
    users = [await new_user(db, envelope) for _ in range(3)]
    audit = AuditLog(db, envelope=envelope)
    for n, user in enumerate(users * 2):
        await audit.record_alone(AuditEvent(Action.LOGIN, actor=Actor(user)), info(f"192.0.2.{n}"))
    # A fresh envelope: the keys come from the database, a batch at a time.
    entries = [row async for row in export(db, envelope=envelope_for_tests(), batch=4)]
    assert [entry.ip for entry in entries] == [f"192.0.2.{n}" for n in range(6)]
