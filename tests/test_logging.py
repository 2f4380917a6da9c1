"""The redaction processor: secrets never reach a log line, whatever key or text holds them."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from authkeep.logging import REDACTED, formatter, redact, redact_mapping, scrub

JWT = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzMjU2LWFiYyIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwidG9rZW5fdHlwZSI6ImFjY2VzcyJ9"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
ARGON2 = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$TWFrZUl0TG9uZ0Vub3VnaEZvckFIYXNo"
BCRYPT = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"


def run(**event: Any) -> dict[str, Any]:
    """Pass one event through the processor."""
    return dict(redact(None, "info", dict(event)))


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "new_password",
        "current_password",
        "passwd",
        "passphrase",
        "secret",
        "secret_key",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "Authorization",
        "authorisation",
        "cookie",
        "set-cookie",
        "api_key",
        "X-API-Key",
        "credentials",
        "hashed_password",
        "private_key",
        "session_key",
        "key",
    ],
)
def test_values_under_sensitive_keys_are_replaced(key: str) -> None:
    assert run(**{key: "hunter2-very-secret", "event": "x"})[key] == REDACTED


@pytest.mark.parametrize("key", ["token_type", "request_id", "event", "user_id", "path", "kid"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert run(**{key: "plain value"})[key] == "plain value"


def test_nested_mappings_and_lists_are_redacted() -> None:
    out = run(
        event="login",
        body={"email": "a@example.com", "password": "hunter2", "inner": {"api_key": "k"}},
        items=[{"token": "t"}, "Bearer abc.def", 3],
    )
    assert out["body"] == {
        "email": "a@example.com",
        "password": REDACTED,
        "inner": {"api_key": REDACTED},
    }
    assert out["items"] == [{"token": REDACTED}, "Bearer [REDACTED]", 3]


def test_structlog_bookkeeping_keys_are_left_alone() -> None:
    record = object()
    out = run(event="x", _record=record, _from_structlog=True)
    assert out["_record"] is record


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"decoded {JWT} for user", JWT),
        (f"Authorization: Bearer {JWT}", JWT),
        ("Authorization: Bearer opaque-token_value.123", "opaque-token_value.123"),
        ("authorization: bearer lower-case-token", "lower-case-token"),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        (f"stored hash {ARGON2}, user 7", ARGON2),
        (f"legacy hash {BCRYPT}", BCRYPT),
        ("key ak_live_0123456789abcdef used", "ak_live_0123456789abcdef"),
        (f"unsigned {JWT.rsplit('.', 1)[0]}.", JWT.rsplit(".", 1)[0]),
    ],
)
def test_credentials_inside_free_text_are_masked(text: str, secret: str) -> None:
    scrubbed = scrub(text)
    assert secret not in scrubbed
    assert "REDACTED" in scrubbed
    assert secret not in run(event=text)["event"]
    assert secret not in run(event="x", detail=text)["detail"]


def test_ordinary_text_is_untouched() -> None:
    text = "GET /api/v1/auth/me 200 in 3.2 ms for 203.0.113.7; token_type=access"
    assert scrub(text) == text


def test_redact_mapping_returns_a_redacted_copy() -> None:
    original = {"password": "hunter2", "note": f"with {JWT}", "n": 1}
    copy = redact_mapping(original)
    assert copy == {"password": REDACTED, "note": "with [REDACTED_JWT]", "n": 1}
    assert original["password"] == "hunter2"


def test_the_formatter_redacts_stdlib_and_structlog_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    logger = logging.getLogger("authkeep.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        # A library logging a header it should not have, through the standard library...
        logger.info("outgoing headers: Authorization: Bearer %s", JWT)
        # ...and an exception whose message holds a hash.
        try:
            raise ValueError(f"cannot parse {ARGON2}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert JWT not in text
    assert ARGON2 not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["event"] == "outgoing headers: Authorization: Bearer [REDACTED_JWT]"
    assert "[REDACTED_HASH]" in lines[1]["exception"]
