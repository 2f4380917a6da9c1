"""What a worker does with each kind of message: a registry of handlers.

A handler delivers one message (send the email, post the webhook) or raises. It also says
what of a message's payload may stay in the database once the message is settled: the
payload of an email holds single-use links, which must not outlive their delivery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from authkeep.db.outbox import ClaimedMessage


class DeliveryError(Exception):
    """A delivery attempt failed; it will be retried. The message is stored as the
    message's ``last_error`` and logged: handlers write it, and never put a secret in it."""


class PermanentDeliveryError(DeliveryError):
    """A delivery that no retry can fix (a recipient the server refuses, a payload that
    cannot be rendered): the message is marked dead at once."""


class Handler(Protocol):
    """Delivers the messages of one kind."""

    async def deliver(self, message: ClaimedMessage) -> None:
        """Deliver ``message`` or raise (:class:`DeliveryError` with a safe description)."""
        ...

    def scrub(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """What of ``payload`` the database keeps once the message is sent or dead."""
        ...


class HandlerRegistry(Mapping[str, Handler]):
    """Handlers by kind. A worker claims only the kinds it has a handler for, so a worker
    that does not know a new kind (an older version, during a rolling deploy) leaves those
    messages to one that does instead of failing them."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._sources: list[Callable[[], Awaitable[int]]] = []

    def add_source(self, source: Callable[[], Awaitable[int]]) -> None:
        """Have every worker of this registry call ``source`` at the start of each cycle:
        something that queues messages from elsewhere (the webhook events of the audit log)
        and returns how many it queued."""
        self._sources.append(source)

    @property
    def sources(self) -> Sequence[Callable[[], Awaitable[int]]]:
        """What :meth:`add_source` added."""
        return tuple(self._sources)

    def register(self, kind: str, handler: Handler) -> None:
        """Deliver messages of ``kind`` with ``handler``; one handler per kind."""
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind!r} is already registered")
        self._handlers[kind] = handler

    def __getitem__(self, kind: str) -> Handler:
        return self._handlers[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)
