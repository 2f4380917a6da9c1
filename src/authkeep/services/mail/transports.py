"""How an email leaves: ``console`` (development), ``file`` (one ``.eml`` per message) or
``smtp`` (aiosmtplib, with STARTTLS or implicit TLS).

A transport raises :class:`~authkeep.services.outbox.DeliveryError` with a description that
is safe to store and log (a status code, an exception type): never the server's full answer,
never a credential.
"""

from __future__ import annotations

import os
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol, TextIO

import aiosmtplib
import anyio

from authkeep.db.base import utcnow
from authkeep.services.outbox.handlers import DeliveryError, PermanentDeliveryError
from authkeep.settings import Settings


class Transport(Protocol):
    """Sends one email."""

    async def send(self, message: EmailMessage) -> None:
        """Send ``message`` or raise DeliveryError."""
        ...


class ConsoleTransport:
    """Prints each message to a stream (stdout): development only. Production refuses it:
    the messages hold single-use links, and stdout ends up in log collectors."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: EmailMessage) -> None:
        stream = self._stream or sys.stdout
        stream.write(f"{'-' * 30} email {'-' * 30}\n{message.as_string()}\n{'-' * 67}\n")
        stream.flush()


class FileTransport:
    """Writes each message as ``<directory>/<time>-<id>.eml``, readable by its owner only
    (the messages hold single-use links). Written to a temporary name and renamed, so a
    reader never sees half a message."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        data = message.as_bytes()
        try:
            await anyio.to_thread.run_sync(self._write, data)
        except OSError as exc:
            raise DeliveryError(f"file transport: {type(exc).__name__}") from exc

    def _write(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{utcnow().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex}"
        temporary = self.directory / f".{stem}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, self.directory / f"{stem}.eml")


class SmtpTransport:
    """Sends through an SMTP server with aiosmtplib; one connection per message."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        tls: Literal["starttls", "ssl", "none"] = "starttls",
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.timeout = timeout
        self._username = username
        self._password = password

    def __repr__(self) -> str:
        # Never the password, should the transport end up in a log line or a traceback.
        return f"SmtpTransport(host={self.host!r}, port={self.port}, tls={self.tls!r})"

    async def send(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self._username,
                password=self._password,
                use_tls=self.tls == "ssl",
                # False, not None: None would mean "STARTTLS if offered", and "none" must not
                # silently change; "starttls" must refuse a server that does not offer it.
                start_tls=self.tls == "starttls",
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({error.code for error in exc.recipients})
            text = f"SMTP recipient refused ({', '.join(map(str, codes))})"
            if all(code >= 500 for code in codes):
                raise PermanentDeliveryError(text) from None
            raise DeliveryError(text) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.code} ({type(exc).__name__})") from None
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            OSError,
        ) as exc:
            raise DeliveryError(f"SMTP connection failed ({type(exc).__name__})") from None
        except aiosmtplib.SMTPException as exc:
            raise DeliveryError(f"SMTP failure ({type(exc).__name__})") from None


def build_transport(settings: Settings) -> Transport:
    """The transport ``settings`` configure (``AUTHKEEP_EMAIL_BACKEND``)."""
    backend = settings.mail_backend
    if backend == "file":
        return FileTransport(settings.email_file_dir)
    if backend == "smtp":
        return SmtpTransport(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
            tls=settings.smtp_tls,
            timeout=settings.smtp_timeout_seconds,
        )
    return ConsoleTransport()
