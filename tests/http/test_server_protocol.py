"""The protocol ``authkeep serve`` runs: an oversized header block gets a readable 431, then a
lingering close (write side shut, the rest read and discarded within bounds), not a reset.

Driven here through a recording transport; ``tests/deploy/test_four_workers.py`` sends the
same requests over real sockets to four workers.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from authkeep.http.middleware.body_limit import DRAIN_MAX_BYTES
from authkeep.http.server_protocol import MAX_HEADER_BYTES, LingeringH11Protocol
from helpers import missing_security_headers


class Transport(asyncio.Transport):
    """Records what the protocol does to the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.late_writes = 0  # after the write side was shut (a real transport raises)
        self.eof_written = False
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written:
            self.late_writes += 1
            return
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def connection() -> tuple[LingeringH11Protocol, Transport]:
    config = Config(app, http=LingeringH11Protocol, log_config=None, lifespan="off")
    protocol = LingeringH11Protocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


def response_of(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


async def test_an_oversized_header_gets_a_431_then_a_lingering_close(
    connection: tuple[LingeringH11Protocol, Transport],
) -> None:
    protocol, transport = connection
    header = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200_000
    protocol.data_received(header[:65536])  # a socket read's worth
    status, headers, body = response_of(bytes(transport.written))
    assert status == 431
    assert body == {"detail": f"Request header fields too large (limit {MAX_HEADER_BYTES} bytes)"}
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    assert missing_security_headers(httpx.Response(status, headers=headers)) == []
    # The answer is out and the write side shut; the socket stays open to read the rest, so
    # the kernel has no unread data to answer with a reset.
    assert transport.eof_written
    assert not transport.closed
    answered = bytes(transport.written)
    protocol.data_received(header[65536:])
    protocol.data_received(b"\r\n\r\n")
    assert not transport.closed
    assert transport.written == answered  # read and discarded, not parsed or answered again
    # Past the drain bound, it closes anyway.
    protocol.data_received(b"x" * (DRAIN_MAX_BYTES + 1))
    assert transport.closed
    protocol.connection_lost(None)


async def test_a_malformed_request_gets_a_json_400_then_a_lingering_close(
    connection: tuple[LingeringH11Protocol, Transport],
) -> None:
    protocol, transport = connection
    protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    status, headers, body = response_of(bytes(transport.written))
    assert (status, body) == (400, {"detail": "Invalid HTTP request"})
    assert headers["content-type"] == "application/json"
    assert transport.eof_written
    assert not transport.closed
    protocol.connection_lost(None)


async def test_broken_framing_mid_body_gets_one_400_not_the_apps_answer_too(
    connection: tuple[LingeringH11Protocol, Transport],
) -> None:
    protocol, transport = connection
    head = b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    protocol.data_received(head + b"not-a-chunk-size\r\n")
    for _ in range(10):  # let the app's task run: its answer must go nowhere
        await asyncio.sleep(0)
    status, _headers, body = response_of(bytes(transport.written))
    assert (status, body) == (400, {"detail": "Invalid HTTP request"})
    assert transport.written.count(b"HTTP/1.1 ") == 1
    assert transport.late_writes == 0
    protocol.connection_lost(None)


async def test_a_header_within_the_limit_reaches_the_app(
    connection: tuple[LingeringH11Protocol, Transport],
) -> None:
    protocol, transport = connection
    filler = b"a" * (MAX_HEADER_BYTES - 200)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Fill: " + filler + b"\r\n\r\n")
    for _ in range(10):
        if transport.written:
            break
        await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 204 ")
    assert not transport.eof_written
    protocol.connection_lost(None)


async def test_nagle_is_off_on_a_socket_accepted_from_a_listener_uvicorn_bound() -> None:
    # With --workers > 1 uvicorn binds the listener itself (proto 0), and asyncio then leaves
    # Nagle on: each answer's second write waited up to 40 ms for a delayed ACK (issue 18).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn's bind_socket
    client = None
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        accepted.setblocking(False)
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        loop = asyncio.get_running_loop()
        config = Config(app, http=LingeringH11Protocol, log_config=None, lifespan="off")
        transport, _ = await loop.connect_accepted_socket(
            lambda: LingeringH11Protocol(config, ServerState(), {}, loop), accepted
        )
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            transport.close()
            await asyncio.sleep(0)
    finally:
        if client is not None:
            client.close()
        listener.close()
