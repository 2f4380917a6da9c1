"""Brute-force defence for password logins, wrapped around :meth:`Sessions.login`.

Before the password is checked (so a refused guess costs the server no hash):

1. **failures per client IP** (``AUTHKEEP_LOGIN_IP_FAILURE_LIMIT``, 5 per 15 minutes, moving
   window) and **the account's failure tiers** (``AUTHKEEP_LOGIN_ACCOUNT_FAILURE_LIMITS``) are
   read; if one is exhausted the answer is 429 with the longest wait among them;
2. the attempt is counted **per email** (``AUTHKEEP_LOGIN_RATE_LIMIT``, 5/minute) — atomically,
   so concurrent attempts on several workers can never get more than the limit through.

After it: a failure counts against the client IP and the account's tiers; a success forgets
the account's failures (the tiers count *consecutive* failures, as NIST SP 800-63B §5.2.2
does) and remembers the client address as *known* for ``AUTHKEEP_LOGIN_KNOWN_CLIENT_DAYS``.

The tiers are the progressive delay: each is a longer window with a larger allowance, so the
wait an attacker is told grows with the failures (about a minute, then 15 minutes, an hour, a
day) and at most 100 failures per account fit in any 24 hours. A known client (an address
that signed in to this account recently) is counted on its own tiers: an attacker elsewhere
who exhausts the account's tiers cannot lock its owner out. Nothing is permanent; every
window drains by itself.

The email is counted by its folded key (``User@Example.com `` is ``user@example.com``) and
stored only as a keyed hash; whether the account exists changes nothing here, so the limits
reveal nothing an attacker could enumerate.
"""

from __future__ import annotations

import structlog
from limits import RateLimitItem

from authkeep import metrics
from authkeep.errors import InvalidCredentials
from authkeep.security.emails import email_key_of
from authkeep.services.context import RequestInfo
from authkeep.services.rate_limits import Decision, LimitReport, RateLimits, Rule
from authkeep.services.sessions import Sessions, TokenPair

log = structlog.get_logger("authkeep.login_throttle")

LOGIN_REFUSED = "Too many login attempts, try again later"
_NO_IP = "unknown"


class LoginThrottle:
    """Password login with per-email, per-IP and per-account limits."""

    def __init__(self, limits: RateLimits, sessions: Sessions) -> None:
        self._limits = limits
        self._sessions = sessions

    async def login(
        self,
        email: str,
        password: str,
        info: RequestInfo,
        report: LimitReport | None = None,
    ) -> TokenPair:
        """Check the limits, then the credentials (:meth:`Sessions.login`).

        Raises RateLimited (429) before any password work when a limit is reached,
        LimiterUnavailable (503) when the limit storage does not answer (login fails closed:
        without its counters, nothing would stop a brute force), and whatever
        :meth:`Sessions.login` raises.
        """
        limits = self._limits
        if not limits.enabled:
            return await self._sessions.login(email, password, info)
        account = limits.hashed(email_key_of(email))
        ip = info.ip or _NO_IP
        tiers_key = await self._tiers_key(account, ip)
        await self._admit(account, ip, tiers_key, report)
        cfg = limits.config
        try:
            pair = await self._sessions.login(email, password, info)
        except InvalidCredentials:
            await limits.record("login_ip_failures", (cfg.login_ip_failures,), ip)
            await limits.record("login_account_failures", cfg.login_account_failures, tiers_key)
            raise
        await limits.forget("login_account_failures", cfg.login_account_failures, tiers_key)
        if tiers_key != account:
            await limits.forget("login_account_failures", cfg.login_account_failures, account)
        # An unknown client (a broken forwarded chain) is everyone behind that proxy: never
        # remember it as the owner's address, or an attacker there would share the owner's tiers.
        if cfg.known_client is not None and ip != _NO_IP:
            await limits.mark("login_known_client", cfg.known_client, _pair(account, ip))
        return pair

    async def _tiers_key(self, account: str, ip: str) -> str:
        known = self._limits.config.known_client
        if (
            known is not None
            and ip != _NO_IP
            and await self._limits.is_marked("login_known_client", known, _pair(account, ip))
        ):
            return _pair(account, ip)
        return account

    async def _admit(
        self, account: str, ip: str, tiers_key: str, report: LimitReport | None
    ) -> None:
        limits = self._limits
        cfg = limits.config
        checks: list[tuple[Rule, RateLimitItem, str]] = [
            ("login_ip_failures", cfg.login_ip_failures, ip)
        ]
        checks += [
            ("login_account_failures", tier, tiers_key) for tier in cfg.login_account_failures
        ]
        refused = [d for d in await limits.peek_all(checks) if not d.allowed]
        if refused:
            worst = max(refused, key=lambda d: d.reset_after)
            metrics.RATE_LIMITED.labels(worst.rule).inc()
            self._refuse(worst, account, ip, report)
        decision = await limits.hit("login_email", cfg.login_email, account)
        if report is not None:
            report.note(decision)
        if decision is not None and not decision.allowed:
            self._refuse(decision, account, ip, report)

    @staticmethod
    def _refuse(decision: Decision, account: str, ip: str, report: LimitReport | None) -> None:
        if report is not None:
            report.note(decision)
        # The event names the account only by its keyed hash: the log must not become a
        # list of the addresses someone tried.
        log.warning(
            "login_rate_limited",
            rule=decision.rule,
            account=account,
            client_ip=None if ip == _NO_IP else ip,
            retry_after=decision.retry_after,
        )
        key = ip if decision.rule == "login_ip_failures" else account
        raise decision.refusal(LOGIN_REFUSED, key=key)


def _pair(account: str, ip: str) -> str:
    return f"{account}|{ip}"
