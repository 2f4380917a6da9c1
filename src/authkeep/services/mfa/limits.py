"""The MFA rate limit: ``AUTHKEEP_MFA_RATE_LIMIT`` per user AND per client IP, on every check
of a second-factor code (login's second step, TOTP confirmation, step-up with a code).

A six-digit code has a million values and three of them are valid at any moment (±1 step):
without a limit an online guesser needs about 330,000 tries on average. Counting per user
stops a botnet from spreading the guesses over addresses; counting per IP stops one client
from spreading them over accounts whose passwords it holds. Both use the shared limit storage
(Redis when configured, so every worker counts together) and fail closed: without their
counters nothing would bound the guessing.
"""

from __future__ import annotations

import uuid

import structlog

from authkeep.services.rate_limits import LimitReport, RateLimits

__all__ = ["MFA_REFUSED", "MfaLimits"]

log = structlog.get_logger("authkeep.mfa")

MFA_REFUSED = "Too many code attempts, try again later"
_NO_IP = "unknown"


class MfaLimits:
    """Counts code checks against the ``mfa`` rule, per client IP and per user."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits

    async def admit(
        self, user_id: uuid.UUID, ip: str | None, report: LimitReport | None = None
    ) -> None:
        """Count one code check for ``user_id`` from ``ip`` (None: an unknown client, one
        shared bucket). RateLimited (429) when either budget is spent, before the code is
        looked at; LimiterUnavailable (503) when the storage does not answer."""
        limits = self._limits
        if not limits.enabled:
            return
        item = limits.config.mfa
        for key in (f"ip:{ip or _NO_IP}", f"user:{user_id}"):
            decision = await limits.hit("mfa", item, key)
            if report is not None:
                report.note(decision)
            if decision is not None and not decision.allowed:
                log.warning(
                    "mfa_rate_limited",
                    key=key.partition(":")[0],
                    user_id=str(user_id),
                    retry_after=decision.retry_after,
                )
                raise decision.refusal(MFA_REFUSED, key=key)
