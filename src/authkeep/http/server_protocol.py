"""The HTTP/1.1 protocol ``authkeep serve`` runs: uvicorn's h11 protocol, with error answers a
client can actually read.

uvicorn answers a request it cannot parse with a plain-text 400 and closes the socket at
once. A header block over the limit (:data:`MAX_HEADER_BYTES`, request line included) is such
a request, and its client is usually still writing it: closing a socket with unread data
makes the kernel send a TCP reset, so the client saw "connection reset" instead of an answer.
Here instead:

* an oversized header block is answered ``431 Request Header Fields Too Large`` (RFC 6585),
  any other malformed request ``400``; both JSON ``{"detail": …}`` with the security headers
  and a fresh ``X-Request-ID``, as every authkeep answer;
* then the connection closes the way nginx's ``lingering_close`` does: the write side is shut
  (the client reads the answer and the end of the stream), and whatever the client still
  sends is read and thrown away — up to :data:`~authkeep.http.middleware.body_limit.
  DRAIN_MAX_BYTES`, for at most :data:`~authkeep.http.middleware.body_limit.DRAIN_SECONDS` —
  before the socket is closed.

Bodies over ``AUTHKEEP_MAX_BODY_BYTES`` are the app's business:
:class:`~authkeep.http.middleware.body_limit.BodyLimitMiddleware` drains them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from authkeep.http.middleware.body_limit import DRAIN_MAX_BYTES, DRAIN_SECONDS
from authkeep.http.middleware.security_headers import DEFAULT_HEADERS

MAX_HEADER_BYTES = 16 * 1024
"""The request line and headers together; larger gets 431 (h11's default, made explicit)."""

_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}
_SECURITY_HEADERS = b"".join(
    name.lower().encode() + b": " + value.encode() + b"\r\n" for name, value in DEFAULT_HEADERS
)


class _Connection(h11.Connection):
    """An h11 connection that remembers why the request could not be parsed."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        """h11's next event; a parse error is kept for the answer, then raised as before."""
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.last_error = error
            raise


def error_response(status: int, detail: str) -> bytes:
    """The bytes of a closing JSON error answer (``status`` 400 or 431)."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
        + b"content-type: application/json\r\n"
        + b"content-length: %d\r\n" % len(body)
        + b"connection: close\r\n"
        + b"x-request-id: "
        + str(uuid.uuid4()).encode()
        + b"\r\n"
        + _SECURITY_HEADERS
        + b"\r\n"
    )
    return head + body


class LingeringH11Protocol(H11Protocol):
    """uvicorn's h11 protocol answering 431/400 in JSON, then closing without a reset."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = config.h11_max_incomplete_event_size or MAX_HEADER_BYTES
        self._parser = self.conn = _Connection(h11.SERVER, self.max_header_bytes)
        self._lingering = False
        self._discarded = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Nagle's algorithm off, then uvicorn's set-up.

        asyncio turns Nagle off only on sockets accepted from a listener it created itself
        (``proto == IPPROTO_TCP``); with ``--workers`` > 1, uvicorn binds the listener itself
        (proto 0), so every accepted socket kept Nagle on. An answer goes out in two writes
        (head, then body); the second waited for the ACK of the first, which the client
        delays by up to 40 ms: two workers served 2.5× fewer requests than one (issue 18,
        ``bench/workers.py``)."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # a socket already closing
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 could not parse (uvicorn's hook), then linger."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The framing broke mid-body while the app runs (a bad chunk, say).
            if cycle.response_started:  # half an answer is out: nothing sensible to add
                self.transport.close()
                return
            cycle.disconnected = True  # this answer is the final one; the app's goes nowhere
            cycle.message_event.set()
        error = self._parser.last_error
        if error is not None and error.error_status_hint == 431:
            status = 431
            detail = f"Request header fields too large (limit {self.max_header_bytes} bytes)"
        else:
            status, detail = 400, "Invalid HTTP request"
        self.transport.write(error_response(status, detail))
        self._linger()

    def _linger(self) -> None:
        self._lingering = True
        if self.transport.can_write_eof():  # TLS transports cannot half-close
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does, or, once answered, discard within the drain bounds."""
        if not self._lingering:
            super().data_received(data)
            return
        self._discarded += len(data)
        if self._discarded > DRAIN_MAX_BYTES:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the linger timer, then uvicorn's clean-up."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)
