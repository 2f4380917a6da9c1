"""A real webhook receiver on loopback for the webhook tests (importable as
``webhook_helpers``): a small HTTP/1.1 server on its own thread and event loop, so a test
can use it from async code and while a worker subprocess posts to it.

Every request is recorded with its headers and body and verified with the
``standardwebhooks`` library against each secret the test gave it; the receiver
"processes" an id once (a receiver that deduplicates by ``webhook-id``), and answers by a
plan: a status, or a stall (no answer until the client goes away or the stall ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ALLOW_LOOPBACK = {"webhook_allowed_networks": ["127.0.0.0/8", "::1/128"]}


@dataclass
class Received:
    """One request as the receiver got it."""

    headers: dict[str, str]
    body: bytes
    path: str
    verified_by: list[str] = field(default_factory=list)
    """The secrets (of those the receiver knows) whose signature verifies."""
    answered: int | None = None

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def signatures(self) -> list[str]:
        return self.headers.get("webhook-signature", "").split()


@dataclass
class Stall:
    """Withhold the answer for ``seconds`` (or until the client goes), then send ``status``."""

    seconds: float
    status: int = 200


class Receiver:
    """See the module docstring. ``plan`` items are consumed one per request: an int
    (status) or a :class:`Stall`; when empty, every request gets ``default``."""

    def __init__(self, secrets: Iterable[str] = (), default: int = 200) -> None:
        self.secrets: list[str] = list(secrets)
        self.default = default
        self.plan: deque[int | Stall] = deque()
        self.received: list[Received] = []
        self.processed: dict[str, int] = {}
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    # Lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Receiver:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = started.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    @property
    def url(self) -> str:
        return self.url_for("/hooks")

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # What arrived ------------------------------------------------------------------------

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.requests()]

    def bodies(self) -> list[dict[str, Any]]:
        return [r.json for r in self.requests()]

    def add_secret(self, secret: str) -> None:
        with self._lock:
            self.secrets.append(secret)

    # The server --------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = lines[0].split(" ")[1] if " " in lines[0] else ""
                record, action = self._take(headers, body, path)
                status = action if isinstance(action, int) else action.status
                if isinstance(action, Stall):
                    self.stalled.set()
                    if not await _client_gone(reader, action.seconds):
                        break
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok".encode("latin-1")
                )
                await writer.drain()
                with self._lock:
                    record.answered = status
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _take(
        self, headers: dict[str, str], body: bytes, path: str
    ) -> tuple[Received, int | Stall]:
        with self._lock:
            verified = []
            for secret in self.secrets:
                try:
                    Webhook(secret).verify(body, headers)
                except WebhookVerificationError:
                    continue
                verified.append(secret)
            record = Received(headers, body, path, verified)
            self.received.append(record)
            webhook_id = headers.get("webhook-id", "")
            if verified:
                # Processed once per id, as a receiver that deduplicates does.
                self.processed.setdefault(webhook_id, 1)
            return record, self.plan.popleft() if self.plan else self.default


async def _client_gone(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait ``seconds``; False if the client closed the connection meanwhile."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return bool(data)


async def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns a truthy value (outcome, not timing: the deadline
    only bounds a failing run)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


# Driving authkeep ---------------------------------------------------------------------------

# Settings for tests that deliver: loopback allowed, retries in a blink, no in-process worker
# (the test pumps the outbox itself, so it decides when each attempt happens).
FAST_WEBHOOKS: dict[str, Any] = {
    **ALLOW_LOOPBACK,
    "outbox_in_process": False,
    "webhook_retry_schedule": [0.05, 0.05, 0.05, 0.05],
    "webhook_timeout_seconds": 1.0,
}
ROOT_EMAIL = "root@example.com"


async def pump(worker: Any, until: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Run ``worker`` (an OutboxWorker) cycle after cycle until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = until()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        if not await worker.run_once():
            await asyncio.sleep(0.02)


async def platform_admin(app: Any, http: Any) -> tuple[Any, dict[str, str]]:
    """A platform admin (created as an operator would) and their Authorization header;
    returns (Principal, header)."""
    from helpers import PASSWORD, authkeep_of, bearer, login

    services = authkeep_of(app).services
    await services.accounts.register(
        email=ROOT_EMAIL, password=PASSWORD, is_superuser=True, email_verified=True
    )
    token = (await login(http, ROOT_EMAIL, PASSWORD))["access_token"]
    return await services.authenticator.authenticate(token), bearer(token)


async def webhooks_settled(db: Any) -> bool:
    """Whether every audit row with events was read and every webhook message (events,
    deliveries) of the outbox is sent or dead. The reader queues an event before it moves
    past its row, and fan-out queues the deliveries before it settles the event, so this
    cannot be true between two of these steps."""
    from sqlalchemy import select

    from authkeep.db import event_source
    from authkeep.db.models import AuditEntry, MaintenancePosition, OutboxMessage
    from authkeep.services.webhooks import SOURCES

    async with db.reading() as conn:
        stored = (
            await conn.execute(
                select(MaintenancePosition.position).where(
                    MaintenancePosition.job == event_source.JOB
                )
            )
        ).scalar_one_or_none()
        read = event_source.Position.parse(stored).after if stored else 0
        unread = await conn.execute(
            select(AuditEntry.action, AuditEntry.outcome).where(AuditEntry.id > read)
        )
        if any(tuple(row) in SOURCES for row in unread):
            return False
        rows = await conn.execute(
            select(OutboxMessage.status).where(OutboxMessage.kind.like("webhook.%"))
        )
        return all(status in ("sent", "dead") for (status,) in rows)
