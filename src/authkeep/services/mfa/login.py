"""The second step of a login: ``mfa_token`` in, tokens out.

A user with a second factor who gives the right password (and passes the email gate and
the login limits, exactly as any login) gets no token but an :class:`MfaPending`: a fresh
``mfa_token`` and the methods that can finish the login. The token:

* is 256 random bits, stored only as a keyed hash (HMAC-SHA256 under a key derived from the
  server secret for this purpose; every key of the ring is tried on read, so a secret
  rotation voids no login in flight);
* lives :data:`MFA_TOKEN_SECONDS` (5 minutes);
* dies at the :data:`MAX_FAILURES`-th (5th) wrong code, counted by an atomic increment: then
  even the right code fails, and the password must be given again (under the login
  limits) — so the password step cannot be skipped to get more guesses;
* finishes once: marking it used is one conditional update in the transaction that accepts
  the factor, so of two concurrent right answers one gets a session and the other a 401.

:meth:`MfaLogins.finish` is the one way to end the second step, whatever the factor (a TOTP
code, a recovery code, a passkey): it takes the factor's check as a callable that runs in
its transaction, so the factor's own state (TOTP ``last_step``, a spent recovery code, a
passkey's counter) commits with the challenge's, or not at all. The session it opens
carries ``amr`` = the challenge's methods + the factor's (e.g. ``["pwd", "otp"]``, ``acr``
``aal2``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import metrics
from authkeep.db import mfa as mfa_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.mfa import ChallengeRecord
from authkeep.db.users import UserRecord
from authkeep.errors import InvalidCode, InvalidToken
from authkeep.security.assurance import parse_amr
from authkeep.security.email_tokens import looks_like_token, new_token
from authkeep.security.envelope import Envelope
from authkeep.security.key_ring import SecretRing
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.mfa.limits import MfaLimits
from authkeep.services.mfa.recovery import RecoveryCodes
from authkeep.services.mfa.totp import TotpFactors
from authkeep.services.rate_limits import LimitReport
from authkeep.services.sessions import MfaPending, Sessions, TokenPair

__all__ = [
    "MAX_FAILURES",
    "MFA_TOKEN_KEY_PURPOSE",
    "MFA_TOKEN_SECONDS",
    "MfaLogins",
    "MfaPending",
    "Verify",
]

log = structlog.get_logger("authkeep.mfa")

MFA_TOKEN_KEY_PURPOSE = b"authkeep/mfa-token-hash/v1"
MFA_TOKEN_SECONDS = 300
MAX_FAILURES = 5
MFA_TOKEN_REFUSED = "Invalid or expired mfa_token: sign in again"

Verify = Callable[[AsyncConnection, UserRecord], Awaitable[bool]]
"""A factor's check, run inside :meth:`MfaLogins.finish`'s transaction."""

# amr value → the method's name in metrics and audit rows (and in MfaPending.methods).
_METHOD_OF_FACTOR = {"otp": "totp", "rc": "recovery_code", "hwk": "webauthn"}


class MfaLogins:
    """Open and finish the second step of logins."""

    def __init__(
        self,
        db: Database,
        sessions: Sessions,
        ring: SecretRing,
        audit: AuditLog,
        limits: MfaLimits,
        totp: TotpFactors,
        recovery: RecoveryCodes,
        *,
        lifetime: timedelta = timedelta(seconds=MFA_TOKEN_SECONDS),
        max_failures: int = MAX_FAILURES,
        envelope: Envelope,
    ) -> None:
        """``ring``: the keys ``mfa_token`` hashes are made with (newest writes, all read)."""
        self._db = db
        self._envelope = envelope
        self._sessions = sessions
        self._ring = ring
        self._audit = audit
        self._limits = limits
        self._totp = totp
        self._recovery = recovery
        self._lifetime = lifetime
        self._max_failures = max_failures

    def _hashes(self, mfa_token: str) -> list[str]:
        # Junk never reaches a query: only a value shaped like a token is hashed.
        if not looks_like_token(mfa_token):
            return []
        return self._ring.macs(mfa_token.encode("ascii"))

    async def open(self, user: UserRecord, info: RequestInfo, amr: tuple[str, ...]) -> MfaPending:
        """The pending second step for ``user``, who passed the methods ``amr`` (``pwd``)."""
        token = new_token()
        now = utcnow()
        async with self._db.transaction() as conn:
            methods = await mfa_rows.methods_of(conn, user.id)
            await mfa_rows.insert_challenge(
                conn,
                user_id=user.id,
                token_hash=self._ring.mac(token.encode("ascii")),
                amr=",".join(amr),
                now=now,
                expires_at=now + self._lifetime,
            )
        log.info("mfa_login_pending", user_id=str(user.id), methods=methods)
        return MfaPending(token, methods, int(self._lifetime.total_seconds()))

    async def _live(self, mfa_token: str) -> ChallengeRecord:
        async with self._db.reading() as conn:
            found = await mfa_rows.find_live_challenge(
                conn, self._hashes(mfa_token), utcnow(), self._max_failures
            )
        if found is None:
            raise InvalidToken(MFA_TOKEN_REFUSED)
        return found

    async def user_of(self, mfa_token: str) -> uuid.UUID:
        """The user whose login ``mfa_token`` is waiting for (e.g. to offer their passkeys);
        InvalidToken (401) unless the challenge is live. Reads only: nothing is spent."""
        return (await self._live(mfa_token)).user_id

    async def verify_code(
        self,
        mfa_token: str,
        info: RequestInfo,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
        report: LimitReport | None = None,
    ) -> TokenPair:
        """Finish a login with a TOTP ``code`` or a ``recovery_code`` (exactly one).
        InvalidToken (401) for a bad, expired, used or dead ``mfa_token``; RateLimited (429)
        past the MFA limit (per user and client IP), before the code is looked at;
        InvalidCode (401) for a wrong, replayed or spent code."""
        if (code is None) == (recovery_code is None):
            raise ValueError("give exactly one of code and recovery_code")
        challenge = await self._live(mfa_token)
        await self._limits.admit(challenge.user_id, info.ip, report)
        if code is not None:
            return await self.finish(mfa_token, info, factor="otp", verify=self._totp_check(code))
        return await self.finish(
            mfa_token, info, factor="rc", verify=self._recovery_check(recovery_code or "", info)
        )

    def _totp_check(self, code: str) -> Verify:
        async def check(conn: AsyncConnection, user: UserRecord) -> bool:
            return await self._totp.check(conn, user.id, code, utcnow())

        return check

    def _recovery_check(self, code: str, info: RequestInfo) -> Verify:
        async def check(conn: AsyncConnection, user: UserRecord) -> bool:
            return await self._recovery.use(conn, user, code, info, utcnow())

        return check

    async def finish(
        self,
        mfa_token: str,
        info: RequestInfo,
        *,
        factor: str,
        verify: Verify,
        extra_amr: tuple[str, ...] = (),
    ) -> TokenPair:
        """End the second step with ``factor`` (an ``amr`` value: ``otp``, ``rc``, ``hwk``)
        checked by ``verify`` inside this method's transaction.

        InvalidToken (401) unless the challenge is live (unexpired, unused, fewer than
        five wrong codes) and its user may sign in. ``verify`` False: one more failure
        (the fifth kills the challenge), audited, InvalidCode (401). True: the challenge
        is marked used — atomically, a token finishes once — and a session opens with
        ``amr`` = the challenge's + ``factor`` + ``extra_amr`` (audited as a login by
        ``mfa``)."""
        method = _METHOD_OF_FACTOR.get(factor, factor)
        now = utcnow()
        wrong: int | None = None
        async with self._db.transaction() as conn:
            challenge = await mfa_rows.find_live_challenge(
                conn, self._hashes(mfa_token), now, self._max_failures
            )
            if challenge is None:
                raise InvalidToken(MFA_TOKEN_REFUSED)
            user = await user_rows.get_by_id(conn, self._envelope, challenge.user_id)
            if user is None or not user.can_sign_in:
                raise InvalidToken(MFA_TOKEN_REFUSED)
            if await verify(conn, user):
                # Rolls the factor's change back with it if another request finished first.
                if not await mfa_rows.finish_challenge(conn, challenge.id, now, self._max_failures):
                    raise InvalidToken(MFA_TOKEN_REFUSED)
                await self._audit.record(
                    conn, _verify_event(user.id, "success", method, challenge.id), info
                )
            else:
                failures = await mfa_rows.fail_challenge(conn, challenge.id, self._max_failures)
                wrong = self._max_failures if failures is None else failures
                await self._audit.record(
                    conn,
                    _verify_event(
                        user.id,
                        "failure",
                        method,
                        challenge.id,
                        failures=wrong,
                        dead=wrong >= self._max_failures,
                    ),
                    info,
                )
        if wrong is not None:
            metrics.MFA_VERIFICATIONS.labels(method, "failure").inc()
            log.info("mfa_login_code_refused", user_id=str(user.id), method=method, failures=wrong)
            raise InvalidCode()
        metrics.MFA_VERIFICATIONS.labels(method, "success").inc()
        amr = tuple(dict.fromkeys((*parse_amr(challenge.amr), factor, *extra_amr)))
        pair = await self._sessions.start(user, info, method="mfa", amr=amr)
        metrics.LOGINS.labels("success").inc()
        return pair


def _verify_event(
    user_id: uuid.UUID,
    outcome: str,
    method: str,
    challenge_id: uuid.UUID,
    **extra: object,
) -> AuditEvent:
    return AuditEvent(
        Action.MFA_VERIFY,
        "success" if outcome == "success" else "failure",
        actor=Actor(user_id),
        entity_type="mfa_login",
        entity_id=challenge_id,
        details={"method": method, "purpose": "login", **extra},
    )
