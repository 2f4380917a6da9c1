"""Mail: templates (packaged, overridable, escaped), the message, the transports — through a
real SMTP server (aiosmtpd on loopback) and the file transport — and delivery by the
in-process worker of a running authkeep, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from authkeep import Settings, create_app
from authkeep.db import outbox as outbox_rows
from authkeep.db.engine import Database
from authkeep.db.models import OutboxMessage
from authkeep.services.delivery import Delivery, build_delivery
from authkeep.services.mail import (
    TEMPLATE_NAMES,
    ConsoleTransport,
    FileTransport,
    InvalidAddress,
    MailTemplates,
    SmtpTransport,
    TemplateError,
    build_transport,
)
from helpers import TEST_DATA_KEY, authkeep_of, running
from mail_helpers import SMTP_PASSWORD, SmtpSink, html_of, read_eml_dir, text_of

PUBLIC = "https://app.example.com"

# The context each message needs (the flows pass these).
CONTEXTS: dict[str, dict[str, Any]] = {
    "verify_email": {"token": "tok-verify"},
    "password_reset": {"token": "tok-reset", "expires_minutes": 60},
    "email_change_confirm": {"token": "tok-change", "new_email": "new@example.com"},
    "email_change_notice": {"new_email": "new@example.com"},
    "signup_attempt_existing": {},
    "invitation": {
        "token": "tok-invite",
        "org_name": "Acme",
        "role": "editor",
        "inviter_name": "Alice",
        "expires_days": 7,
    },
    "password_changed": {},
    "recovery_code_used": {"remaining": 9},
    "mfa_reset": {},
    "deletion_scheduled": {"token": "tok", "deletion_date": "2026-12-17", "inactive_days": 0},
    "inactivity_warning": {
        "last_active_date": "2025-12-01",
        "inactive_days": 365,
        "scheduled_date": "2026-12-31",
    },
    "account_deleted": {},
    "webhook_disabled": {
        "endpoint_id": "5f0c8a1e-0000-4000-8000-000000000001",
        "host": "hooks.example.com",
        "reason": "failures",
        "failures": 50,
        "platform": False,
    },
}


def templates(override_dir: Path | None = None) -> MailTemplates:
    return MailTemplates(product_name="Acme ID", public_url=PUBLIC, override_dir=override_dir)


@pytest.fixture
async def delivery_for(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    """Build a Delivery on the current backend with settings overrides."""
    opened: list[Database] = []

    async def build(**overrides: Any) -> tuple[Database, Delivery]:
        settings = make_settings(public_url=PUBLIC, product_name="Acme ID", **overrides)
        db = Database(settings.database_url)
        opened.append(db)
        return db, build_delivery(settings, db)

    yield build
    for db in opened:
        await db.close()


# Templates ---------------------------------------------------------------------------------


def test_every_template_is_packaged_and_renders_with_its_context() -> None:
    assert set(CONTEXTS) == TEMPLATE_NAMES
    for name, context in CONTEXTS.items():
        rendered = templates().render(name, context)
        assert "Acme ID" in rendered.subject, name
        for body in (rendered.text, rendered.html):
            assert "Acme ID" in body, name
            if "token" in context:
                assert f"{PUBLIC}/" in body, name
                assert context["token"] in body, name
        assert rendered.html.lstrip().startswith("<!DOCTYPE html>"), name


def test_links_start_with_the_public_url() -> None:
    rendered = templates().render("password_reset", CONTEXTS["password_reset"])
    assert f"{PUBLIC}/reset-password?token=tok-reset" in rendered.text
    notice = templates().render("email_change_notice", CONTEXTS["email_change_notice"])
    assert f"{PUBLIC}/forgot-password" in notice.text
    assert "wasn't you" in notice.text


def test_html_is_escaped_and_text_is_not() -> None:
    hostile = {**CONTEXTS["invitation"], "org_name": '<script>alert("x")</script> & Co'}
    rendered = templates().render("invitation", hostile)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert "&amp; Co" in rendered.html
    assert '<script>alert("x")</script> & Co' in rendered.text


def test_a_missing_variable_is_an_error_not_an_empty_link() -> None:
    with pytest.raises(TemplateError, match="token"):
        templates().render("verify_email", {})
    with pytest.raises(TemplateError, match="unknown email template"):
        templates().render("no_such_message", {})


def test_a_subject_is_one_line_whatever_the_context() -> None:
    context = {**CONTEXTS["invitation"], "org_name": "Acme\r\nBcc: victim@example.com"}
    subject = templates().render("invitation", context).subject
    assert "\n" not in subject
    assert "\r" not in subject


def test_the_override_directory_wins_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "verify_email.txt").write_text("Custom: {{ link('/v', token=token) }}\n")
    (tmp_path / "_layout.html").write_text("<html>BRAND {% block content %}{% endblock %}</html>")
    rendered = templates(tmp_path).render("verify_email", {"token": "t1"})
    assert rendered.text == f"Custom: {PUBLIC}/v?token=t1\n"
    assert rendered.html.startswith("<html>BRAND")  # the packaged page, in the custom layout
    assert "Confirm my email address" in rendered.html
    # Untouched messages keep the packaged subject and text.
    assert "Confirm your email address" in rendered.subject
    other = templates(tmp_path).render("password_changed", {})
    assert "password" in other.text


# Settings ----------------------------------------------------------------------------------

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"


def production(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "env": "production",
        "secret_key": STRONG,
        "trusted_hosts": ["api.example.com"],
        "email_backend": "smtp",
        "smtp_host": "smtp.example.com",
        "public_url": PUBLIC,
        "data_keys": [TEST_DATA_KEY],
    }
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


def test_production_refuses_the_console_transport() -> None:
    assert production().mail_backend == "smtp"
    for backend in ("console", None):
        with pytest.raises(ValueError, match="AUTHKEEP_EMAIL_BACKEND is console"):
            production(email_backend=backend)
    # Development defaults to it.
    development = Settings(_env_file=None, env="development", secret_key=STRONG)  # type: ignore[call-arg]
    assert development.mail_backend == "console"
    assert isinstance(build_transport(development), ConsoleTransport)


def test_production_needs_an_https_public_url() -> None:
    for url in (None, "http://app.example.com"):
        with pytest.raises(ValueError, match="AUTHKEEP_PUBLIC_URL"):
            production(public_url=url)
    with pytest.raises(ValueError, match="absolute http"):
        production(public_url="app.example.com/?x=1")
    assert production(public_url="https://app.example.com/").public_url == PUBLIC


def test_production_refuses_smtp_credentials_in_clear() -> None:
    with pytest.raises(ValueError, match="AUTHKEEP_SMTP_TLS is none"):
        production(smtp_tls="none", smtp_password="pw-123456")
    assert production(smtp_tls="none", smtp_host="127.0.0.1", smtp_password="pw-1").smtp_tls


def test_the_transport_follows_the_setting(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, env="test", secret_key=STRONG, email_backend="file", email_file_dir=tmp_path
    )
    transport = build_transport(settings)
    assert isinstance(transport, FileTransport)
    assert transport.directory == tmp_path
    smtp = build_transport(production(smtp_password=SMTP_PASSWORD, smtp_username="u"))
    assert isinstance(smtp, SmtpTransport)
    assert SMTP_PASSWORD not in repr(smtp)


# Transports and delivery -------------------------------------------------------------------


async def test_the_console_transport_prints_the_message(
    delivery_for: Callable[..., Any],
) -> None:
    db, delivery = await delivery_for()
    stream = io.StringIO()
    delivery.handlers["email"].transport = ConsoleTransport(stream)  # type: ignore[attr-defined]
    async with db.transaction() as conn:
        await delivery.mailer.enqueue(conn, "password_changed", "bob@example.com")
    assert await delivery.worker.run_once() == 1
    assert "To: bob@example.com" in stream.getvalue()
    assert "Your Acme ID password was changed" in stream.getvalue()


async def test_delivery_through_the_file_transport(
    delivery_for: Callable[..., Any], tmp_path: Path
) -> None:
    outgoing = tmp_path / "mail"
    db, delivery = await delivery_for(email_backend="file", email_file_dir=outgoing)
    async with db.transaction() as conn:
        outbox_id = await delivery.mailer.enqueue(
            conn, "verify_email", "Bob@Example.com", {"token": "abc&123"}
        )
    assert read_eml_dir(outgoing) == []  # queued, not sent: the worker sends
    assert await delivery.worker.run_once() == 1
    [message] = read_eml_dir(outgoing)
    assert message["To"] == "Bob@Example.com"
    assert message["Message-ID"] == f"<{outbox_id}@localhost>"
    assert f"{PUBLIC}/verify-email?token=abc%26123" in text_of(message)
    assert f"{PUBLIC}/verify-email?token=abc%26123" in html_of(message)
    [path] = outgoing.glob("*.eml")
    assert path.stat().st_mode & 0o077 == 0  # the owner's only: it holds a live link


async def test_delivery_through_a_real_smtp_server(
    delivery_for: Callable[..., Any], smtp_server: SmtpSink
) -> None:
    db, delivery = await delivery_for(
        **smtp_server.settings(), email_from="Acme ID <no-reply@acme.example>"
    )
    async with db.transaction() as conn:
        await delivery.mailer.enqueue(
            conn, "password_reset", "carol@example.com", CONTEXTS["password_reset"]
        )
    assert await delivery.worker.run_once() == 1
    [message] = smtp_server.wait_for(1)
    assert smtp_server.received[0][0] == ["carol@example.com"]
    assert message["From"] == "Acme ID <no-reply@acme.example>"
    assert message["Subject"] == "Reset your Acme ID password"
    assert message["Message-ID"].endswith("@acme.example>")
    assert message.get_content_type() == "multipart/alternative"
    assert f"{PUBLIC}/reset-password?token=tok-reset" in text_of(message)
    assert "within 60 minutes" in html_of(message)


async def test_smtp_down_then_back_the_message_is_retried_and_delivered(
    delivery_for: Callable[..., Any], smtp_server: SmtpSink
) -> None:
    db, delivery = await delivery_for(**smtp_server.settings())
    smtp_server.stop()
    async with db.transaction() as conn:
        outbox_id = await delivery.mailer.enqueue(
            conn, "verify_email", "dave@example.com", {"token": "t-1"}
        )
    assert await delivery.worker.run_once() == 1
    async with db.reading() as conn:
        stored = (
            await conn.execute(select(OutboxMessage).where(OutboxMessage.id == outbox_id))
        ).one()
    assert (stored.status, stored.attempts) == ("pending", 1)
    assert stored.last_error == "SMTP connection failed (SMTPConnectError)"
    assert stored.next_attempt_at > stored.created_at

    smtp_server.start()
    # The same worker, once the backoff has passed (its clock moved past the retry time).
    delivery.worker._clock = lambda: stored.next_attempt_at  # type: ignore[method-assign]
    assert await delivery.worker.run_once() == 1
    [message] = smtp_server.wait_for(1)
    assert message["Message-ID"] == f"<{outbox_id}@localhost>"
    async with db.reading() as conn:
        assert await outbox_rows.count_by_status(conn) == {"sent": 1}


async def test_smtp_credentials_never_reach_the_logs(
    delivery_for: Callable[..., Any], log_output: io.StringIO
) -> None:
    sink = SmtpSink(require_auth=True)
    sink.start()
    try:
        db, delivery = await delivery_for(**sink.settings())
        async with db.transaction() as conn:
            await delivery.mailer.enqueue(conn, "password_changed", "erin@example.com")
        assert await delivery.worker.run_once() == 1
        sink.wait_for(1)  # the right password works...
        wrong = await delivery_for(**{**sink.settings(), "smtp_password": "wrong-" + SMTP_PASSWORD})
        db2, refused = wrong
        async with db2.transaction() as conn:
            await refused.mailer.enqueue(conn, "password_changed", "erin@example.com")
        assert await refused.worker.run_once() == 1
    finally:
        sink.stop()
    logged = log_output.getvalue()
    assert "outbox_attempt_failed" in logged  # ...and the wrong one failed, logged
    assert "SMTP 535" in logged
    assert SMTP_PASSWORD not in logged


async def test_bad_input_is_refused_when_queued(delivery_for: Callable[..., Any]) -> None:
    db, delivery = await delivery_for()
    async with db.transaction() as conn:
        with pytest.raises(InvalidAddress):
            await delivery.mailer.enqueue(conn, "password_changed", "a@x.com\r\nBcc: b@y.com")
        with pytest.raises(TemplateError):
            await delivery.mailer.enqueue(conn, "verify_email", "a@example.com", {})
        with pytest.raises(TypeError):
            await delivery.mailer.enqueue(
                conn, "verify_email", "a@example.com", {"token": object()}
            )


async def test_serve_delivers_in_process(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    outgoing = tmp_path / "mail"
    app = create_app(make_settings(email_backend="file", email_file_dir=outgoing))
    async with running(app):
        services = authkeep_of(app).services
        async with services.db.transaction() as conn:
            await services.delivery.mailer.enqueue(conn, "password_changed", "f@example.com")
        messages: list[EmailMessage] = []
        for _ in range(500):  # woken by the commit; waits at most 5 s for a slow machine
            messages = read_eml_dir(outgoing)
            if messages:
                break
            await asyncio.sleep(0.01)
        assert [m["To"] for m in messages] == ["f@example.com"]


async def test_no_in_process_delivery_when_a_worker_does_it(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(outbox_in_process=False))
    async with running(app):
        assert authkeep_of(app).services.delivery._task is None
    in_process = create_app(make_settings())
    async with running(in_process):
        assert authkeep_of(in_process).services.delivery._task is not None
