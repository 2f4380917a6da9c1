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

Between the two, the **challenge** (``AUTHKEEP_CHALLENGE_AFTER_FAILURES``, 3; see
``docs/challenge.md``): once the client IP's failures or the account's (its shortest tier's
window, on the key the tiers use) reach the threshold, an attempt without a valid, unspent
solution gets 401 ``challenge_required`` before its password is looked at, and is not
counted. The challenge sits below the lock-out tiers and never replaces them: a solved
challenge buys one attempt, whose failure still counts toward the 429s.

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

from collections.abc import Awaitable, Callable

import structlog
from limits import RateLimitItem

from authkeep import metrics
from authkeep.errors import InvalidCredentials
from authkeep.security.emails import email_key_of
from authkeep.services.challenge import ChallengeGate
from authkeep.services.context import RequestInfo
from authkeep.services.rate_limits import Decision, LimitReport, RateLimits, Rule
from authkeep.services.sessions import MfaPending, Sessions, TokenPair

log = structlog.get_logger("authkeep.login_throttle")

LOGIN_REFUSED = "Too many login attempts, try again later"
_NO_IP = "unknown"


class LoginThrottle:
    """Password login with per-email, per-IP and per-account limits."""

    def __init__(
        self, limits: RateLimits, sessions: Sessions, challenge: ChallengeGate | None = None
    ) -> None:
        self._limits = limits
        self._sessions = sessions
        self._challenge = challenge

    async def login(
        self,
        email: str,
        password: str,
        info: RequestInfo,
        report: LimitReport | None = None,
        *,
        challenge_solution: str | None = None,
    ) -> TokenPair | MfaPending:
        """Check the limits and the challenge, then the credentials (:meth:`Sessions.login`).
        A right password counts as a success here even when a second step is pending
        (:class:`MfaPending`): these limits guard the password, and the second step has its
        own (``AUTHKEEP_MFA_RATE_LIMIT``, the challenge's five wrong codes).

        Raises RateLimited (429) before any password work when a limit is reached,
        ChallengeRequired (401) when a challenge is due and ``challenge_solution`` is
        missing, wrong, expired or already spent,
        LimiterUnavailable (503) when the limit storage does not answer (login fails closed:
        without its counters, nothing would stop a brute force), and whatever
        :meth:`Sessions.login` raises.
        """
        limits = self._limits
        if not limits.enabled:
            return await self._sessions.login(email, password, info)
        account = limits.hashed(email_key_of(email))
        ip = info.ip or _NO_IP
        tiers_key, found = await self._look(account, ip)
        await self._admit(account, ip, found, report, challenge_solution)
        cfg = limits.config
        try:
            pair = await self._sessions.login(email, password, info)
        except InvalidCredentials:
            await self._count_failure(ip, tiers_key)
            raise
        mark: tuple[Rule, RateLimitItem, str] | None = None
        # An unknown client (a broken forwarded chain) is everyone behind that proxy: never
        # remember it as the owner's address, or an attacker there would share the owner's tiers.
        if cfg.known_client is not None and ip != _NO_IP:
            mark = ("login_known_client", cfg.known_client, _pair(account, ip))
        await self._forget_failures(account, tiers_key, mark)
        return pair

    async def reauthenticate(
        self, email: str, info: RequestInfo, check: Callable[[], Awaitable[bool]]
    ) -> bool:
        """A password check behind a valid session (step-up), under a login's lock-out:
        RateLimited (429) before ``check`` runs when the client IP's failures or the
        account's tiers are exhausted; a wrong password counts as a failed login for both,
        a right one forgets the account's failures as a login's success does (the known
        client's tiers and the account's own). Returns ``check``'s answer.

        No per-email count and no challenge: the caller already holds the account's session
        (a challenge would stop a script, not the holder of a stolen token), and the step-up
        route's per-user budget bounds the attempts. Counting the failures with the logins'
        stops a stolen access token from being a password oracle beside the login's limits."""
        limits = self._limits
        if not limits.enabled:
            return await check()
        account = limits.hashed(email_key_of(email))
        ip = info.ip or _NO_IP
        tiers_key, found = await self._look(account, ip)
        refused = [d for _, d in found if not d.allowed]
        if refused:
            worst = max(refused, key=lambda d: d.reset_after)
            metrics.RATE_LIMITED.labels(worst.rule).inc()
            self._refuse(worst, account, ip, None)
        if not await check():
            await self._count_failure(ip, tiers_key)
            return False
        await self._forget_failures(account, tiers_key)
        return True

    async def _forget_failures(
        self,
        account: str,
        tiers_key: str,
        mark: tuple[Rule, RateLimitItem, str] | None = None,
    ) -> None:
        # A proven password (a login, a step-up): the failures of the tiers that counted and,
        # for a known client, the account's own (the tiers count consecutive failures); and
        # the mark, if any. On Redis one round trip for all of it.
        tiers = self._limits.config.login_account_failures
        forgets: list[tuple[Rule, tuple[RateLimitItem, ...], str]] = [
            ("login_account_failures", tiers, tiers_key)
        ]
        if tiers_key != account:
            forgets.append(("login_account_failures", tiers, account))
        await self._limits.forget_and_mark(forgets, mark)

    async def _count_failure(self, ip: str, tiers_key: str) -> None:
        # The client IP's window and the account's tiers, in one storage call on Redis.
        cfg = self._limits.config
        await self._limits.record_all(
            [
                ("login_ip_failures", (cfg.login_ip_failures,), ip),
                ("login_account_failures", cfg.login_account_failures, tiers_key),
            ]
        )

    async def guard(self, email: str, info: RequestInfo, challenge_solution: str | None) -> None:
        """The challenge alone, for the other open routes an attacker can pivot to once
        logins are challenged (forgot-password; MFA verification once it exists): raises
        ChallengeRequired when this email's or client IP's failed logins reached the
        threshold and ``challenge_solution`` is not a valid, unspent solution. The lock-out
        tiers are not applied here: a locked-out owner must still be able to recover."""
        limits = self._limits
        if not limits.enabled or self._challenge is None or not self._challenge.enabled:
            return
        account = limits.hashed(email_key_of(email))
        ip = info.ip or _NO_IP
        _, found = await self._look(account, ip)
        await self._challenge_if_due(found, ip, challenge_solution)

    async def _look(
        self, account: str, ip: str
    ) -> tuple[str, list[tuple[RateLimitItem, Decision]]]:
        """The key the account's tiers are counted on — the known-client pair's own when this
        address signed in to the account recently, else the account's — and the windows a
        login meets on it: the client IP's failures and those tiers."""
        limits = self._limits
        cfg = limits.config
        known = cfg.known_client

        def tiers(key: str) -> list[tuple[Rule, RateLimitItem, str]]:
            return [("login_account_failures", tier, key) for tier in cfg.login_account_failures]

        ip_check: list[tuple[Rule, RateLimitItem, str]] = [
            ("login_ip_failures", cfg.login_ip_failures, ip)
        ]
        # One storage round trip for every window (a login meets four), and on Redis the
        # known-client mark in the same one (peek_by_mark): which tiers count depends on it.
        if known is None or ip == _NO_IP:
            tiers_key = account
            found = await limits.peek_many([*ip_check, *tiers(account)])
        else:
            pair = _pair(account, ip)
            marked, found = await limits.peek_by_mark(
                ("login_known_client", known, pair), ip_check, tiers(pair), tiers(account)
            )
            tiers_key = pair if marked else account
        checks = [*ip_check, *tiers(tiers_key)]
        return tiers_key, [
            (item, decision)
            for (_, item, _), decision in zip(checks, found, strict=True)
            if decision is not None
        ]

    async def _challenge_if_due(
        self, found: list[tuple[RateLimitItem, Decision]], ip: str, solution: str | None
    ) -> None:
        gate = self._challenge
        if gate is None or not gate.enabled:
            return
        # The failure window: the IP rule's, and the account's shortest tier (15 minutes by
        # default both), so an account attacked yesterday is not challenged all day.
        tiers = self._limits.config.login_account_failures
        shortest = min(tiers, key=lambda item: item.get_expiry()) if tiers else None
        counts = [
            decision.limit - decision.remaining
            for item, decision in found
            if decision.rule == "login_ip_failures" or item is shortest
        ]
        if gate.due(*counts):
            await gate.check(solution, None if ip == _NO_IP else ip)

    async def _admit(
        self,
        account: str,
        ip: str,
        found: list[tuple[RateLimitItem, Decision]],
        report: LimitReport | None,
        solution: str | None,
    ) -> None:
        limits = self._limits
        cfg = limits.config
        refused = [d for _, d in found if not d.allowed]
        if refused:
            worst = max(refused, key=lambda d: d.reset_after)
            metrics.RATE_LIMITED.labels(worst.rule).inc()
            self._refuse(worst, account, ip, report)
        # After the lock-out (a locked account answers 429 whatever the solution), before
        # the per-email count: an attempt refused for want of a solution costs no quota.
        await self._challenge_if_due(found, ip, solution)
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
