"""Refuse request bodies over ``AUTHKEEP_MAX_BODY_BYTES`` with 413, before reading them whole.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted as
it streams and cut off when it passes the limit, so a client cannot make a worker buffer
gigabytes by omitting the length.

**Lingering close.** The 413 is written as soon as the limit is known to be passed, but the
response is completed (and the connection closed) only after the rest of the body has been
read and thrown away, up to :data:`DRAIN_MAX_BYTES` more and for at most
:data:`DRAIN_SECONDS`, as nginx's ``lingering_close`` does. Closing a socket that still has
unread data makes the kernel send a TCP reset, and a client still writing its body then sees
"connection reset" instead of the 413. Nothing drained is kept, so the bound limits only
bandwidth and time, not memory. Not drained: a body declared larger than the limit plus
:data:`DRAIN_MAX_BYTES` (reading it would be futile), and a request that waits for
``100 Continue`` (its client will not send the body after a final status).
"""

from __future__ import annotations

import json

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_MAX_BYTES = 16 * 1024 * 1024
"""How many bytes past an answered error are read and discarded before closing."""
DRAIN_SECONDS = 5.0
"""How long at most the rest of a refused request is read before closing."""


class _TooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's body parsing passes it on
    (it turns any other exception into a 400) and the app answers 413 itself."""


async def drain(receive: Receive, *, max_bytes: int, seconds: float) -> bool:
    """Read and discard the rest of a request body, within ``max_bytes`` and ``seconds``.

    Returns True when the body was read to its end (the connection could be reused).
    """
    read = 0
    with anyio.move_on_after(seconds):
        while read <= max_bytes:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return False
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
    return False


class BodyLimitMiddleware:
    """413 for bodies larger than ``max_bytes``, then a bounded drain of the rest."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        drain_bytes: int = DRAIN_MAX_BYTES,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds

    @property
    def _detail(self) -> str:
        return f"Request body too large (limit {self.max_bytes} bytes)"

    async def _finish(self, send: Send, last: Message, receive: Receive | None) -> None:
        """Send ``last`` (the response's final body message), draining ``receive`` first."""
        if receive is None:
            await send(last)
            return
        # The whole answer goes out now (its Content-Length tells the client it is complete);
        # only the end of the response, after which the server closes, waits for the drain.
        await send({**last, "more_body": True})
        await drain(receive, max_bytes=self.drain_bytes, seconds=self.drain_seconds)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _reject(self, send: Send, receive: Receive | None) -> None:
        body = json.dumps({"detail": self._detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await self._finish(send, {"type": "http.response.body", "body": body}, receive)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        expects_continue = False
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if declared is not None and (declared < 0 or declared > self.max_bytes):
            drainable = not expects_continue and 0 <= declared <= self.max_bytes + self.drain_bytes
            await self._reject(send, receive if drainable else None)
            return
        received = 0
        started = False
        exceeded = False  # the body passed the limit: drain it before ending the answer
        body_done = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge(413, self._detail)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if exceeded:
                    headers = list(message.get("headers", ()))
                    if all(name.lower() != b"connection" for name, _ in headers):
                        headers.append((b"connection", b"close"))
                    message = {**message, "headers": headers}
            elif (
                exceeded
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                await self._finish(send, message, None if body_done else receive)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send, None if body_done else receive)
