"""A webhook delivery worker killed with SIGKILL in the middle of a request: a real
``authkeep worker`` process posts to a real receiver on loopback, which holds the first
request unanswered (the body received, the answer withheld) so that the kill lands exactly
there; a second ``authkeep worker`` takes over once the dead one's lease runs out.

What ``docs/webhooks.md`` promises and this proves (PostgreSQL, several workers): no event
is lost — every event arrives, verified with the ``standardwebhooks`` library; the request
cut off by the kill comes again with the *same* ``webhook-id``, so a receiver that keeps the
ids it processed processes every event exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.faults.worker_processes import start_worker, stop

from authkeep import Settings
from authkeep.db import webhooks as webhook_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.migrate import upgrade
from authkeep.db.models import OutboxMessage
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.outbox import Outbox
from authkeep.services.webhooks import WebhookEvents, message_id, signing
from authkeep.wiring import build_data_box
from conftest import TEST_SECRET, pg_async_url
from servers import fresh_pg_database, server_env
from webhook_helpers import Receiver, Stall

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

EVENTS = 5
LEASE_SECONDS = 10  # the worker's send timeout is half: the kill must come well before
DEADLINE = 90.0


def worker_env(url: str) -> dict[str, str]:
    return server_env(
        {
            "AUTHKEEP_ENV": "test",
            "AUTHKEEP_SECRET_KEY": TEST_SECRET,
            "AUTHKEEP_DATABASE_URL": url,
            "AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "AUTHKEEP_WEBHOOK_TIMEOUT_SECONDS": "4.5",
            "AUTHKEEP_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5",
            "AUTHKEEP_OUTBOX_LEASE_SECONDS": str(LEASE_SECONDS),
            "AUTHKEEP_OUTBOX_POLL_SECONDS": "0.2",
            "AUTHKEEP_LOG_LEVEL": "INFO",
        }
    )


async def prepare(url: str, receiver_url: str) -> tuple[str, list[str]]:
    """Migrate, register a platform endpoint, commit ``EVENTS`` audited changes; return the
    endpoint's secret and the users the events are about."""
    settings = Settings(_env_file=None, env="test", secret_key=TEST_SECRET, database_url=url)
    db = Database(url)
    try:
        await upgrade(db)
        box = build_data_box(settings)
        secret = signing.new_secret()
        endpoint_id = uuid.uuid4()
        async with db.transaction() as conn:
            await webhook_rows.insert_endpoint(
                conn,
                endpoint_id=endpoint_id,
                org_id=None,
                url=receiver_url,
                description="",
                event_types=[],
                secret_sealed=signing.seal(box, secret, endpoint_id),
                created_by=None,
                now=utcnow(),
            )
        audit = AuditLog(db, events=WebhookEvents(Outbox()))
        users = []
        for _ in range(EVENTS):
            user = uuid.uuid4()
            users.append(str(user))
            await audit.record_alone(
                AuditEvent(
                    Action.USER_REGISTERED, actor=Actor(user), entity_type="user", entity_id=user
                )
            )
        return secret, users
    finally:
        await db.close()


async def webhook_statuses(url: str) -> list[str]:
    db = Database(url)
    try:
        async with db.reading() as conn:
            rows = await conn.execute(
                select(OutboxMessage.status).where(OutboxMessage.kind.like("webhook.%"))
            )
            return [status for (status,) in rows]
    finally:
        await db.close()


def wait_until(check: object, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``check`` (outcome, never timing: the deadline only bounds a failing run)."""
    deadline = time.monotonic() + DEADLINE
    while not check():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def all_delivered(url: str) -> bool:
    statuses = asyncio.run(webhook_statuses(url))
    # EVENTS fan-out messages and EVENTS deliveries, every one sent.
    return len(statuses) == 2 * EVENTS and set(statuses) == {"sent"}


def test_a_worker_killed_mid_request_loses_no_event_and_the_receiver_processes_each_once(
    tmp_path: Path,
) -> None:
    with fresh_pg_database("authkeep_webhook_kill") as name, Receiver() as receiver:
        url = pg_async_url(name)
        secret, users = asyncio.run(prepare(url, receiver.url))
        receiver.add_secret(secret)
        receiver.plan.append(Stall(600.0))  # only the kill ends it

        first = start_worker(worker_env(url), tmp_path, "first")
        try:
            wait_until(receiver.stalled.is_set, "a request stalls", first, tmp_path / "first.log")
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(timeout=15) == -signal.SIGKILL
        finally:
            stop(first)
        [cut_off] = receiver.requests()
        assert cut_off.answered is None  # the body arrived; no answer ever left

        second = start_worker(worker_env(url), tmp_path, "second")
        try:
            wait_until(
                lambda: all_delivered(url),
                "the second worker delivers everything once the lease is over",
                second,
                tmp_path / "second.log",
            )
        finally:
            stop(second)
        requests = receiver.requests()

    assert all(request.verified_by == [secret] for request in requests)
    # Every event arrived, about every user.
    assert sorted(r.json["data"]["user_id"] for r in requests if r.answered == 200) == sorted(users)
    seen = Counter(request.webhook_id for request in requests)
    assert len(seen) == EVENTS
    # The request the kill cut off came again under the same id; every other once.
    assert seen[cut_off.webhook_id] == 2
    assert sorted(seen.values()) == [1] * (EVENTS - 1) + [2]
    # A receiver that keeps the ids it processed processed each event once.
    assert receiver.processed == dict.fromkeys(seen, 1)
    assert all(webhook_id.startswith("msg_") for webhook_id in seen)
    assert message_id(uuid.UUID(hex=cut_off.webhook_id.removeprefix("msg_"))) == (
        cut_off.webhook_id
    )
