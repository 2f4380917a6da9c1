"""The challenge gate: past a number of failed logins, a solved challenge is the price of
each further attempt.

:class:`ChallengeGate` says whether a challenge is due (from failure counts the caller
reads, see :mod:`authkeep.services.login_throttle`) and checks a submitted solution:
right provider, valid, unexpired, and never spent before (:mod:`.spent`). Every refusal is
:class:`~authkeep.errors.ChallengeRequired`, carrying a fresh challenge so that the client
can try again at once.
"""

from __future__ import annotations

from typing import Any

import structlog

from authkeep.errors import ChallengeRequired
from authkeep.services.challenge.providers import ChallengeProvider
from authkeep.services.challenge.spent import SpentSolutions

log = structlog.get_logger("authkeep.challenge")

REQUIRED = "Too many failed attempts: solve the challenge and send its solution"
INVALID = "Challenge solution invalid, expired or already used: solve the new challenge"


class ChallengeGate:
    """Challenges after ``after_failures`` failures (0: never)."""

    def __init__(
        self, provider: ChallengeProvider, spent: SpentSolutions, *, after_failures: int
    ) -> None:
        self.provider = provider
        self._spent = spent
        self.after_failures = after_failures

    @property
    def enabled(self) -> bool:
        """False when ``AUTHKEEP_CHALLENGE_AFTER_FAILURES=0``."""
        return self.after_failures > 0

    def due(self, *failures: int) -> bool:
        """Whether any of the failure counts (per email, per IP…) reached the threshold."""
        return self.enabled and any(count >= self.after_failures for count in failures)

    def public(self) -> dict[str, Any]:
        """A fresh challenge for a client (``GET /auth/challenge``, and every refusal)."""
        return self.provider.public()

    async def check(self, solution: str | None, ip: str | None) -> None:
        """Accept ``solution`` once, or raise ChallengeRequired (DependencyUnavailable when
        the verifier or the single-use store does not answer)."""
        if solution is None:
            raise ChallengeRequired(REQUIRED, challenge=self.public())
        solved = await self.provider.verify(solution, ip)
        if solved is None or not await self._spent.spend(solved.solution_id, solved.expires_at):
            log.info("challenge_solution_refused", provider=self.provider.name, client_ip=ip)
            raise ChallengeRequired(INVALID, challenge=self.public())
        log.info("challenge_solved", provider=self.provider.name, client_ip=ip)

    async def close(self) -> None:
        """Release the provider."""
        await self.provider.close()
