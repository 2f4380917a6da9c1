"""A delivery worker killed with SIGKILL in the middle of sending an email: a real ``authkeep
worker`` process, a real SMTP server (aiosmtpd on loopback) that stalls the first message at
a chosen step so that the kill lands exactly there, then a second ``authkeep worker`` that
takes over once the dead one's lease runs out.

"A run" here is the delivery of one batch of queued messages by however many worker
processes it takes, from the enqueue to every message settled — a crash included. What
``docs/email.md`` promises for it, and what this proves:

* killed **before the server accepted** the message (the whole message sent, the server's
  answer to DATA not yet given — the server drops an unacknowledged message, as a real MTA
  does): nothing is lost, and every recipient receives exactly one copy;
* killed **after the server accepted** it (stalled on QUIT, before the worker could record
  ``sent``): the one window of at-least-once delivery — the recipient gets a second copy
  with the *same* ``Message-ID``, so a reader or mail system that deduplicates by
  ``Message-ID`` still sees exactly one message; the other recipients get one copy each.

SQLite (one host, the embedded default) and PostgreSQL (several workers) each run the
first case; PostgreSQL the second.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from tests.faults.worker_processes import start_worker, stop

from authkeep import Settings
from authkeep.db.engine import Database
from authkeep.db.migrate import upgrade
from authkeep.db.models import OutboxMessage
from authkeep.services.delivery import build_delivery
from conftest import TEST_SECRET, pg_async_url
from mail_helpers import free_port, parse
from servers import fresh_pg_database, server_env

pytestmark = pytest.mark.slow

RECIPIENTS = [f"user{n}@example.com" for n in range(5)]
LEASE_SECONDS = 6  # the send timeout is half of it: the kill must come well before that
DEADLINE = 60.0
STALL_SECONDS = 120.0  # longer than any run: only the kill ends a stall
SENDER = "authkeep <no-reply@mail.example.test>"


class StallingSmtp:
    """An SMTP server on loopback that keeps the messages it accepts (answers 250 to) and
    stalls the first message at ``stall_on``: ``DATA`` (the whole message received, the
    answer withheld) or ``QUIT`` (the message accepted, the goodbye withheld). A stalled
    connection ends only when the client goes away; aiosmtpd then cancels the stalled
    handler, and a message whose DATA was never answered is not kept (as a real MTA
    discards it)."""

    def __init__(self, stall_on: str) -> None:
        self.stall_on = stall_on
        self.port = free_port()
        self.stalled = threading.Event()
        self.accepted: list[EmailMessage] = []
        self.dropped: list[list[str]] = []
        self._armed = True
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def _take_stall(self, step: str) -> bool:
        with self._lock:
            if self._armed and self.stall_on == step:
                self._armed = False
                return True
            return False

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self._take_stall("DATA"):
            self.stalled.set()
            try:
                await asyncio.sleep(STALL_SECONDS)
            except asyncio.CancelledError:
                with self._lock:
                    self.dropped.append(list(envelope.rcpt_tos))
                raise
            return "451 stalled past the test's deadline"
        with self._lock:
            self.accepted.append(parse(bytes(envelope.original_content or b"")))
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self._take_stall("QUIT"):
            self.stalled.set()
            await asyncio.sleep(STALL_SECONDS)
        return "221 Bye"

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.accepted)

    def __enter__(self) -> StallingSmtp:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@pytest.fixture(
    params=[
        pytest.param(("sqlite", "DATA"), id="sqlite-killed-before-acceptance"),
        pytest.param(
            ("postgres", "DATA"),
            id="postgres-killed-before-acceptance",
            marks=pytest.mark.postgres,
        ),
        pytest.param(
            ("postgres", "QUIT"),
            id="postgres-killed-after-acceptance",
            marks=pytest.mark.postgres,
        ),
    ]
)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(database URL, the SMTP step to stall on); the database is new and migrated."""
    backend, stall_on = request.param
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
        asyncio.run(migrate(url))
        yield url, stall_on
        return
    with fresh_pg_database("authkeep_outbox_kill") as name:
        url = pg_async_url(name)
        asyncio.run(migrate(url))
        yield url, stall_on


async def migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.close()


def worker_env(url: str, smtp_port: int) -> dict[str, str]:
    return server_env(
        {
            "AUTHKEEP_ENV": "test",
            "AUTHKEEP_SECRET_KEY": TEST_SECRET,
            "AUTHKEEP_DATABASE_URL": url,
            "AUTHKEEP_EMAIL_BACKEND": "smtp",
            "AUTHKEEP_EMAIL_FROM": SENDER,
            "AUTHKEEP_SMTP_HOST": "127.0.0.1",
            "AUTHKEEP_SMTP_PORT": str(smtp_port),
            "AUTHKEEP_SMTP_TLS": "none",
            "AUTHKEEP_SMTP_TIMEOUT_SECONDS": "30",
            "AUTHKEEP_OUTBOX_LEASE_SECONDS": str(LEASE_SECONDS),
            "AUTHKEEP_OUTBOX_POLL_SECONDS": "0.2",
            "AUTHKEEP_OUTBOX_BACKOFF_BASE_SECONDS": "0.5",
            "AUTHKEEP_LOG_LEVEL": "INFO",
        }
    )


async def enqueue(url: str) -> dict[str, str]:
    """One password-changed notice per recipient, committed; their outbox ids by address."""
    settings = Settings(
        _env_file=None, env="test", secret_key=TEST_SECRET, database_url=url, email_from=SENDER
    )
    db = Database(url)
    try:
        delivery = build_delivery(settings, db)
        ids = {}
        async with db.transaction() as conn:
            for to in RECIPIENTS:
                ids[to] = str(await delivery.mailer.enqueue(conn, "password_changed", to))
        return ids
    finally:
        await db.close()


async def outbox_rows(url: str) -> list[tuple[str, str, int]]:
    """(id, status, attempts) of every message."""
    db = Database(url)
    try:
        async with db.reading() as conn:
            rows = await conn.execute(
                sa.select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.attempts)
            )
            return [(str(id_), status, attempts) for id_, status, attempts in rows]
    finally:
        await db.close()


def wait_until(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``check`` (outcome, never timing: the deadline only bounds a failing run)."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def all_sent(url: str) -> bool:
    return [status for _, status, _ in asyncio.run(outbox_rows(url))] == ["sent"] * len(RECIPIENTS)


def test_a_worker_killed_mid_send_loses_nothing_and_sends_no_second_copy(
    case: tuple[str, str], tmp_path: Path
) -> None:
    url, stall_on = case
    ids = asyncio.run(enqueue(url))
    with StallingSmtp(stall_on) as smtp:
        first = start_worker(worker_env(url, smtp.port), tmp_path, "first")
        try:
            wait_until(
                smtp.stalled.is_set, f"a send stalls on {stall_on}", first, tmp_path / "first.log"
            )
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(timeout=15) == -signal.SIGKILL
        finally:
            stop(first)
        if stall_on == "DATA":
            # The kill landed mid-send: the server held the whole message, unanswered, and
            # drops it once the connection is gone.
            deadline = time.monotonic() + DEADLINE
            while not smtp.dropped and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(smtp.dropped) == 1
            assert smtp.messages() == []
        else:
            # Accepted, then killed before the worker could record it sent.
            assert len(smtp.messages()) == 1
        killed_while_sending = [str(m["To"]) for m in smtp.messages()]

        second = start_worker(worker_env(url, smtp.port), tmp_path, "second")
        try:
            # "sent" is final: once every row is sent, no worker sends anything again, so
            # what the server holds then is the whole run.
            wait_until(
                lambda: all_sent(url),
                "the second worker delivers everything once the lease is over",
                second,
                tmp_path / "second.log",
            )
            rows = asyncio.run(outbox_rows(url))
            received = smtp.messages()
        finally:
            stop(second)

    # Deduplicated by Message-ID, every recipient has exactly one message: its own.
    by_message_id = Counter((str(m["To"]), str(m["Message-ID"])) for m in received)
    assert sorted(by_message_id) == sorted(
        (to, f"<{ids[to]}@mail.example.test>") for to in RECIPIENTS
    )
    per_recipient = Counter(str(m["To"]) for m in received)
    if stall_on == "DATA":
        assert per_recipient == dict.fromkeys(RECIPIENTS, 1)
    else:
        # The one duplicate at-least-once allows: the copy accepted just before the kill.
        assert per_recipient == {to: 2 if to in killed_while_sending else 1 for to in RECIPIENTS}
    # Each message was claimed by the killed worker (the attempt counted) and by the second.
    assert {attempts for _, _, attempts in rows} == {2}
