"""The outbox handler of ``email`` messages: render the template, build the message, send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authkeep.db.outbox import ClaimedMessage
from authkeep.services.mail.message import InvalidAddress, build_message
from authkeep.services.mail.templates import MailTemplates, TemplateError
from authkeep.services.mail.transports import Transport
from authkeep.services.outbox.handlers import PermanentDeliveryError

EMAIL = "email"
"""The outbox kind of emails."""


class EmailHandler:
    """Delivers ``email`` outbox messages: payload ``{"template", "to", "context"}``."""

    def __init__(self, templates: MailTemplates, transport: Transport, *, sender: str) -> None:
        self.templates = templates
        self.transport = transport
        self.sender = sender

    async def deliver(self, message: ClaimedMessage) -> None:
        """Render and send; a payload that cannot become an email fails for good."""
        payload = message.payload
        try:
            rendered = self.templates.render(
                str(payload["template"]), dict(payload.get("context") or {})
            )
            email = build_message(
                rendered, sender=self.sender, to=str(payload["to"]), outbox_id=message.id
            )
        except (KeyError, TypeError) as exc:
            raise PermanentDeliveryError(
                f"malformed email payload ({type(exc).__name__})"
            ) from None
        except (TemplateError, InvalidAddress) as exc:
            raise PermanentDeliveryError(str(exc)) from None
        await self.transport.send(email)

    def scrub(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the template's name only: the context holds single-use tokens and the
        recipient is personal data; neither is needed once the message is settled."""
        return {"template": payload.get("template")}
