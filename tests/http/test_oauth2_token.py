"""``POST /api/v1/auth/token`` per RFC 6749: the password grant (§4.3), the refresh grant
(§6), success (§5.1) and errors (§5.2). Each test runs on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from authkeep import Settings, create_app
from helpers import (
    PASSWORD,
    authkeep_of,
    bearer,
    client_for,
    login,
    missing_security_headers,
    register,
    running,
)

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"
EMAIL = "alice@example.com"
WRONG = {"error": "invalid_grant", "error_description": "Incorrect email or password"}
SPENT = {
    "error": "invalid_grant",
    "error_description": "The refresh token is invalid, expired, revoked or already used",
}


def password_grant(email: str = EMAIL, password: str = PASSWORD, **extra: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": password, **extra}


def refresh_grant(token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token}


def assert_oauth2_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error, never cached; its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    assert "detail" not in body
    assert_not_cached(response)
    return body


def assert_not_cached(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_the_password_grant_issues_a_working_pair(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post(TOKEN, data=password_grant())
    assert response.status_code == 200, response.text
    assert_not_cached(response)
    assert missing_security_headers(response) == []
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    assert body["user"] == user
    me = await client.get(ME, headers=bearer(body["access_token"]))
    assert me.status_code == 200


async def test_a_failed_password_grant_is_invalid_grant_whatever_the_cause(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    inactive = await register(client, "inactive@example.com")
    await authkeep_of(app).services.accounts.set_active(uuid.UUID(inactive["id"]), False)
    answers = []
    for email, password in (
        (EMAIL, PASSWORD + " nope"),
        ("nobody@example.com", PASSWORD),
        ("inactive@example.com", PASSWORD),
        ("alice\x00@example.com", PASSWORD),
    ):
        response = await client.post(TOKEN, data=password_grant(email, password))
        assert_oauth2_error(response, 400, "invalid_grant")
        # 401 is RFC 6749's answer to a failed *client* authentication only.
        assert "www-authenticate" not in response.headers
        answers.append(response.json())
    assert all(answer == WRONG for answer in answers)


async def test_grant_type_is_required_and_other_grants_are_unsupported(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    credentials = {"username": EMAIL, "password": PASSWORD}
    missing = await client.post(TOKEN, data=credentials)
    assert "grant_type" in assert_oauth2_error(missing, 400, "invalid_request")["error_description"]
    # The first-hour report: client_credentials with a user's password issued a token.
    for grant in ("client_credentials", "authorization_code", "PASSWORD", "implicit"):
        response = await client.post(TOKEN, data={"grant_type": grant, **credentials})
        assert_oauth2_error(response, 400, "unsupported_grant_type")


async def test_missing_or_malformed_parameters_are_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    cases: list[dict[str, str]] = [
        {"grant_type": "password", "username": EMAIL},
        {"grant_type": "password", "password": PASSWORD},
        {"grant_type": "password", "username": EMAIL, "password": ""},
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": ""},
        password_grant("a" * 321 + "@example.com"),
        password_grant(password="p" * 1025),
    ]
    for data in cases:
        body = assert_oauth2_error(await client.post(TOKEN, data=data), 400, "invalid_request")
        assert PASSWORD not in body["error_description"]
        assert "a" * 321 not in body["error_description"]


async def test_the_body_must_be_a_form_with_each_parameter_once(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    as_json = await client.post(TOKEN, json=password_grant())
    assert (
        "x-www-form-urlencoded"
        in (assert_oauth2_error(as_json, 400, "invalid_request")["error_description"])
    )
    repeated = await client.post(
        TOKEN,
        content=f"grant_type=password&username={EMAIL}&password=x&password=y",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = assert_oauth2_error(repeated, 400, "invalid_request")
    assert body["error_description"] == "Repeated parameter: password"
    broken = await client.post(
        TOKEN, content=b"\xff\xfe=\xff", headers={"Content-Type": "multipart/form-data"}
    )
    assert_oauth2_error(broken, 400, "invalid_request")


async def test_unknown_parameters_are_ignored_and_scopes_refused(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    # RFC 6749 §3.1-3.2: empty parameters count as omitted, unknown ones are ignored
    # (what Swagger UI and OAuth2 libraries add).
    extra = await client.post(
        TOKEN, data=password_grant(client_id="docs", client_secret="", scope="", foo="bar")
    )
    assert extra.status_code == 200, extra.text
    scoped = await client.post(TOKEN, data=password_grant(scope="admin"))
    assert_oauth2_error(scoped, 400, "invalid_scope")


async def test_the_refresh_grant_rotates_like_the_json_route(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = (await client.post(TOKEN, data=password_grant())).json()
    rotated = await client.post(TOKEN, data=refresh_grant(pair["refresh_token"]))
    assert rotated.status_code == 200, rotated.text
    assert_not_cached(rotated)
    new = rotated.json()
    assert new["refresh_token"] != pair["refresh_token"]
    assert (await client.get(ME, headers=bearer(new["access_token"]))).status_code == 200
    # Either door takes the other's tokens: one family, one service call.
    via_json = await client.post(REFRESH, json={"refresh_token": new["refresh_token"]})
    assert via_json.status_code == 200
    again = await client.post(TOKEN, data=refresh_grant(via_json.json()["refresh_token"]))
    assert again.status_code == 200


async def test_a_replayed_refresh_token_is_theft_on_the_token_endpoint_too(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    pair = await login(client)
    first = await client.post(TOKEN, data=refresh_grant(pair["refresh_token"]))
    assert first.status_code == 200
    successor = first.json()
    # Used once, then the spent token comes back: the whole session is revoked.
    used = await client.post(TOKEN, data=refresh_grant(successor["refresh_token"]))
    assert used.status_code == 200
    replay = await client.post(TOKEN, data=refresh_grant(pair["refresh_token"]))
    assert replay.json() == SPENT
    assert_oauth2_error(replay, 400, "invalid_grant")
    latest = used.json()
    assert (await client.get(ME, headers=bearer(latest["access_token"]))).status_code == 401
    dead = await client.post(TOKEN, data=refresh_grant(latest["refresh_token"]))
    assert_oauth2_error(dead, 400, "invalid_grant")


async def test_a_retry_inside_the_grace_window_gets_the_same_successor(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    pair = await login(client)
    first = await client.post(TOKEN, data=refresh_grant(pair["refresh_token"]))
    retry = await client.post(TOKEN, data=refresh_grant(pair["refresh_token"]))
    assert first.status_code == retry.status_code == 200
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]


async def test_bad_refresh_tokens_are_invalid_grant(client: httpx.AsyncClient) -> None:
    await register(client)
    pair = await login(client)
    for token in ("not-a-token", pair["access_token"], pair["refresh_token"][:-2] + "xx"):
        response = await client.post(TOKEN, data=refresh_grant(token))
        assert response.json() == SPENT
        assert_oauth2_error(response, 400, "invalid_grant")


async def test_an_unverified_email_is_invalid_grant_saying_so(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(email_verification="required"))
    async with running(app), client_for(app) as http:
        await register(http)
        wrong = await http.post(TOKEN, data=password_grant(password="not the password"))
        assert wrong.json() == WRONG
        refused = await http.post(TOKEN, data=password_grant())
        body = assert_oauth2_error(refused, 400, "invalid_grant")
        assert body["error_description"] == "Email not verified"


async def test_login_limits_answer_temporarily_unavailable_with_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(login_rate_limit="2/minute"))
    async with running(app), client_for(app) as http:
        await register(http)
        for _ in range(2):
            assert (await http.post(TOKEN, data=password_grant())).status_code == 200
        refused = await http.post(TOKEN, data=password_grant())
        body = assert_oauth2_error(refused, 429, "temporarily_unavailable")
        assert body["error_description"] == "Too many login attempts, try again later"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-limit"] == "2"


async def test_the_refresh_grant_shares_the_refresh_budget(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(refresh_rate_limit="2/minute"))
    async with running(app), client_for(app) as http:
        await register(http)
        token = (await login(http))["refresh_token"]
        via_json = await http.post(REFRESH, json={"refresh_token": token})
        assert via_json.status_code == 200
        token = via_json.json()["refresh_token"]
        assert (await http.post(TOKEN, data=refresh_grant(token))).status_code == 200
        refused = await http.post(TOKEN, data=refresh_grant(token))
        assert_oauth2_error(refused, 429, "temporarily_unavailable")
        assert int(refused.headers["retry-after"]) >= 1
