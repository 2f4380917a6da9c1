"""Login without user enumeration, over HTTP, on the JSON route and the OAuth2 form route.

Unknown email, wrong password, inactive user and deleted user must be indistinguishable to
the client: same status, same body bytes, same headers (the request id aside). The "same
time" half is asserted on the code path — each failure verifies exactly one argon2 hash,
the dummy one for an unknown email — never with a clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from helpers import PASSWORD, authkeep_of, bearer, login, register

LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
FAILURE = {"detail": "Incorrect email or password"}
# The OAuth2 token endpoint says the same in RFC 6749's words (400 invalid_grant).
FORM_FAILURE = {"error": "invalid_grant", "error_description": "Incorrect email or password"}

Attempt = Callable[[str, str], Awaitable[httpx.Response]]


def json_login(client: httpx.AsyncClient) -> Attempt:
    async def attempt(email: str, password: str) -> httpx.Response:
        return await client.post(LOGIN, json={"email": email, "password": password})

    return attempt


def form_login(client: httpx.AsyncClient) -> Attempt:
    async def attempt(email: str, password: str) -> httpx.Response:
        form = {"grant_type": "password", "username": email, "password": password}
        return await client.post(TOKEN, data=form)

    return attempt


# Differ from one request to the next whatever the account: the request id, and the rate
# limiter's running count of this client's requests.
_PER_REQUEST = frozenset({"x-request-id", "ratelimit-remaining", "ratelimit-reset"})


def shape(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    """Everything a client can observe, minus what changes with every request."""
    headers = {k: v for k, v in response.headers.items() if k not in _PER_REQUEST}
    return response.status_code, response.content, headers


async def failing_users(client: httpx.AsyncClient, app: FastAPI) -> dict[str, tuple[str, str]]:
    """Register the accounts of the four failures; (email, password) of each attempt."""
    alice = await register(client, "alice@example.com")
    inactive = await register(client, "inactive@example.com")
    deleted = await register(client, "deleted@example.com")
    accounts = authkeep_of(app).services.accounts
    await accounts.set_active(uuid.UUID(inactive["id"]), False)
    await accounts.soft_delete(uuid.UUID(deleted["id"]))
    assert alice["is_active"]
    return {
        "unknown email": ("nobody@example.com", PASSWORD),
        "wrong password": ("alice@example.com", PASSWORD + " nope"),
        "inactive user": ("inactive@example.com", PASSWORD),
        "deleted user": ("deleted@example.com", PASSWORD),
    }


def record_verifications(monkeypatch: pytest.MonkeyPatch, app: FastAPI) -> list[str]:
    """The stored hashes argon2 verifies passwords against, in order."""
    hasher = authkeep_of(app).services.hasher
    verified: list[str] = []
    real = hasher._argon2.verify

    def recording(password: Any, hashed: Any) -> bool:
        verified.append(hashed)
        return bool(real(password, hashed))

    monkeypatch.setattr(hasher._argon2, "verify", recording)
    return verified


async def test_the_four_failures_are_indistinguishable(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = await failing_users(client, app)
    dummy = authkeep_of(app).services.hasher._dummy_hash
    verified = record_verifications(monkeypatch, app)
    for route, status, failure in (
        (json_login(client), 401, FAILURE),
        (form_login(client), 400, FORM_FAILURE),
    ):
        shapes = {}
        for name, credentials in attempts.items():
            verified.clear()
            response = await route(*credentials)
            assert response.status_code == status, name
            assert response.json() == failure, name
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer", name
            shapes[name] = shape(response)
            # The same work whatever the failure: one argon2 verification, against the
            # dummy hash when there is no account.
            assert len(verified) == 1, name
            assert (verified[0] == dummy) == (name == "unknown email"), name
        reference = shapes["unknown email"]
        assert all(observed == reference for observed in shapes.values()), shapes

        # The control: the same route lets the right password in.
        ok = await route("alice@example.com", PASSWORD)
        assert ok.status_code == 200
        assert ok.json()["token_type"] == "bearer"


async def test_a_malformed_email_fails_like_an_unknown_one(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(client)
    dummy = authkeep_of(app).services.hasher._dummy_hash
    verified = record_verifications(monkeypatch, app)
    # NUL and invisible characters cannot be in any stored address; PostgreSQL refuses NUL
    # outright, which once turned these into 500s.
    for attempt in (json_login(client), form_login(client)):
        reference = shape(await attempt("x@example.com", "p"))
        for email in ("alice\x00@example.com", "al\u200bice@example.com", "not-an-email", "@@@"):
            response = await attempt(email, PASSWORD)
            assert shape(response) == reference, email
    assert verified
    assert all(hashed == dummy for hashed in verified)


async def test_email_lookup_ignores_case_and_surrounding_space(client: httpx.AsyncClient) -> None:
    await register(client, "Alice@Example.com")
    for email in ("alice@example.com", "ALICE@EXAMPLE.COM", "  Alice@Example.com  "):
        pair = await login(client, email)
        assert pair["user"]["email"] == "Alice@example.com"


async def test_a_login_returns_the_contract_fields(client: httpx.AsyncClient) -> None:
    user = await register(client)
    pair = await login(client)
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 30 * 60
    assert pair["user"] == user
    assert set(user) == {
        "id",
        "email",
        "full_name",
        "is_active",
        "created_at",
        "email_verified",
        "mfa_enabled",
    }


async def test_the_form_route_issues_working_tokens(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.post(
        TOKEN,
        data={"grant_type": "password", "username": "alice@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert response.headers["cache-control"] == "no-store"
    me = await client.get("/api/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"


async def test_the_form_route_rejects_a_missing_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TOKEN, data={"grant_type": "password", "username": "alice@example.com"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
