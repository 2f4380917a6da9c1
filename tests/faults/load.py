"""A steady, bounded HTTP load on real ``authkeep serve`` processes for the fault tests
(importable as ``faults.load``): registrations, logins and authenticated reads, each request
recorded with when it started and ended, so a test can tell which ones ran entirely while a
dependency was away.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from helpers import PASSWORD, bearer

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
KINDS = ("register", "login", "read")
DEADLINE = 20.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request of the load and what came back."""

    kind: str
    started: float
    ended: float
    status: int | None
    """None when no HTTP answer came back at all (connection refused or reset)."""
    body: str
    retry_after: str | None
    email: str | None = None
    """The registered address, for a registration answered 202 (the answer names no
    account: it is the same for a taken address)."""


@dataclass
class Load:
    """Clients hammering ``urls`` (dealt round-robin) until :meth:`stop`."""

    urls: Sequence[str]
    account: dict[str, str]
    """A registered user (``email``) and a valid ``access_token`` for the reads."""
    concurrency: int = 2
    outcomes: list[Outcome] = field(default_factory=list)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def _url(self, path: str) -> str:
        return self.urls[next(self._turn) % len(self.urls)] + path

    async def _one(self, http: httpx.AsyncClient, kind: str) -> None:
        started = time.monotonic()
        email = None
        try:
            if kind == "register":
                new_email = f"load-{uuid.uuid4().hex[:12]}@example.com"
                body = {"email": new_email, "password": PASSWORD}
                response = await http.post(self._url(REGISTER), json=body)
                if response.status_code == 202:
                    email = new_email
            elif kind == "login":
                body = {"email": self.account["email"], "password": PASSWORD}
                response = await http.post(self._url(LOGIN), json=body)
            else:
                response = await http.get(
                    self._url(ME), headers=bearer(self.account["access_token"])
                )
        except httpx.TransportError as exc:
            self.outcomes.append(Outcome(kind, started, time.monotonic(), None, repr(exc), None))
            await asyncio.sleep(0.05)  # a refused connection fails at once: do not spin
            return
        self.outcomes.append(
            Outcome(
                kind,
                started,
                time.monotonic(),
                response.status_code,
                response.text[:500],
                response.headers.get("retry-after"),
                email,
            )
        )

    async def _client(self, kind: str) -> None:
        async with httpx.AsyncClient(timeout=15.0) as http:
            while not self._done.is_set():
                await self._one(http, kind)
                await asyncio.sleep(0.01)

    def start(self) -> None:
        """Begin: ``concurrency`` clients of each kind."""
        for kind in KINDS:
            for _ in range(self.concurrency):
                self._tasks.append(asyncio.create_task(self._client(kind)))

    async def stop(self) -> None:
        """End the load and wait for the requests in flight."""
        self._done.set()
        await asyncio.gather(*self._tasks)

    def since(self, moment: float) -> list[Outcome]:
        """Outcomes of requests started at or after ``moment``."""
        return [o for o in self.outcomes if o.started >= moment]

    def between(self, start: float, end: float) -> list[Outcome]:
        """Outcomes of requests that started and ended inside ``[start, end]``."""
        return [o for o in self.outcomes if o.started >= start and o.ended <= end]

    async def wait_for(self, check: Callable[[], bool], what: str) -> None:
        """Let the load run until ``check`` holds (bounded)."""
        deadline = time.monotonic() + DEADLINE
        while not check():
            if time.monotonic() > deadline:
                pytest.fail(f"not within {DEADLINE} s: {what}; last: {self.outcomes[-6:]}")
            await asyncio.sleep(0.05)


def kinds_with(outcomes: Sequence[Outcome], predicate: Callable[[Outcome], bool]) -> set[str]:
    """The kinds of request for which at least one outcome satisfies ``predicate``."""
    return {o.kind for o in outcomes if predicate(o)}


def succeeded(outcome: Outcome) -> bool:
    """A 2xx answer."""
    return outcome.status is not None and 200 <= outcome.status < 300


async def account(http: httpx.AsyncClient, base: str) -> dict[str, str]:
    """Register and log in a user of the load; its email and access token."""
    email = f"steady-{uuid.uuid4().hex[:12]}@example.com"
    body = {"email": email, "password": PASSWORD}
    created = await http.post(base + REGISTER, json=body)
    assert created.status_code == 202, created.text
    pair = await http.post(base + LOGIN, json=body)
    assert pair.status_code == 200, pair.text
    return {"email": email, "access_token": str(pair.json()["access_token"])}
