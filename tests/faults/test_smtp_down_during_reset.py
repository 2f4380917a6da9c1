"""The SMTP server goes down before a password reset is asked for, and comes back later: a
running app (in-process delivery, the embedded default) and a real SMTP server (aiosmtpd on
loopback) stopped and started again on the same port.

The request does not care: it answers 202 at once (it only writes to the outbox). The email
is attempted while the server is down — each failure recorded and the message put back with
backoff, never dropped — and delivered once the server is back, exactly once; its link then
resets the password. On SQLite and on PostgreSQL + Redis.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from authkeep import Settings, create_app
from authkeep.db import outbox as outbox_rows
from authkeep.db.models import OutboxMessage
from helpers import PASSWORD, authkeep_of, client_for, running
from mail_helpers import SmtpSink, text_of

pytestmark = pytest.mark.slow

EMAIL = "reset-me@example.com"
NEW_PASSWORD = "violet tractor umbrella midnight 93"
DEADLINE = 30.0
FAST_RETRIES = {
    "outbox_backoff_base_seconds": 0.2,
    "outbox_backoff_max_seconds": 0.5,
    "outbox_poll_seconds": 0.1,
    "argon2_memory_kib": 8192,
    "argon2_time_cost": 1,
}


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something true (the deadline only bounds a failing
    run; nothing here measures time). Asynchronous: the in-process worker must run."""
    deadline = time.monotonic() + DEADLINE
    while not (found := await check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.05)
    return found


def reset_mails(smtp: SmtpSink) -> list[Any]:
    return [m for m in smtp.messages() if "/reset-password?token=" in text_of(m)]


async def test_smtp_down_during_a_reset_request_delays_the_email_and_loses_nothing(
    make_settings: Callable[..., Settings], smtp_server: SmtpSink
) -> None:
    app = create_app(make_settings(**smtp_server.settings(), **FAST_RETRIES))
    async with running(app), client_for(app) as http:
        db = authkeep_of(app).services.db

        async def reset_email_rows() -> list[Any]:
            async with db.reading() as conn:
                rows = (
                    await conn.execute(
                        sa.select(OutboxMessage).where(OutboxMessage.kind == "email")
                    )
                ).all()
            # Payloads are sealed at rest, each bound to its row.
            envelope = authkeep_of(app).services.envelope
            return [
                r
                for r in rows
                if outbox_rows.open_payload(envelope, r.id, r.payload).get("template")
                == "password_reset"
            ]

        registered = await http.post(
            "/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD}
        )
        assert registered.status_code == 202, registered.text
        await eventually(
            lambda: asyncio.sleep(0, smtp_server.messages()), "the verification email arrives"
        )

        smtp_server.stop()
        asked = await http.post("/api/v1/auth/password/forgot", json={"email": EMAIL})
        assert asked.status_code == 202, asked.text

        async def retried_while_down() -> bool:
            rows = await reset_email_rows()
            return bool(rows) and rows[0].attempts >= 2 and rows[0].status == "pending"

        await eventually(retried_while_down, "the reset email fails and is retried")
        [row] = await reset_email_rows()
        assert "SMTP connection failed" in (row.last_error or "")
        assert reset_mails(smtp_server) == []

        smtp_server.start()
        [mail] = await eventually(
            lambda: asyncio.sleep(0, reset_mails(smtp_server)),
            "the reset email is delivered once the server is back",
        )
        assert mail["To"] == EMAIL

        async def settled() -> bool:
            rows = await reset_email_rows()
            return [r.status for r in rows] == ["sent"]

        # Sent is final: from here on nothing would send it again.
        await eventually(settled, "the reset email is recorded as sent")
        assert len(reset_mails(smtp_server)) == 1

        match = re.search(r"/reset-password\?token=([A-Za-z0-9_\-.~%]+)", text_of(mail))
        assert match is not None
        reset = await http.post(
            "/api/v1/auth/password/reset",
            json={"token": match.group(1), "new_password": NEW_PASSWORD},
        )
        assert reset.status_code == 204, reset.text
        login = await http.post(
            "/api/v1/auth/login", json={"email": EMAIL, "password": NEW_PASSWORD}
        )
        assert login.status_code == 200, login.text
