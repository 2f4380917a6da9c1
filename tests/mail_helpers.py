"""A real SMTP server for the mail tests (aiosmtpd on loopback), and readers for what the
file transport wrote. Importable as ``mail_helpers``; the ``smtp_server`` fixture lives in
``tests/conftest.py``."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

# aiosmtpd narrates every connection at INFO; the tests read what it received instead.
logging.getLogger("mail.log").setLevel(logging.WARNING)

SMTP_USER = "mailer@example.com"
SMTP_PASSWORD = "smtp-Pa55-never-in-logs-7f3a"
"""The test server's credentials; ``tests/conftest.py`` fails the session if a log line
holds the password."""


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse(raw: bytes) -> EmailMessage:
    """A received message, parsed with the modern policy (``get_body`` etc.)."""
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def text_of(message: EmailMessage) -> str:
    """The plain-text part."""
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    """The HTML part."""
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


class _Collect:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        with self._sink.lock:
            self._sink.received.append(
                (list(envelope.rcpt_tos), parse(bytes(envelope.original_content or b"")))
            )
        return "250 Message accepted for delivery"


def _authenticate(
    server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == SMTP_USER
        and auth_data.password.decode() == SMTP_PASSWORD
    )
    return AuthResult(success=ok, handled=False)


class SmtpSink:
    """An SMTP server on ``127.0.0.1:port`` that keeps every message it accepts. ``stop()``
    and ``start()`` take it down and bring it back on the same port (outage tests)."""

    def __init__(self, *, require_auth: bool = False) -> None:
        self.port = free_port()
        self.require_auth = require_auth
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self.require_auth:
            # AUTH offered in clear on loopback (no certificate to manage in tests); the
            # client authenticates because it has credentials.
            options.update(authenticator=_authenticate, auth_require_tls=False)
        controller = Controller(
            _Collect(self), hostname="127.0.0.1", port=self.port, ready_timeout=10, **options
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            return [message for _, message in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """The messages once at least ``count`` arrived (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} message(s), got {len(self.messages())}")

    def settings(self) -> dict[str, Any]:
        """Settings overrides that send to this server."""
        values: dict[str, Any] = {
            "email_backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_tls": "none",
            "smtp_timeout_seconds": 5,
        }
        if self.require_auth:
            values.update(smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
        return values


def read_eml_dir(directory: Path) -> list[EmailMessage]:
    """The messages the file transport wrote, oldest first."""
    if not directory.exists():
        return []
    return [parse(path.read_bytes()) for path in sorted(directory.glob("*.eml"))]
