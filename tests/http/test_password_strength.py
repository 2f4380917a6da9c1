"""``POST /api/v1/auth/password/strength`` (a sign-up page's meter) and the context rules
at password change: the same policy as register, rate-limited, never logged."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest

from authkeep import Settings, create_app
from helpers import PASSWORD, bearer, client_for, login, running

STRENGTH = "/api/v1/auth/password/strength"
WEAK = "aaaaaaaaaaaaaaaa"
STRONG = "violet giraffe eats 7 lanterns"


async def test_a_weak_password_is_rated_with_what_to_do(client: httpx.AsyncClient) -> None:
    response = await client.post(STRENGTH, json={"password": WEAK})
    assert response.status_code == 200
    body = response.json()
    assert body["score"] < body["min_score"] == 3
    assert body["acceptable"] is False
    assert body["problems"]
    assert "too easy to guess" in body["problems"][0]
    assert 'Repeats like "aaa"' in body["warning"]
    assert body["suggestions"]
    assert WEAK not in response.text
    assert response.headers["cache-control"] == "no-store"


async def test_a_strong_password_is_acceptable(client: httpx.AsyncClient) -> None:
    response = await client.post(STRENGTH, json={"password": STRONG})
    assert response.status_code == 200
    body = response.json()
    assert body["acceptable"] is True
    assert body["problems"] == []
    assert body["score"] >= 3
    assert set(body) == {
        "score",
        "min_score",
        "acceptable",
        "problems",
        "warning",
        "suggestions",
        "guesses_log10",
    }


async def test_the_email_and_name_given_count(client: httpx.AsyncClient) -> None:
    password = "Dana Scully wants violet lanterns"
    alone = await client.post(STRENGTH, json={"password": password})
    assert alone.json()["acceptable"] is True
    with_name = await client.post(
        STRENGTH,
        json={"password": password, "email": "fox@example.com", "full_name": "Dana Scully"},
    )
    assert with_name.json()["acceptable"] is False
    assert with_name.json()["problems"] == ["Password must not contain your name"]
    # A half-typed email is fine: the meter runs while the user types.
    partial = await client.post(STRENGTH, json={"password": "violet scully 77", "email": "scul"})
    assert partial.status_code == 200
    assert partial.json()["problems"] == [
        "Password must not contain your email address or words from it"
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"password": None},
        {"password": 12345678},
        {"password": "x" * 1025},
        {"password": STRONG, "full_name": "Eve \u202egnp.exe"},
        {"password": STRONG, "email": "a\u0000b@example.com"},
        {"password": STRONG, "email": "x" * 321},
        {"password": STRONG, "is_superuser": True},
    ],
)
async def test_bad_input_is_a_422_that_does_not_echo_the_password(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post(STRENGTH, json=body)
    assert response.status_code == 422, response.text
    assert STRONG not in response.text


async def test_the_meter_is_rate_limited_per_ip(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(password_strength_rate_limit="2/minute"))
    async with running(app), client_for(app) as http:
        for _ in range(2):
            assert (await http.post(STRENGTH, json={"password": STRONG})).status_code == 200
        refused = await http.post(STRENGTH, json={"password": STRONG})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        # Another address has its own budget.
        async with client_for(app, peer=("198.51.100.7", 4000)) as other:
            assert (await other.post(STRENGTH, json={"password": STRONG})).status_code == 200


async def test_the_password_is_never_logged(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    for password in (WEAK, STRONG, "my authkeep secret 99"):
        response = await client.post(
            STRENGTH, json={"password": password, "email": "logs@example.com"}
        )
        assert response.status_code == 200
    logged = log_output.getvalue()
    assert STRENGTH in logged  # the request lines were captured
    for password in (WEAK, STRONG, "my authkeep secret 99"):
        assert password not in logged


async def test_a_new_password_must_not_contain_the_users_name(
    client: httpx.AsyncClient,
) -> None:
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": "fox@example.com", "password": PASSWORD, "full_name": "Fox Mulder"},
    )
    assert registered.status_code == 202, registered.text
    token = (await login(client, "fox@example.com"))["access_token"]
    refused = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "mulder wants violet lanterns"},
        headers=bearer(token),
    )
    assert refused.status_code == 422
    assert refused.json()["detail"] == [
        {
            "loc": ["body", "new_password"],
            "msg": "Password must not contain your name",
            "type": "value_error",
        }
    ]
    accepted = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": STRONG},
        headers=bearer(token),
    )
    assert accepted.status_code == 204
