"""Request ids, the generic 500, and the one access-log line per request."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from authkeep import Authkeep, Settings
from helpers import client_for, running


def is_uuid4(value: str) -> bool:
    try:
        return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value
    except ValueError:
        return False


WELL_FORMED = ["abc", "req-123_ABC.xyz", "0f8fad5b-d9cb-469f-a165-70867728950e", "a" * 64]
# Each would let a client write into log lines or headers through its request id.
MALFORMED = [
    "",
    "has spaces in it",
    "a" * 65,
    "semi;colon",
    "<script>alert(1)</script>",
    'quote"d',
    "back\\slash",
    "ünïcode",
    "tab\there",
]


async def test_a_well_formed_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    for incoming in WELL_FORMED:
        response = await client.get("/health", headers={"X-Request-ID": incoming})
        assert response.headers["x-request-id"] == incoming


async def test_a_malformed_request_id_is_replaced_by_a_uuid4(client: httpx.AsyncClient) -> None:
    for incoming in MALFORMED:
        response = await client.get("/health", headers={"X-Request-ID": incoming.encode()})
        echoed = response.headers["x-request-id"]
        assert echoed != incoming
        assert is_uuid4(echoed), (incoming, echoed)


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(is_uuid4(value) for value in ids)


def crashing_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    Authkeep(settings).install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom: the database password is hunter2")

    @app.post("/boom-after-reading")
    async def boom_after_reading(body: dict[str, Any]) -> None:
        raise KeyError(body.get("secret"))

    return app


async def test_an_unexpected_error_is_a_bare_500_with_the_request_id(
    make_settings: Callable[..., Settings], log_output: io.StringIO
) -> None:
    app = crashing_app(make_settings())
    async with running(app), client_for(app) as http:
        plain = await http.get("/boom")
        echoed = await http.get("/boom", headers={"X-Request-ID": "trace-me-42"})
        posted = await http.post("/boom-after-reading", json={"secret": "s3cr3t-value"})

    for response in (plain, echoed, posted):
        assert response.status_code == 500
        request_id = response.headers["x-request-id"]
        assert response.json() == {"detail": "Internal server error", "request_id": request_id}
        assert response.headers["content-type"] == "application/json"
        for leak in ("kaboom", "hunter2", "Traceback", "RuntimeError", "s3cr3t", "KeyError"):
            assert leak not in response.text
    assert echoed.json()["request_id"] == "trace-me-42"

    # The traceback is in the log, under the same id, for whoever has the id.
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    errors = [line for line in lines if line["event"] == "unhandled_error"]
    assert [line["request_id"] for line in errors] == [
        plain.headers["x-request-id"],
        "trace-me-42",
        posted.headers["x-request-id"],
    ]
    assert "RuntimeError" in errors[0]["exception"]


async def test_one_access_log_line_per_request(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    responses = [
        await client.get("/health"),
        await client.get("/nowhere?token=abc"),
        await client.post("/api/v1/auth/login", json={}),
    ]
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        ("GET", "/health", 200),
        ("GET", "/nowhere", 404),  # without the query string
        ("POST", "/api/v1/auth/login", 422),
    ]
    for line, response in zip(requests, responses, strict=True):
        assert line["request_id"] == response.headers["x-request-id"]
        assert isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
        assert line["level"] == "info"
        assert line["logger"] == "authkeep.http"
        # Never a header value.
        assert "user-agent" not in json.dumps(line).lower()
        assert "python-httpx" not in json.dumps(line)
