"""Building an email: ``email.message.EmailMessage``, text with an HTML alternative."""

from __future__ import annotations

import uuid
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from authkeep.db.base import utcnow
from authkeep.services.mail.templates import RenderedMail


class InvalidAddress(ValueError):
    """Not a single email address (or one with a line break: header injection)."""


def parse_address(value: str) -> Address:
    """``value`` as one address; InvalidAddress otherwise."""
    if any(char in value for char in "\r\n") or "," in value:
        raise InvalidAddress("an email address must be one address on one line")
    try:
        return Address(addr_spec=value.strip())
    except (ValueError, IndexError) as exc:
        raise InvalidAddress("not a valid email address") from exc


def message_id(outbox_id: uuid.UUID, sender: str) -> str:
    """The ``Message-ID`` of the outbox message ``outbox_id``: the same on every attempt, so
    a mail system (or a person) can tell a retried copy from a new message."""
    domain = sender.rsplit("@", 1)[-1].strip(" >") or "authkeep.invalid"
    return f"<{outbox_id}@{domain}>"


def build_message(
    rendered: RenderedMail, *, sender: str, to: str, outbox_id: uuid.UUID
) -> EmailMessage:
    """A multipart/alternative message: the text part first, then the HTML part."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = parse_address(to)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id(outbox_id, sender)
    # Automatic mail: out-of-office replies should not answer it (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
