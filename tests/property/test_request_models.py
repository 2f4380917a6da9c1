"""Property (hypothesis): whatever a client sends to a route that takes a body or a query,
the answer is a 4xx (or a success), never a 5xx — on SQLite and on PostgreSQL + Redis.

The routes and their request models are read from the app's own OpenAPI schema, so a new
route is covered the day it is added. Each example sends one request to every such route,
as a platform admin who administers an organization (so that no route stops the request at
its authorization check): JSON of any shape, objects shaped like the request model whose
fields hold anything, and raw bytes, with the values of :mod:`hostile_inputs` (NUL, control
and bidi characters, extreme datetimes with offsets, integers past every column) in bodies,
query strings and path parameters. A second property sends any ``X-Forwarded-For`` through
a trusted proxy to the routes that record the client address.
"""

from __future__ import annotations

import asyncio
import json
import string
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_helpers import services
from authkeep import Settings, create_app
from helpers import PASSWORD, PEER, bearer, running
from hostile_inputs import (
    extreme_datetimes,
    extreme_integers,
    forged_cursors,
    hostile_text,
    json_values,
)

ADMIN = "root@example.com"
# One request per route per example: about 20 routes, 50 examples, on each backend.
EXAMPLES = 50
PROXY = "10.0.0.1"
OPAQUE = frozenset({"cursor"})
INTROSPECT = "POST /api/v1/auth/introspect"


@dataclass(frozen=True)
class Model:
    """The fields of a request model (or of a query string): name -> JSON schema."""

    fields: dict[str, dict[str, Any]]
    required: frozenset[str]


@dataclass(frozen=True)
class Operation:
    """A route that takes a body or a query, as the OpenAPI schema describes it."""

    method: str
    path: str
    path_params: tuple[str, ...]
    query: Model
    body: Model
    media_type: str | None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    target: Any = document
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return dict(target)


def request_operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of ``document`` with a request body or a query parameter."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            params = operation.get("parameters", [])
            query = Model(
                {p["name"]: _resolve(p["schema"], document) for p in params if p["in"] == "query"},
                frozenset(p["name"] for p in params if p["in"] == "query" and p.get("required")),
            )
            path_params = tuple(p["name"] for p in params if p["in"] == "path")
            content = operation.get("requestBody", {}).get("content", {})
            media_type = next(iter(content), None)
            body = Model({}, frozenset())
            if media_type is not None:
                model = _resolve(content[media_type]["schema"], document)
                body = Model(
                    {k: _resolve(v, document) for k, v in model.get("properties", {}).items()},
                    frozenset(model.get("required", ())),
                )
            if query.fields or media_type is not None:
                found.append(Operation(method.upper(), path, path_params, query, body, media_type))
    return found


def _document() -> dict[str, Any]:
    app = create_app(
        Settings(
            env="test",
            secret_key="property-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
            database_url="sqlite+aiosqlite:///unused.db",
        )
    )
    return dict(app.openapi())


OPERATIONS = request_operations(_document())


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    return [o for o in options if o.get("type") != "null"] or [schema]


def valid_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema accepts (roughly: enough to get past validation)."""
    schema = _branches(schema)[0]
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "string" and fmt == "date-time":
        return st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
    if kind == "string" and fmt == "uuid":
        return st.uuids().map(str)
    if kind == "string" and fmt == "email":
        return st.from_regex(r"[a-z]{1,10}@example\.com", fullmatch=True)
    if kind == "string":
        low = schema.get("minLength", 1)
        high = max(low, min(schema.get("maxLength", 30), 30))
        return st.text(alphabet=string.ascii_letters + " ", min_size=low, max_size=high)
    if kind == "integer":
        return st.integers(schema.get("minimum", 0), schema.get("maximum", 1000))
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(valid_value(schema.get("items", {})), max_size=2)
    return json_values


def hostile_value(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value aimed at what breaks a field of this kind past validation."""
    kinds = {branch.get("type") for branch in _branches(schema)}
    formats = {branch.get("format") for branch in _branches(schema)}
    if "date-time" in formats:
        return extreme_datetimes
    if name == "cursor":
        return forged_cursors()
    if "integer" in kinds:
        return extreme_integers
    return hostile_text | json_values


@st.composite
def one_hostile_field(draw: st.DrawFn, model: Model) -> dict[str, Any]:
    """A valid instance of ``model`` (required fields, some optional ones) in which one
    field holds a hostile value: the others must not stop the request before it."""
    names = sorted(model.fields)
    # An opaque token is valid only as the server issued it: sent only as the hostile field.
    optional = [name for name in names if name not in OPAQUE]
    chosen = draw(st.sets(st.sampled_from(optional), max_size=len(optional))) if optional else set()
    value = {
        name: draw(valid_value(model.fields[name])) for name in sorted(model.required | chosen)
    }
    if names:
        target = draw(st.sampled_from(names))
        value[target] = draw(hostile_value(target, model.fields[target]))
    return value


def model_values(model: Model) -> st.SearchStrategy[dict[str, Any]]:
    """Instances of ``model`` with one hostile field, or its field names with anything in
    them, or no schema at all."""
    names = st.sampled_from(sorted(model.fields)) if model.fields else st.text(max_size=8)
    anything = st.dictionaries(names | st.text(max_size=8), json_values, max_size=4)
    return one_hostile_field(model) | one_hostile_field(model) | anything


path_values = st.one_of(st.uuids().map(str), hostile_text, extreme_integers.map(str))
# Lone surrogates are valid JSON escapes but no valid Unicode: the JSON parser accepts them.
raw_json = st.sampled_from([b'{"name": "\\ud800"}', b'"\\udfff"', b"\xff\xfe", b"{", b""])


def _query_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def requests_for(draw: st.DrawFn, op: Operation) -> dict[str, Any]:
    """Keyword arguments of ``httpx.AsyncClient.request`` for one request to ``op``."""
    url = op.path
    for name in op.path_params:
        url = url.replace("{" + name + "}", urllib.parse.quote(draw(path_values), safe=""))
    query = {k: _query_text(v) for k, v in draw(model_values(op.query)).items()}
    request: dict[str, Any] = {"method": op.method, "url": url, "params": query}
    if op.media_type is None:
        return request
    if op.media_type == "application/json":
        content = draw(
            st.one_of(model_values(op.body), json_values).map(lambda v: json.dumps(v).encode())
            | raw_json
        )
    else:
        form = draw(model_values(op.body))
        content = urllib.parse.urlencode({k: _query_text(v) for k, v in form.items()}).encode()
    request.update(content=content, headers={"content-type": op.media_type})
    return request


class Served:
    """An app running in an event loop of its own, and a client for it: hypothesis drives
    synchronous tests, so each request is run to completion in that loop."""

    def __init__(self, app: FastAPI, runner: asyncio.Runner, http: httpx.AsyncClient) -> None:
        self.app = app
        self.run = runner.run
        self.http = http
        self.api_key: str | None = None

    def send(self, **request: Any) -> httpx.Response:
        """One request; a crash comes back as the 500 a client would see."""
        return self.run(self.http.request(**request))


@contextmanager
def serving(settings: Settings, peer: tuple[str, int] = PEER) -> Iterator[Served]:
    """``create_app(settings)`` started, with a client whose socket address is ``peer``."""
    app = create_app(settings)
    stack = AsyncExitStack()

    async def start() -> httpx.AsyncClient:
        await stack.enter_async_context(running(app))
        transport = httpx.ASGITransport(app=app, client=peer, raise_app_exceptions=False)
        return await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://localhost")
        )

    with asyncio.Runner() as runner:
        http = runner.run(start())
        try:
            yield Served(app, runner, http)
        finally:
            runner.run(stack.aclose())


def _login(served: Served) -> dict[str, str]:
    response = served.send(
        method="POST", url="/api/v1/auth/login", json={"email": ADMIN, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


@pytest.fixture
def cheap_settings(make_settings: Callable[..., Settings]) -> Settings:
    """The test backend's settings, with cheap hashing (no case is about the hash) and a
    trusted proxy."""
    return make_settings(argon2_memory_kib=8192, argon2_time_cost=1, trusted_proxies=[PROXY])


@pytest.fixture
def as_admin(cheap_settings: Settings) -> Iterator[Served]:
    """The app, and a client that is a platform admin and the admin of an organization (its
    active one), so that no route stops a request at its authorization check."""
    with serving(cheap_settings) as served:
        served.run(
            services(served.app).accounts.register(
                email=ADMIN, password=PASSWORD, is_superuser=True
            )
        )
        org = served.send(
            method="POST", url="/api/v1/orgs", json={"name": "Props"}, headers=_login(served)
        )
        assert org.status_code == 201, org.text
        served.http.headers.update(_login(served))
        key = served.send(method="POST", url="/api/v1/api-keys", json={"name": "Props RS"})
        assert key.status_code == 201, key.text
        served.api_key = key.json()["key"]
        yield served


def test_every_route_with_input_is_discovered() -> None:
    # Discovery is what covers a new route: it must see the known ones.
    found = {str(op) for op in OPERATIONS}
    assert {
        "POST /api/v1/auth/register",
        "POST /api/v1/auth/token",
        "POST /api/v1/api-keys",
        "GET /api/v1/audit",
        "GET /api/v1/admin/users",
        "PATCH /api/v1/admin/users/{user_id}",
    } <= found
    api_key = next(op for op in OPERATIONS if str(op) == "POST /api/v1/api-keys")
    assert set(api_key.body.fields) == {"name", "role", "expires_at"}


def test_no_input_gets_a_server_error(as_admin: Served) -> None:
    answers: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.tuples(*(requests_for(op) for op in OPERATIONS)))
    def every_route(requests: tuple[dict[str, Any], ...]) -> None:
        for op, request in zip(OPERATIONS, requests, strict=True):
            if str(op) == INTROSPECT:
                # Introspection is for resource servers: an API key, not the admin's session.
                credentials = {"Authorization": "", "X-API-Key": as_admin.api_key or ""}
                request = {**request, "headers": {**request.get("headers", {}), **credentials}}
            response = as_admin.send(**request)
            assert response.status_code < 500, f"{op}: {request!r} -> {response.text[:300]}"
            if response.status_code not in (401, 403):
                answers[str(op)] += 1

    every_route()
    # The property holds only if the requests got past authentication and authorization:
    # every route must have answered something else than 401/403 at least once.
    assert {str(op) for op in OPERATIONS} <= set(answers), answers


forwarded_values = st.one_of(
    st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=200),
    st.builds(
        "fe80::1%{}".format, st.text(alphabet=string.ascii_letters, min_size=30, max_size=120)
    ),
    st.lists(st.ip_addresses().map(str), max_size=3).map(", ".join),
    st.just(""),
)


def test_any_forwarded_header_through_a_trusted_proxy_gets_no_server_error(
    cheap_settings: Settings,
) -> None:
    with serving(cheap_settings, peer=(PROXY, 40000)) as served:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
        @given(forwarded_values)
        def any_header(value: str) -> None:
            # Both routes record the client address (audit rows, sessions, rate-limit keys).
            for path, body in (
                ("/api/v1/auth/login", {"email": "a@example.com", "password": "x" * 12}),
                ("/api/v1/auth/register", {"email": "b@example.com", "password": PASSWORD}),
            ):
                response = served.send(
                    method="POST", url=path, json=body, headers={"x-forwarded-for": value}
                )
                assert response.status_code < 500, f"{path} {value!r}: {response.text[:300]}"

        any_header()


@pytest.mark.parametrize("number", ["0.5", "1700000000", "-1e3"])
def test_a_number_is_no_datetime(as_admin: Served, number: str) -> None:
    # Found by the schemathesis run: `until=0.5` was read as seconds since the epoch (200),
    # where the schema documents an RFC 3339 datetime.
    response = as_admin.send(method="GET", url="/api/v1/audit", params={"until": number})
    assert response.status_code == 422, response.text
    assert "RFC 3339" in response.text
