"""Helpers for the email-flow tests (importable as ``account_helpers``): an app that mails
into a directory or a real SMTP server, waiting for its mail, and the link tokens in it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from authkeep import Settings, create_app
from authkeep.db.models import OutboxMessage
from helpers import authkeep_of, client_for, running
from mail_helpers import read_eml_dir, text_of

_TOKEN = re.compile(r"token=([A-Za-z0-9_-]{43})")


def token_in(message: EmailMessage) -> str:
    """The token of the link in ``message``'s text part."""
    found = _TOKEN.search(text_of(message))
    assert found is not None, text_of(message)
    return found.group(1)


def to(message: EmailMessage) -> str:
    """The recipient of ``message``."""
    return str(message["To"])


async def drained(app: FastAPI, timeout: float = 15.0) -> None:
    """Wait until the outbox holds nothing left to deliver (intents turned into emails, and
    those emails delivered)."""
    db = authkeep_of(app).services.db
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with db.reading() as conn:
            left = (
                await conn.execute(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status.in_(("pending", "sending")))
                )
            ).scalar_one()
        if not left:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the outbox was not drained in time")


@dataclass
class MailApp:
    """A running app, its client, and where its mail goes (``inbox()`` reads it)."""

    app: FastAPI
    http: httpx.AsyncClient
    inbox: Callable[[], list[EmailMessage]]

    async def mail(self, count: int | None = None) -> list[EmailMessage]:
        """Every message sent so far, once the outbox is drained (and, with ``count``,
        checked to be that many)."""
        await drained(self.app)
        found = self.inbox()
        if count is not None:
            assert len(found) == count, [(to(m), m["Subject"]) for m in found]
        return found

    async def mail_to(self, address: str, template_subject: str | None = None) -> EmailMessage:
        """The newest message to ``address`` (whose subject contains ``template_subject``)."""
        found = [
            m
            for m in await self.mail()
            if to(m) == address and (template_subject is None or template_subject in m["Subject"])
        ]
        assert found, f"no mail to {address}"
        return found[-1]


@asynccontextmanager
async def mail_app(
    make_settings: Callable[..., Settings],
    mail_dir: Path | None = None,
    *,
    smtp: Any | None = None,
    peer: tuple[str, int] | None = None,
    **overrides: Any,
) -> AsyncIterator[MailApp]:
    """A running app whose mail goes to ``mail_dir`` (file transport) or to ``smtp`` (an
    :class:`mail_helpers.SmtpSink`)."""
    if smtp is not None:
        overrides.update(smtp.settings())
        inbox: Callable[[], list[EmailMessage]] = smtp.messages
    else:
        assert mail_dir is not None
        overrides.update(email_backend="file", email_file_dir=mail_dir)

        def inbox() -> list[EmailMessage]:
            return read_eml_dir(mail_dir)

    overrides.setdefault("outbox_poll_seconds", 0.05)
    app = create_app(make_settings(**overrides))
    async with running(app):
        client = client_for(app) if peer is None else client_for(app, peer)
        async with client as http:
            yield MailApp(app, http, inbox)


def header_names(response: httpx.Response) -> set[str]:
    """The names of a response's headers (values such as the request id differ)."""
    return {name.lower() for name in response.headers}
