"""Request bodies: the size limit (declared or streamed), malformed and hostile input, and
validation errors that never echo what was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
from sqlalchemy import func, select

from authkeep import Settings, create_app
from authkeep.db.models import User
from helpers import (
    PASSWORD,
    app_of,
    authkeep_of,
    client_for,
    missing_security_headers,
    register,
    running,
)

REGISTER = "/api/v1/auth/register"
LIMIT = 2048
TOO_LARGE = {"detail": f"Request body too large (limit {LIMIT} bytes)"}


async def chunks(total: int, size: int = 512) -> AsyncIterator[bytes]:
    """A streamed body of ``total`` bytes with no Content-Length."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b" " * piece


async def test_a_body_over_the_limit_is_refused(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(max_body_bytes=LIMIT))
    async with running(app), client_for(app) as http:
        declared = await http.post(
            REGISTER, content=b"x" * (LIMIT + 1), headers={"content-type": "application/json"}
        )
        streamed = await http.post(
            REGISTER, content=chunks(LIMIT * 4), headers={"content-type": "application/json"}
        )
        # The same limit lets a body of exactly the limit through, declared or streamed:
        # those fail validation instead (they are blanks, not JSON objects).
        at_limit = await http.post(
            REGISTER, content=b" " * LIMIT, headers={"content-type": "application/json"}
        )
        streamed_small = await http.post(
            REGISTER, content=chunks(LIMIT), headers={"content-type": "application/json"}
        )
    assert "content-length" in declared.request.headers
    assert "content-length" not in streamed.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json() == TOO_LARGE
        assert missing_security_headers(response) == []
    assert at_limit.status_code == 422
    assert streamed_small.status_code == 422


async def test_malformed_json_is_a_422(client: httpx.AsyncClient) -> None:
    bodies = [b'{"email": ', b"not json at all", b'{"email": "a@b.c",}', b""]
    for body in bodies:
        response = await client.post(
            REGISTER, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, body
        detail = response.json()["detail"]
        assert all({"loc", "msg", "type"} == set(item) for item in detail), detail
    # Bytes that are not even UTF-8 are refused before JSON parsing, by FastAPI.
    response = await client.post(
        REGISTER, content=b"\xff\xfe\x00", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}


async def test_wrong_types_are_a_422_naming_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER, json={"email": 123, "password": ["a", "b"], "full_name": {"x": 1}}
    )
    assert response.status_code == 422
    locations = {tuple(item["loc"]) for item in response.json()["detail"]}
    assert locations == {("body", "email"), ("body", "password"), ("body", "full_name")}
    for body in ([], "a string", 42, None):
        response = await client.post(REGISTER, json=body)
        assert response.status_code == 422, body


async def test_unknown_fields_are_refused(client: httpx.AsyncClient) -> None:
    # Mass assignment: nobody makes themselves an admin through the register body.
    response = await client.post(
        REGISTER,
        json={"email": "mallory@example.com", "password": PASSWORD, "is_superuser": True},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "is_superuser"]


async def test_unicode_tricks_in_the_email_are_refused_or_folded(client: httpx.AsyncClient) -> None:
    await register(client, "alice@example.com")
    refused = {
        "zero-width space": "al\u200bice@example.com",
        "zero-width joiner": "alice\u200d@example.com",
        "right-to-left override": "\u202eexample.com@alice",
        "byte order mark": "\ufeffalice@example.com",
        "NUL": "alice\x00@example.com",
        "newline": "alice\n@example.com",
        "no at sign": "alice.example.com",
        "two at signs": "alice@@example.com",
        "too long": "a" * 250 + "@example.com",
    }
    for name, email in refused.items():
        response = await client.post(REGISTER, json={"email": email, "password": PASSWORD})
        assert response.status_code == 422, name
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["body", "email"], name
        assert "valid email" in detail[0]["msg"] or "at most" in detail[0]["msg"], name
    # Full-width letters and other case forms are the same account, not a look-alike one
    # (the answer is the same 202 as for a new address: only one account exists).
    for email in ("ａｌｉｃｅ@example.com", "ALICE@EXAMPLE.COM", "Alice@example.com"):
        response = await client.post(REGISTER, json={"email": email, "password": PASSWORD})
        assert response.status_code == 202, email
    async with authkeep_of(app_of(client)).services.db.reading() as conn:
        count = (await conn.execute(select(func.count()).select_from(User))).scalar_one()
    assert count == 1


async def test_control_characters_in_a_name_are_refused(client: httpx.AsyncClient) -> None:
    # NUL once made PostgreSQL refuse the row: a 500 instead of a 422.
    for name in ("Bob\x00", "Bob\nAdmin", "\x1b[31mBob"):
        response = await client.post(
            REGISTER, json={"email": "bob@example.com", "password": PASSWORD, "full_name": name}
        )
        assert response.status_code == 422, repr(name)
        assert response.json()["detail"][0]["loc"] == ["body", "full_name"]
    ok = await client.post(
        REGISTER,
        json={"email": "bob@example.com", "password": PASSWORD, "full_name": "Bob\u200cYazdi"},
    )
    assert ok.status_code == 202


async def test_lone_surrogates_are_a_422(client: httpx.AsyncClient) -> None:
    for body in (
        '{"email": "a\\ud800@example.com", "password": "correct horse battery"}',
        '{"email": "bob@example.com", "password": "correct \\udfff horse battery"}',
    ):
        response = await client.post(
            REGISTER, content=body.encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422


async def test_a_422_never_echoes_the_submitted_password(client: httpx.AsyncClient) -> None:
    cases = [
        {"email": "carol@example.com", "password": "Sh0rt!x"},
        {"email": "carol@example.com", "password": "Q" * 1025},
        {"email": "not an email", "password": "Sh0rt!y"},
        {"email": ["carol@example.com"], "password": "Sh0rt!z"},
        {"email": "carol@example.com", "password": "Sh0rt!w", "role": "admin"},
    ]
    for body in cases:
        response = await client.post(REGISTER, json=body)
        assert response.status_code == 422
        assert body["password"] not in response.text
        # pydantic would add "input" (the submitted value) and "ctx"; authkeep drops both.
        assert all(set(item) == {"loc", "msg", "type"} for item in response.json()["detail"])
    login = await client.post(
        "/api/v1/auth/login", json={"email": "carol@example.com", "password": "", "x": "Sh0rt!v"}
    )
    assert login.status_code == 422
    assert "Sh0rt!v" not in login.text
