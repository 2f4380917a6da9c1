"""A counting webhook receiver for the benchmarks, in a process of its own (so that its work
is not the measuring process's):

    .venv/bin/python bench/webhook_sink.py --port PORT

A plain asyncio HTTP/1.1 server on loopback (keep-alive) that answers every POST with 200
and keeps only counts: requests, distinct ``webhook-id`` headers among them (a second copy
of an event is a duplicate) and when the last one arrived, on ``CLOCK_MONOTONIC`` (one clock
for every process of a Linux machine). ``GET /stats`` answers them as JSON. It verifies no
signature: the receiver's own cost is not what is measured (the tests verify every one).
Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass

import httpx


class Counts:
    """What arrived."""

    def __init__(self) -> None:
        self.requests = 0
        self.ids: set[str] = set()
        self.last = 0.0

    def as_json(self) -> bytes:
        return json.dumps(
            {"requests": self.requests, "distinct": len(self.ids), "last": self.last}
        ).encode()


async def serve(port: int) -> None:
    counts = Counts()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                if lines[0].startswith("GET /stats"):
                    body = counts.as_json()
                else:
                    counts.requests += 1
                    counts.ids.add(headers.get("webhook-id", ""))
                    counts.last = time.monotonic()
                    body = b"ok"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


@dataclass(frozen=True)
class SinkStats:
    """The sink's counts at one moment."""

    requests: int
    distinct: int
    last: float


def stats(port: int) -> SinkStats:
    """Ask the sink at ``port`` for its counts."""
    answer = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
    return SinkStats(int(answer["requests"]), int(answer["distinct"]), float(answer["last"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
