"""Where revoked session ids are kept so every worker rejects their access tokens at once.

The database (``auth_sessions.revoked_at``) is the source of truth; a store is the fast copy
consulted on every authenticated request:

* :class:`MemoryRevocations` — a dict in this process, filled from the database at start-up
  (revocations younger than the longest access-token lifetime). Right for one process.
* :class:`RedisRevocations` — one key per revoked ``sid`` that expires when the last access
  token it could cover has expired, shared by every worker and host.

Redis is a cache that may fail or forget, and neither may let a revoked token through:

* When Redis does not answer, :meth:`RedisRevocations.check` raises
  :class:`~authkeep.errors.DependencyUnavailable` and the caller asks the database instead.
  After a failure Redis is left alone for a second (a black-holed Redis must not add a
  connect timeout to every request).
* Revocations that could not be published are retried in the background and, together with
  every recent revocation in the database, published again as soon as Redis answers — so a
  worker that never saw the outage learns them too.
* A Redis that restarted empty (or was flushed) is recognised by a missing marker key, read
  in the same ``MGET`` as the session's key: the first worker to see it republishes the
  recent revocations from the database before answering.

The same lookup also answers "has this user changed?", so that the authenticator may keep
users (and their role in an organization) in memory instead of reading the database on every
request. Every change authkeep makes to a user's status or memberships calls
:meth:`RevocationStore.users_changed`, which bumps a per-user counter; :meth:`check` returns a
*stamp* built from that counter (and, on Redis, from the marker's random generation, which
changes whenever Redis restarted, was flushed or missed a write). A cached user is used only
while its stamp is unchanged; a stamp of None means "nobody can vouch: read the database".
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from authkeep.errors import DependencyUnavailable

log = structlog.get_logger("authkeep.revocation")

Resync = Callable[[], Awaitable[list[tuple[str, int]]]]
UsersChanged = Callable[[Iterable[uuid.UUID]], Awaitable[None]]
"""What services call after committing a change to users' status or memberships."""

# A user's change counter outlives every cache entry that could have read its old value
# (entries live a minute): a counter that expired reads 0 again, which only entries created
# after the expiry can carry.
_EPOCH_TTL_SECONDS = 86_400


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Publish = UsersChanged
"""Tells every worker that these ids changed (sessions revoked, users edited), so that a
token they verified before is checked again: the wiring builds it on a RevocationStore."""


class RevocationStore(Protocol):
    """Fast, shared knowledge of revoked sessions."""

    async def revoke(self, session_ids: Iterable[str]) -> None:
        """Mark sessions revoked."""

    async def check(self, session_id: str, user_id: str) -> tuple[bool, str | None]:
        """Whether the session was revoked, and the user's current stamp (None: unknown)."""

    async def users_changed(self, user_ids: Iterable[str]) -> None:
        """Invalidate every cached copy of these users, in every worker."""

    async def close(self) -> None:
        """Stop any background work (called once, when the application stops)."""


class MemoryRevocations:
    """Revoked sessions of this process, each forgotten once its tokens have expired."""

    def __init__(self, ttl_seconds: int) -> None:
        self._ttl = ttl_seconds
        self._until: dict[str, float] = {}
        self._next_prune = time.monotonic() + ttl_seconds
        self._epochs: dict[str, int] = {}

    async def revoke(self, session_ids: Iterable[str]) -> None:
        """Mark sessions revoked for the next ``ttl_seconds``."""
        until = time.monotonic() + self._ttl
        for sid in session_ids:
            self._until[sid] = until

    def load(self, session_ids: Iterable[tuple[str, float]]) -> None:
        """Seed from the database: (sid, seconds its revocation must still be remembered)."""
        now = time.monotonic()
        for sid, remaining in session_ids:
            if remaining > 0:
                self._until[sid] = now + remaining

    async def is_revoked(self, session_id: str) -> bool:
        """Whether the session was revoked (and its tokens may still be unexpired)."""
        now = time.monotonic()
        if now >= self._next_prune:
            self._until = {sid: t for sid, t in self._until.items() if t > now}
            self._next_prune = now + self._ttl
        until = self._until.get(session_id)
        return until is not None and until > now

    async def check(self, session_id: str, user_id: str) -> tuple[bool, str | None]:
        """Whether the session was revoked, and the user's change counter as the stamp."""
        return await self.is_revoked(session_id), str(self._epochs.get(user_id, 0))

    async def users_changed(self, user_ids: Iterable[str]) -> None:
        """Bump the users' change counters (this process is the only one)."""
        for user_id in user_ids:
            self._epochs[user_id] = self._epochs.get(user_id, 0) + 1

    async def close(self) -> None:
        """Nothing runs in the background."""


class RedisRevocations:
    """Revoked sessions in Redis, visible to every worker on its next request."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        ttl_seconds: int,
        resync: Resync | None = None,
        retry_seconds: float = 1.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix + "revoked:sid:"
        self._epoch_prefix = prefix + "user:epoch:"
        # Present while Redis holds every recent revocation; a restart or FLUSHALL drops it.
        self._marker = prefix + "revoked:synced"
        self._ttl = ttl_seconds
        self._resync = resync
        self._retry_seconds = retry_seconds
        self._degraded = False
        self._retry_at = 0.0
        self._pending: set[str] = set()
        self._recovering = asyncio.Lock()
        self._retry_task: asyncio.Task[None] | None = None
        # Checks that arrived in the same event-loop turn share one MGET (see _lookup).
        self._waiting: list[tuple[str, str, asyncio.Future[tuple[Any, Any, Any]]]] = []
        self._flush_pending = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def revoke(self, session_ids: Iterable[str]) -> None:
        """Publish revocations; if Redis is down, keep them and retry in the background."""
        ids = list(session_ids)
        if not ids:
            return
        try:
            await self._publish([(sid, self._ttl) for sid in ids])
        except RedisError:
            self._pending.update(ids)
            self._mark_degraded()

    async def _publish(self, items: list[tuple[str, int]], *, synced: bool = False) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid, ttl in items:
                pipe.set(self._prefix + sid, b"1", ex=max(1, ttl))
            if synced:
                # Last: if the pipeline breaks half-way, the marker stays missing and the
                # next request resynchronises again. A new random generation each time:
                # user counters may have been lost with whatever made the resync necessary,
                # so every stamp handed out before must stop matching.
                pipe.set(self._marker, secrets.token_hex(8).encode())
            await pipe.execute()

    def _mark_degraded(self) -> None:
        if not self._degraded:
            log.warning("redis_unavailable", component="revocation")
        self._degraded = True
        self._retry_at = time.monotonic() + self._retry_seconds
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_until_synced())

    async def check(self, session_id: str, user_id: str) -> tuple[bool, str | None]:
        """Whether the session was revoked and the user's stamp, in one ``MGET``;
        DependencyUnavailable when Redis is down. The stamp is None right after a resync."""
        if self._degraded and time.monotonic() < self._retry_at:
            raise DependencyUnavailable()
        key = self._prefix + session_id
        try:
            generation, hit, epoch = await self._lookup(key, self._epoch_prefix + user_id)
            if generation is not None and not self._degraded:
                return hit is not None, f"{_text(generation)}:{int(epoch or 0)}"
            await self._recover()
            return bool(await self._redis.exists(key)), None
        except RedisError as exc:
            self._mark_degraded()
            raise DependencyUnavailable() from exc

    async def _lookup(self, sid_key: str, epoch_key: str) -> tuple[Any, Any, Any]:
        # Under load many requests reach this point in the same event-loop turn; one MGET
        # for all of them costs one client call and one round trip instead of one each
        # (the Redis client's own overhead is most of a check's cost). The flush runs on the
        # next turn, so a lone request waits for nothing but that turn.
        future: asyncio.Future[tuple[Any, Any, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((sid_key, epoch_key, future))
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        batch, self._waiting, self._flush_pending = self._waiting, [], False
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(
        self, batch: list[tuple[str, str, asyncio.Future[tuple[Any, Any, Any]]]]
    ) -> None:
        keys = [self._marker]
        for sid_key, epoch_key, _ in batch:
            keys += [sid_key, epoch_key]
        try:
            values = await self._redis.mget(keys)
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():  # its request may have been cancelled meanwhile
                    future.set_exception(exc)
            return
        for index, (_, _, future) in enumerate(batch):
            if not future.done():
                future.set_result((values[0], values[1 + 2 * index], values[2 + 2 * index]))

    async def users_changed(self, user_ids: Iterable[str]) -> None:
        """Bump the users' counters. If Redis does not answer, this worker resynchronises
        as soon as it does, which changes the generation and so every stamp."""
        ids = list(user_ids)
        if not ids:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    pipe.incr(self._epoch_prefix + user_id)
                    pipe.expire(self._epoch_prefix + user_id, _EPOCH_TTL_SECONDS)
                await pipe.execute()
        except RedisError:
            self._mark_degraded()

    async def _recover(self) -> None:
        async with self._recovering:
            if not self._degraded and await self._redis.exists(self._marker):
                return  # another request of this process recovered while we waited
            pending = set(self._pending)
            items = [(sid, self._ttl) for sid in pending]
            if self._resync is not None:
                items.extend(await self._resync())
            await self._publish(items, synced=True)
            self._pending -= pending
            was_degraded, self._degraded = self._degraded, False
        log.info(
            "redis_recovered" if was_degraded else "redis_resynchronised",
            component="revocation",
            republished=len(items),
        )

    async def _retry_until_synced(self) -> None:
        # Without this, revocations a worker failed to publish would reach Redis only when
        # that worker next served an authenticated request; meanwhile the other workers,
        # which ask Redis alone, would accept the revoked tokens.
        while self._degraded:
            await asyncio.sleep(self._retry_seconds)
            try:
                await self._recover()
            except RedisError:
                self._retry_at = time.monotonic() + self._retry_seconds
            except Exception:  # the database may be down too; keep trying, loudly
                log.exception("revocation_resync_failed")

    async def close(self) -> None:
        """Stop the background retry, if one runs, and let pending look-ups finish."""
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        task, self._retry_task = self._retry_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
