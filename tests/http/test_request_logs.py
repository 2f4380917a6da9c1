"""Every log line written while serving a request carries that request's id — whichever code
path wrote it — and auth events reach the log as well as the audit table."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI

from authkeep import PermissionDenied, Settings, create_app
from helpers import PASSWORD, bearer, client_for, login, register, running


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(rate_limit_enabled=False))
    third_party = structlog.get_logger("some.library")

    @application.get("/test/crash")
    async def crash() -> None:
        raise RuntimeError("unexpected")

    @application.get("/test/forbidden")
    async def forbidden() -> None:
        raise PermissionDenied()

    @application.get("/test/library")
    async def library() -> dict[str, str]:
        import logging

        logging.getLogger("some.stdlib.library").warning("plain stdlib line")
        third_party.info("structlog line from elsewhere")
        return {}

    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


def lines_since(stream: io.StringIO, start: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue()[start:].splitlines() if line.strip()]


async def test_every_line_of_a_request_has_its_id(
    app: FastAPI, client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    await register(client)
    pair = await login(client)
    start = len(log_output.getvalue())
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/auth/login", {"json": {"email": "alice@example.com", "password": "x"}}),
        (
            "POST",
            "/api/v1/auth/login",
            {"json": {"email": "alice@example.com", "password": PASSWORD}},
        ),
        ("POST", "/api/v1/auth/refresh", {"json": {"refresh_token": pair["refresh_token"]}}),
        ("GET", "/test/forbidden", {}),
        ("GET", "/test/library", {}),
        ("GET", "/test/crash", {}),
        ("POST", "/api/v1/auth/logout-all", {"headers": bearer(pair["access_token"])}),
        ("GET", "/api/v1/auth/me", {"headers": bearer("not-a-token")}),
    ]
    ids = []
    for number, (method, path, kwargs) in enumerate(calls):
        request_id = f"trace-{number}"
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": request_id}
        response = await client.request(method, path, headers=headers, **kwargs)
        assert response.headers["x-request-id"] == request_id
        ids.append(request_id)

    # The in-process outbox worker (resolving and delivering the sign-up email meanwhile)
    # is no request's work: its lines rightly carry no request id.
    background = {"httpx", "authkeep.outbox", "authkeep.email_flows"}
    lines = [
        line for line in lines_since(log_output, start) if line.get("logger") not in background
    ]
    assert lines, "nothing was logged"
    missing = [line for line in lines if line.get("request_id") not in ids]
    assert missing == []
    events = {(line["request_id"], line["event"]) for line in lines}
    for expected in [
        ("trace-0", "login_failed"),
        ("trace-1", "login_succeeded"),
        ("trace-3", "permission_denied"),
        ("trace-4", "plain stdlib line"),
        ("trace-4", "structlog line from elsewhere"),
        ("trace-5", "unhandled_error"),
        ("trace-6", "sessions_ended"),
    ]:
        assert expected in events, expected
    # One access line per request, each with its own id.
    access = [line["request_id"] for line in lines if line["event"] == "request"]
    assert access == ids


async def test_the_request_id_does_not_leak_into_the_next_request(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    await client.get("/health", headers={"X-Request-ID": "first-one"})
    start = len(log_output.getvalue())
    structlog.get_logger("after").info("outside any request")
    [line] = [
        line for line in lines_since(log_output, start) if line["event"] == "outside any request"
    ]
    assert "request_id" not in line


async def test_a_forged_request_id_is_replaced(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    response = await client.get("/health", headers={"X-Request-ID": 'x"\n{"level": "critical"}'})
    request_id = response.headers["x-request-id"]
    assert "\n" not in request_id
    assert len(request_id) == 36
    assert any(line.get("request_id") == request_id for line in lines_since(log_output, 0))
