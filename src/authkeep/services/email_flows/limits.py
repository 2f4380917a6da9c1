"""The mail abuse limits: how many emails an open flow may cause, per client IP and per
recipient address.

Both are counted *before* anything tells an existing address from an unknown one, with the
same keys and the same order either way, so the limits answer alike for both and leak
nothing. A spent IP budget is a 429 (the client is the abuser); a spent recipient budget
skips the email and leaves the answer unchanged — a 429 keyed on an address would tell
anyone that it was mailed recently, and it is the address's owner who is protected, not
the client who is refused.
"""

from __future__ import annotations

import structlog

from authkeep.services.rate_limits import LimiterUnavailable, LimitReport, RateLimits

log = structlog.get_logger("authkeep.mail_limits")

_NO_IP = "unknown"


class MailLimits:
    """``mail_ip`` and ``mail_recipient`` (see :mod:`authkeep.services.rate_limits`)."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits

    async def admit(
        self, recipient_key: str, ip: str | None, report: LimitReport | None = None
    ) -> bool:
        """Count one request that would mail ``recipient_key`` (a folded address) from
        ``ip``. RateLimited when the IP's budget is spent (LimiterUnavailable when the
        counters do not answer: these limits fail closed); otherwise whether the email may
        go (False: the recipient's budget is spent — skip the email, answer as usual)."""
        limits = self._limits
        if not limits.enabled:
            return True
        cfg = limits.config
        ip_key = f"ip:{ip or _NO_IP}"
        decision = await limits.hit("mail_ip", cfg.mail_ip, ip_key)
        if report is not None:
            report.note(decision)
        if decision is not None and not decision.allowed:
            log.info("rate_limited", rule="mail_ip", retry_after=decision.retry_after)
            raise decision.refusal(key=ip_key)
        return await self.admit_recipient(recipient_key)

    async def admit_recipient(self, recipient_key: str) -> bool:
        """Count one email to ``recipient_key``; whether it may go. Never noted in the
        response's RateLimit headers (they would expose how often an address was mailed)."""
        limits = self._limits
        if not limits.enabled:
            return True
        decision = await limits.hit(
            "mail_recipient", limits.config.mail_recipient, limits.hashed(recipient_key)
        )
        if decision is not None and not decision.allowed:
            # The log names the address by its keyed hash only.
            log.info("mail_recipient_limited", recipient=limits.hashed(recipient_key))
            return False
        return True

    async def admit_recipient_quietly(self, recipient_key: str) -> bool:
        """:meth:`admit_recipient`, False when the counters do not answer (for a courtesy
        email whose absence must not fail the request)."""
        try:
            return await self.admit_recipient(recipient_key)
        except LimiterUnavailable:
            return False
