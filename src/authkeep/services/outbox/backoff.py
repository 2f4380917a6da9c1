"""How long a failed message waits before its next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``base × 2^(attempt-1)``, at most ``cap``, then a
    random value between half of that and all of it ("equal jitter"). The jitter keeps the
    messages that failed together (an SMTP outage) from all coming back in the same second
    and tripping the server's rate limit again."""

    base_seconds: float = 5.0
    cap_seconds: float = 3600.0

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1 for the first)."""
        exponent = min(max(attempts, 1) - 1, 32)
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0**exponent)
        # Jitter spreads retries; it protects nothing secret, so the default PRNG is fine.
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """A fixed schedule for one kind of message (``OutboxWorker(retry={kind: ...})``): after
    the n-th failed attempt the next comes ``delays[n-1]`` seconds later; after the last
    delay's attempt fails, the message is dead. Webhooks use the Standard Webhooks schedule
    (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts), which receivers expect."""

    delays: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.delays or any(delay < 0 for delay in self.delays):
            raise ValueError("a retry schedule needs at least one delay, none negative")

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first, then one after each delay."""
        return len(self.delays) + 1

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1 for the first)."""
        index = min(max(attempts, 1), len(self.delays)) - 1
        return timedelta(seconds=self.delays[index])
