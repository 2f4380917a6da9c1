"""A counting SMTP server for the benchmarks, in a process of its own (so that its work is
not the measuring process's):

    .venv/bin/python bench/smtp_sink.py --port PORT

aiosmtpd on loopback, no authentication, no TLS. It accepts every message and keeps only
counts: messages accepted, distinct ``Message-ID`` headers among them (a second copy of a
message is a duplicate) and when the last one arrived, on ``CLOCK_MONOTONIC`` — one clock for
every process of a Linux machine, so the benchmark compares it with its own
``time.monotonic()``. ``NOOP`` answers ``250 <messages> <distinct> <last arrival>``:
:func:`stats` asks it. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import smtplib
import threading
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

logging.getLogger("mail.log").setLevel(logging.WARNING)


class Counter:
    """The aiosmtpd handler: counts what it accepts."""

    def __init__(self) -> None:
        self.messages = 0
        self.ids: set[str] = set()
        self.last = 0.0
        self._lock = threading.Lock()
        self._headers = BytesHeaderParser()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        headers = self._headers.parsebytes(bytes(envelope.original_content or b""))
        with self._lock:
            self.messages += 1
            self.ids.add(str(headers.get("Message-ID", "")))
            self.last = time.monotonic()
        return "250 Message accepted for delivery"

    async def handle_NOOP(self, server: Any, session: Session, envelope: Envelope, arg: str) -> str:
        with self._lock:
            return f"250 {self.messages} {len(self.ids)} {self.last:.6f}"


@dataclass(frozen=True)
class SinkStats:
    """What the sink accepted so far."""

    messages: int
    distinct: int
    last: float


def stats(port: int) -> SinkStats:
    """Ask the sink on ``port`` for its counts."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        code, text = client.noop()
    if code != 250:
        raise RuntimeError(f"sink answered {code}")
    messages, distinct, last = text.decode().split()
    return SinkStats(int(messages), int(distinct), float(last))


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    controller = Controller(Counter(), hostname="127.0.0.1", port=args.port, ready_timeout=10)
    controller.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
