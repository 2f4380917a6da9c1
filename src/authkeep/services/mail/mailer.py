"""Queueing an email: what the flows (verification, reset, invitations) call."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.services.mail.handler import EMAIL
from authkeep.services.mail.message import parse_address
from authkeep.services.mail.templates import MailTemplates
from authkeep.services.outbox.queue import Outbox


class Mailer:
    """Puts emails in the outbox, in the caller's transaction."""

    def __init__(self, outbox: Outbox, templates: MailTemplates) -> None:
        self._outbox = outbox
        self._templates = templates

    async def enqueue(
        self,
        conn: AsyncConnection,
        template: str,
        to: str,
        context: Mapping[str, Any] | None = None,
        *,
        dedup_key: str | None = None,
    ) -> uuid.UUID | None:
        """Queue message ``template`` to ``to`` on ``conn`` (inside its transaction); it is
        sent after the transaction commits, and never if it rolls back. Returns the outbox
        id, or None when ``dedup_key`` was used before.

        The message is rendered once here, so that a missing variable or an unknown template
        fails the calling flow (and its test) at once rather than the delivery later.
        ``context`` must be JSON (it is stored until delivery).
        """
        values = dict(context or {})
        parse_address(to)
        self._templates.render(template, values)
        json.dumps(values)  # refuse a context the JSON column could not store, here
        return await self._outbox.enqueue(
            conn,
            EMAIL,
            {"template": template, "to": to, "context": values},
            dedup_key=dedup_key,
        )
