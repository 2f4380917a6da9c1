"""What a real sign-up, login and /me leave in the logs: request ids and one line per request,
never a password, a token or a hash."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from authkeep.db import users as user_rows
from helpers import authkeep_of, bearer

PASSWORD = "violet giraffe eats 7 lanterns"
WRONG = "violet giraffe eats 8 lanterns"


def parse(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_a_login_flow_logs_ids_and_no_secret(
    client: httpx.AsyncClient, app: FastAPI, log_output: io.StringIO
) -> None:
    email = "dora@example.com"
    responses = [
        await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD}),
        await client.post("/api/v1/auth/login", json={"email": email, "password": WRONG}),
        await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}),
    ]
    pair = responses[-1].json()
    access, refresh = pair["access_token"], pair["refresh_token"]
    responses.append(await client.get("/api/v1/auth/me", headers=bearer(access)))
    # A token in a URL (a client's mistake) must not reach the log through the path either.
    responses.append(await client.get(f"/api/v1/auth/me?access_token={access}"))
    assert [r.status_code for r in responses] == [202, 401, 200, 200, 401]

    text = log_output.getvalue()
    lines = parse(log_output)
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == len(responses)  # exactly one line per request
    for line, response in zip(requests, responses, strict=True):
        assert line["request_id"] == response.headers["x-request-id"]
        assert line["method"] == response.request.method
        assert line["path"] == response.request.url.path
        assert line["status"] == response.status_code
        assert isinstance(line["duration_ms"], int | float)
    # The service's own lines carry the id of the request they belong to.
    registered = next(line for line in lines if line["event"] == "user_registered")
    assert registered["request_id"] == responses[0].headers["x-request-id"]

    async with authkeep_of(app).services.db.reading() as conn:
        stored = await user_rows.get_password_hash(conn, uuid.UUID(pair["user"]["id"]))
    assert stored is not None
    secrets = {
        "password": PASSWORD,
        "wrong password": WRONG,
        "access token": access,
        "refresh token": refresh,
        "access signature": access.rsplit(".", 1)[1],
        "refresh signature": refresh.rsplit(".", 1)[1],
        "stored hash": stored,
        "hash digest": stored.rsplit("$", 1)[1],
    }
    assert [name for name, value in secrets.items() if value in text] == []
    assert "Bearer" not in text
