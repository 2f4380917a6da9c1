"""Single use for challenge solutions: a solution is spent the first time it is accepted.

Without this, one solved challenge would let a password sprayer through as many times as it
liked within the challenge's lifetime (a replay). The store is shared by every worker when
Redis is configured (``SET NX EX``: atomic, so two workers racing with the same solution
cannot both win), else it is this process's memory. Entries expire with the challenge: an
expired challenge is refused anyway, so nothing older needs remembering.
"""

from __future__ import annotations

import time
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from authkeep.errors import DependencyUnavailable

log = structlog.get_logger("authkeep.challenge")

STORE_UNAVAILABLE = "Login temporarily unavailable: challenge store unreachable"
_PURGE_EVERY = 1024


class SpentSolutions(Protocol):
    """Where spent solutions are remembered."""

    async def spend(self, solution_id: str, expires_at: int) -> bool:
        """True the first time ``solution_id`` is spent (before ``expires_at``, Unix time),
        False on any later attempt. Raises DependencyUnavailable when the store does not
        answer: the check fails closed, or a replay would pass while Redis is down."""
        ...


class MemorySpent:
    """This process's memory (one worker, or tests)."""

    def __init__(self) -> None:
        self._spent: dict[str, int] = {}

    async def spend(self, solution_id: str, expires_at: int) -> bool:
        """See :meth:`SpentSolutions.spend`."""
        now = int(time.time())
        seen = self._spent.get(solution_id)
        if seen is not None and seen >= now:
            return False
        if len(self._spent) % _PURGE_EVERY == 0:
            # Amortised clean-up; the map stays bounded by the solutions of one lifetime,
            # each of which cost its sender a proof of work.
            self._spent = {key: until for key, until in self._spent.items() if until >= now}
        self._spent[solution_id] = expires_at
        return True


class RedisSpent:
    """Redis, shared by every worker and host."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix + "challenge:spent:"

    async def spend(self, solution_id: str, expires_at: int) -> bool:
        """See :meth:`SpentSolutions.spend`."""
        ttl = max(1, expires_at - int(time.time()) + 1)
        try:
            created = await self._redis.set(self._prefix + solution_id, b"1", nx=True, ex=ttl)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("challenge_store_unavailable", error=type(exc).__name__)
            raise DependencyUnavailable(STORE_UNAVAILABLE) from None
        return bool(created)
