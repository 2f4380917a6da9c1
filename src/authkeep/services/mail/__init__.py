"""Email: templates, transports and the outbox handler that sends what flows queue.

Flows queue an email with :meth:`Mailer.enqueue` inside the transaction of the change that
causes it; the outbox worker (``authkeep.services.outbox``) delivers it through the
configured :class:`Transport`. See ``docs/email.md``.
"""

from authkeep.services.mail.handler import EMAIL, EmailHandler
from authkeep.services.mail.mailer import Mailer
from authkeep.services.mail.message import InvalidAddress, build_message, parse_address
from authkeep.services.mail.templates import (
    TEMPLATE_NAMES,
    MailTemplates,
    RenderedMail,
    TemplateError,
)
from authkeep.services.mail.transports import (
    ConsoleTransport,
    FileTransport,
    SmtpTransport,
    Transport,
    build_transport,
)

__all__ = [
    "EMAIL",
    "TEMPLATE_NAMES",
    "ConsoleTransport",
    "EmailHandler",
    "FileTransport",
    "InvalidAddress",
    "MailTemplates",
    "Mailer",
    "RenderedMail",
    "SmtpTransport",
    "TemplateError",
    "Transport",
    "build_message",
    "build_transport",
    "parse_address",
]
