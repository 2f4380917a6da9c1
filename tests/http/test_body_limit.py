"""The body limit's lingering close, at the ASGI level: after a 413 the rest of the body is read
and thrown away (within bounds) before the response ends and the server closes the socket.

Closing with unread data makes the kernel send a reset, and a client still writing its body
then sees "connection reset" instead of the 413 (``tests/deploy/test_four_workers.py`` shows
it over real sockets, with four workers).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from authkeep.http.middleware.body_limit import BodyLimitMiddleware

LIMIT = 1000
CHUNK = 500


class Client:
    """The client side of one request: a body in chunks, and what came back."""

    def __init__(self, chunks: int, *, endless: bool = False) -> None:
        self.left = chunks
        self.endless = endless
        self.read = 0  # chunks the server took
        self.sent: list[Message] = []
        self.read_when_done: int | None = None  # chunks taken when the response ended

    async def receive(self) -> Message:
        if not self.endless and self.left == 0:
            await anyio.sleep_forever()  # uvicorn: nothing until the client goes away
        self.left -= 1
        self.read += 1
        more = self.endless or self.left > 0
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.read_when_done = self.read

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def reads_its_body(scope: Scope, receive: Receive, send: Send) -> None:
    """A route that reads the whole body (as FastAPI's body parsing does)."""
    body = await Request(scope, receive).body()
    await JSONResponse({"size": len(body)})(scope, receive, send)


def scope_with(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"type": "http", "method": "POST", "path": "/", "headers": headers}


def declared(size: int, *extra: tuple[bytes, bytes]) -> Scope:
    return scope_with([(b"content-length", str(size).encode()), *extra])


Run = Callable[..., Awaitable[Client]]


@pytest.fixture
def run() -> Run:
    async def run(scope: Scope, client: Client, **options: Any) -> Client:
        middleware = BodyLimitMiddleware(reads_its_body, max_bytes=LIMIT, **options)
        with anyio.fail_after(10):  # a drain without its bounds would hang here
            await middleware(scope, client.receive, client.send)
        return client

    return run


TOO_LARGE = {"detail": f"Request body too large (limit {LIMIT} bytes)"}


async def test_a_declared_body_over_the_limit_is_drained_before_the_answer_ends(
    run: Run,
) -> None:
    client = await run(declared(10 * CHUNK), Client(10))
    assert client.status == 413
    assert client.body == TOO_LARGE
    assert client.headers[b"connection"] == b"close"
    # The whole answer went out before the drain, the end of the response only after it.
    assert client.sent[1] == {
        "type": "http.response.body",
        "body": json.dumps(TOO_LARGE).encode(),
        "more_body": True,
    }
    assert client.read_when_done == 10


async def test_a_streamed_body_over_the_limit_is_drained_before_the_answer_ends(
    run: Run,
) -> None:
    client = await run(scope_with([]), Client(10))
    assert client.status == 413
    assert client.body == TOO_LARGE
    assert client.headers[b"connection"] == b"close"
    assert client.read_when_done == 10


async def test_a_body_that_ends_just_past_the_limit_is_not_waited_for(run: Run) -> None:
    # Three chunks, the last one over the limit and the end of the body: nothing to drain.
    client = await run(scope_with([]), Client(3))
    assert (client.status, client.read_when_done) == (413, 3)


async def test_the_drain_stops_at_its_byte_bound(run: Run) -> None:
    # The client sends more than it declared (and than the bound): reading stops anyway.
    client = await run(declared(LIMIT + CHUNK), Client(0, endless=True), drain_bytes=CHUNK)
    assert client.status == 413
    assert client.read_when_done == 2  # past the bound after two chunks: stop reading
    client = await run(scope_with([]), Client(0, endless=True), drain_bytes=CHUNK)
    assert client.read_when_done == 3 + 2


async def test_the_drain_stops_at_its_time_bound(run: Run) -> None:
    # The client declared more than it sends: the drain waits for nothing, then gives up.
    client = await run(declared(10 * CHUNK), Client(2), drain_seconds=0.01)
    assert (client.status, client.read_when_done) == (413, 2)


@pytest.mark.parametrize(
    "scope",
    [
        # Waiting for "100 Continue": after a final status its client sends no body.
        declared(10 * CHUNK, (b"expect", b"100-continue")),
        # Beyond the limit plus the drain bound: reading it would be futile.
        declared(LIMIT + 2 * CHUNK + 1),
    ],
)
async def test_no_drain_when_it_cannot_help(run: Run, scope: Scope) -> None:
    client = await run(scope, Client(10), drain_bytes=2 * CHUNK)
    assert (client.status, client.read_when_done) == (413, 0)


async def test_a_body_within_the_limit_is_untouched(run: Run) -> None:
    client = await run(declared(2 * CHUNK), Client(2))
    assert client.status == 200
    assert client.body == {"size": 2 * CHUNK}
    assert b"connection" not in client.headers
