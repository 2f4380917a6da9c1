"""Helpers shared by tests (importable as ``helpers``)."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from fastapi import FastAPI

from authkeep import Authkeep
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.security.data_keys import SecretBox
from authkeep.security.emails import email_key, normalize_email
from authkeep.security.envelope import Envelope

PEER = ("203.0.113.7", 40000)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run ``app``'s lifespan around the block."""
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI, peer: tuple[str, int] = PEER) -> httpx.AsyncClient:
    """An in-process HTTP client; ``peer`` is the socket address the app sees."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=peer), base_url="http://localhost"
    )


PASSWORD = "correct horse battery staple"
# An AUTHKEEP_DATA_KEYS entry for tests that build production settings (a published test
# value: never use it anywhere real).
TEST_DATA_KEY = "test-dk:" + "A" * 43


def envelope_for_tests() -> Envelope:
    """An envelope over :data:`TEST_DATA_KEY`, for tests that write rows without an app."""
    return Envelope(SecretBox.from_entries([TEST_DATA_KEY]))


async def register(
    http: httpx.AsyncClient,
    email: str = "alice@example.com",
    password: str = PASSWORD,
    *,
    verified: bool = False,
) -> dict[str, Any]:
    """Register a user and return it as ``GET /auth/me`` would show it.

    The register answer is a 202 that does not say whether an account was made (issue 11),
    so the user is read from the app's database (``http`` must be an in-process client of
    :func:`client_for`). ``verified`` marks the address as proven, without reading mail.
    """
    response = await http.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 202, response.text
    app = app_of(http)
    if verified:
        await mark_verified(app, email)
    return await user_json(app, email)


def app_of(http: httpx.AsyncClient) -> FastAPI:
    """The app behind an in-process client of :func:`client_for`."""
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport), "needs an in-process client"
    return cast(FastAPI, transport.app)


async def user_json(app: FastAPI, email: str) -> dict[str, Any]:
    """The account with ``email`` as the API shows a user."""
    services = authkeep_of(app).services
    async with services.db.reading() as conn:
        user = await user_rows.get_by_email_key(
            conn, services.envelope, email_key(normalize_email(email))
        )
    assert user is not None, f"no account for {email}"
    return {
        "id": str(user.id),
        "email": user.email,
        "full_name": user.full_name,
        "is_active": user.is_active,
        "created_at": user.created_at.isoformat().replace("+00:00", "Z"),
        "email_verified": user.email_verified,
        "mfa_enabled": user.mfa_enabled,
    }


async def mark_verified(app: FastAPI, email: str) -> None:
    """Mark the address of the account with ``email`` as proven (as opening the
    verification link would), and tell every cache."""
    services = authkeep_of(app).services
    async with services.db.transaction() as conn:
        user = await user_rows.get_by_email_key(
            conn, services.envelope, email_key(normalize_email(email))
        )
        assert user is not None, f"no account for {email}"
        await user_rows.mark_email_verified(conn, services.envelope, user.id, user.email, utcnow())
    await services.revocations.users_changed([str(user.id)])


async def login(
    http: httpx.AsyncClient, email: str = "alice@example.com", password: str = PASSWORD
) -> dict[str, Any]:
    """Log in and return the token pair."""
    response = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


# The security headers of shared/CONTRACT.md, exactly as every response must carry them.
# X-XSS-Protection is "0" on purpose: see authkeep.http.middleware.security_headers.
CONTRACT_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "x-xss-protection": "0",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": "geolocation=(), microphone=(), camera=()",
    "cache-control": "no-store",
}


def missing_security_headers(response: httpx.Response) -> list[str]:
    """The contract headers ``response`` lacks or gets wrong (empty when all are right),
    X-Request-ID and a Content-Security-Policy included."""
    wrong = [
        f"{name}: {response.headers.get(name)!r}"
        for name, value in CONTRACT_HEADERS.items()
        if response.headers.get(name) != value
    ]
    if "default-src" not in response.headers.get("content-security-policy", ""):
        wrong.append("content-security-policy")
    if not response.headers.get("x-request-id"):
        wrong.append("x-request-id")
    return wrong


def authkeep_of(app: FastAPI) -> Authkeep:
    """The :class:`authkeep.Authkeep` installed on ``app``."""
    return cast(Authkeep, app.state.authkeep)


@functools.cache
def _passlib_bcrypt() -> Any:
    with warnings.catch_warnings():
        # passlib 1.7.4 imports the standard library's "crypt", deprecated since Python 3.11.
        warnings.filterwarnings(
            "ignore", message="'crypt' is deprecated", category=DeprecationWarning
        )
        from passlib.hash import bcrypt
    # passlib's C backend ("bcrypt") cannot load against bcrypt>=5: its self-test hashes a
    # 255-byte password, which bcrypt 5 refuses. Its pure-Python backend writes the very same
    # $2b$ hashes; it must be enabled explicitly, and is slow, hence the minimum cost.
    previous = os.environ.get("PASSLIB_BUILTIN_BCRYPT")
    os.environ["PASSLIB_BUILTIN_BCRYPT"] = "enabled"
    try:
        bcrypt.set_backend("builtin")
    finally:
        if previous is None:
            del os.environ["PASSLIB_BUILTIN_BCRYPT"]
        else:
            os.environ["PASSLIB_BUILTIN_BCRYPT"] = previous
    return bcrypt.using(rounds=4)


@functools.cache
def passlib_bcrypt_hash(password: str) -> str:
    """A ``$2b$`` hash of ``password`` written by passlib, as legacy apps stored them."""
    hashed = str(_passlib_bcrypt().hash(password))
    assert hashed.startswith("$2b$04$"), hashed
    return hashed
