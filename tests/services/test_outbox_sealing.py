"""Outbox payloads encrypted at rest (``authkeep.db.outbox``), on SQLite and PostgreSQL:
stored sealed and bound to their row, opened by the worker only, plain rows from before
encryption still delivered, a payload copied into another row failed for good, not a crash."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import select, update

from authkeep.db import outbox as outbox_rows
from authkeep.db.engine import Database
from authkeep.db.models import OutboxMessage
from authkeep.security.envelope import SealedValueError
from authkeep.services.outbox import ClaimedMessage, HandlerRegistry, Outbox, OutboxWorker
from authkeep.services.outbox.worker import UNREADABLE
from helpers import envelope_for_tests

KIND = "test"
ADDRESS = "ada.lovelace@example.com"


class Recorder:
    """A handler that records the payloads it is handed."""

    def __init__(self) -> None:
        self.payloads: dict[uuid.UUID, dict[str, Any]] = {}

    async def deliver(self, message: ClaimedMessage) -> None:
        self.payloads[message.id] = dict(message.payload)

    def scrub(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"template": payload.get("template")}


async def enqueue(db: Database, outbox: Outbox, *payloads: dict[str, Any]) -> list[uuid.UUID]:
    async with db.transaction() as conn:
        ids = [await outbox.enqueue(conn, KIND, payload) for payload in payloads]
    assert all(ids)
    return [i for i in ids if i is not None]


async def stored(db: Database, message_id: uuid.UUID) -> Any:
    async with db.reading() as conn:
        return (
            await conn.execute(
                select(OutboxMessage.payload, OutboxMessage.status, OutboxMessage.last_error).where(
                    OutboxMessage.id == message_id
                )
            )
        ).one()


def mail(n: int = 0) -> dict[str, Any]:
    return {"template": "welcome", "to": ADDRESS, "context": {"link": f"https://x/t/{n}"}}


async def test_a_payload_is_stored_sealed_and_delivered_open(db: Database) -> None:
    envelope = envelope_for_tests()
    [message_id] = await enqueue(db, Outbox(envelope=envelope), mail())
    payload, status, _ = await stored(db, message_id)
    assert set(payload) == {"sealed"}
    assert ADDRESS not in str(payload)
    assert "https://x/t/0" not in str(payload)
    recorder = Recorder()
    worker = OutboxWorker(db, HandlerRegistry({KIND: recorder}), envelope=envelope)
    assert await worker.run_once() == 1
    assert recorder.payloads == {message_id: mail()}
    # What stays after the send is the scrubbed payload, sealed like every other.
    payload, status, _ = await stored(db, message_id)
    assert status == outbox_rows.SENT
    assert set(payload) == {"sealed"}
    assert outbox_rows.open_payload(envelope, message_id, payload) == {"template": "welcome"}


async def test_a_plain_payload_from_before_encryption_is_still_delivered(db: Database) -> None:
    [message_id] = await enqueue(db, Outbox(), mail())
    assert (await stored(db, message_id))[0] == mail()
    recorder = Recorder()
    envelope = envelope_for_tests()
    worker = OutboxWorker(db, HandlerRegistry({KIND: recorder}), envelope=envelope)
    assert await worker.run_once() == 1
    assert recorder.payloads == {message_id: mail()}
    payload, status, _ = await stored(db, message_id)
    assert status == outbox_rows.SENT
    assert outbox_rows.open_payload(envelope, message_id, payload) == {"template": "welcome"}


async def test_a_sealed_payload_copied_into_another_row_fails_for_good(db: Database) -> None:
    envelope = envelope_for_tests()
    first, second, third = await enqueue(db, Outbox(envelope=envelope), mail(1), mail(2), mail(3))
    copied = (await stored(db, first))[0]
    async with db.transaction() as conn:
        await conn.execute(
            update(OutboxMessage).where(OutboxMessage.id == second).values(payload=copied)
        )
    recorder = Recorder()
    worker = OutboxWorker(db, HandlerRegistry({KIND: recorder}), envelope=envelope)
    assert await worker.run_once() == 3
    # The others go out; the copy is never handed to its handler.
    assert set(recorder.payloads) == {first, third}
    payload, status, error = await stored(db, second)
    assert (status, error) == (outbox_rows.DEAD, UNREADABLE)
    assert outbox_rows.open_payload(envelope, second, payload) == {"template": None}


def test_a_payload_opens_only_in_its_own_row() -> None:
    envelope = envelope_for_tests()
    message_id = uuid.uuid4()
    sealed = outbox_rows.seal_payload(envelope, message_id, mail())
    assert outbox_rows.open_payload(envelope, message_id, sealed) == mail()
    with pytest.raises(SealedValueError):
        outbox_rows.open_payload(envelope, uuid.uuid4(), sealed)
    # Another table's row with the same id is another place too.
    with pytest.raises(SealedValueError):
        outbox_rows.open_payload(envelope, message_id, sealed, table="webhook_deliveries")
    # Sealed, and no keys to open it with.
    with pytest.raises(SealedValueError):
        outbox_rows.open_payload(None, message_id, sealed)
