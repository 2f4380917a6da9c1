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
