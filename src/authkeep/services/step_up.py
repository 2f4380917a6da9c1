"""Step-up: sensitive actions need a recent sign-in, and a second factor when the user has one.

Two halves:

* :class:`StepUpPolicy` — the check. A sensitive route (password change, MFA changes, API-key
  creation, email change, platform-admin writes, an organization's MFA policy) refuses an
  access token whose ``auth_time`` is older than its maximum age, or whose ``acr`` is
  ``aal1`` while the user has a second factor (or the route needs ``aal2`` anyway), with
  :class:`~authkeep.errors.StepUpRequired` — HTTP 401 and RFC 9470's
  ``insufficient_user_authentication``. The claims are the token's own, fixed when it was
  minted from the session row: an elevation ends by itself when its age passes the limit, and
  checking it costs no query (``mfa_enabled`` comes with the user row the request loads
  anyway).
* :class:`StepUp` — the cure (``POST /api/v1/auth/step-up``): the signed-in user proves
  again who they are, with the password or a TOTP code, and the *session* records it
  (``auth_time`` now; ``amr``): an access token minted for it, and every later refresh,
  carries the new sign-in. Nothing else about the session changes.

``amr`` after a step-up: a password gives ``["pwd"]`` (``aal1``); a code adds ``otp`` to the
session's methods (``["pwd", "otp"]``: ``aal2``). So a user with a second factor reaches
``aal2`` only with a code: a stolen password never elevates a stolen token.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from authkeep import metrics
from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.errors import (
    InvalidCode,
    InvalidCredentials,
    InvalidToken,
    PermissionDenied,
    StepUpRequired,
)
from authkeep.security.assurance import AAL2, AuthContext
from authkeep.security.envelope import Envelope
from authkeep.security.passwords import PasswordHasher
from authkeep.security.tokens import TokenCodec
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.authn import Principal
from authkeep.services.context import RequestInfo
from authkeep.services.login_throttle import LoginThrottle
from authkeep.services.rate_limits import LimitReport

__all__ = [
    "BAD_CODE",
    "BAD_PASSWORD",
    "NOT_A_SESSION",
    "NO_AUTHENTICATOR",
    "CodeVerifier",
    "StepUp",
    "StepUpPolicy",
    "SteppedUp",
]

log = structlog.get_logger("authkeep.step_up")

NOT_A_SESSION = "This action needs a person's recent sign-in, not an API key"
BAD_PASSWORD = "Incorrect password"
BAD_CODE = "Invalid or already used code"
NO_AUTHENTICATOR = "No authenticator app is enrolled: step up with your password"

Method = Literal["pwd", "otp"]


class StepUpPolicy:
    """The step-up rule, with the default maximum age (``AUTHKEEP_STEP_UP_MAX_AGE_SECONDS``)."""

    def __init__(self, max_age_seconds: int) -> None:
        self.max_age_seconds = max_age_seconds

    def require(
        self,
        principal: Principal,
        *,
        max_age: int | None = None,
        aal2: bool = False,
        now: float | None = None,
    ) -> None:
        """Pass if ``principal`` signed in (or stepped up) at most ``max_age`` seconds ago
        (default: the setting) at ``aal2`` when the user has a second factor or ``aal2`` is
        asked; else raise StepUpRequired saying what a new sign-in must meet. API keys are
        refused outright: no key can re-authenticate a person."""
        claims = principal.claims
        if claims is None:
            raise PermissionDenied(NOT_A_SESSION)
        limit = self.max_age_seconds if max_age is None else max_age
        need_aal2 = aal2 or principal.user.mfa_enabled
        acr_values = AAL2 if need_aal2 else None
        moment = time.time() if now is None else now
        if moment - claims.auth_time > limit:
            metrics.STEP_UP_REQUIRED.labels("max_age").inc()
            raise StepUpRequired(max_age=limit, acr_values=acr_values)
        if need_aal2 and claims.acr != AAL2:
            metrics.STEP_UP_REQUIRED.labels("acr").inc()
            raise StepUpRequired(
                "This action needs a sign-in with your second factor: step up and retry",
                max_age=limit,
                acr_values=AAL2,
            )


class CodeVerifier(Protocol):
    """Checks a user's TOTP code, once (the MFA service: a replayed or older code is False;
    it applies the MFA rate limit and audits the check itself)."""

    async def verify(
        self,
        user_id: uuid.UUID,
        code: str,
        info: RequestInfo | None = None,
        report: LimitReport | None = None,
    ) -> bool:
        """Whether ``code`` is the user's current TOTP code, not accepted before."""
        ...


@dataclass(frozen=True, slots=True)
class SteppedUp:
    """A step-up's result: an access token of the same session carrying the new sign-in."""

    access_token: str
    expires_in: int
    auth: AuthContext


class StepUp:
    """Re-authentication of a signed-in user, without ending the session.

    ``throttle`` applies a login's lock-out to password attempts; ``totp`` checks codes (the
    MFA service; None: no code is ever accepted)."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        codec: TokenCodec,
        audit: AuditLog,
        throttle: LoginThrottle,
        totp: CodeVerifier | None = None,
        *,
        envelope: Envelope,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._hasher = hasher
        self._codec = codec
        self._audit = audit
        self._throttle = throttle
        self.totp = totp

    async def with_password(
        self, principal: Principal, password: str, info: RequestInfo
    ) -> SteppedUp:
        """Step up with the account's password: ``amr`` becomes ``["pwd"]`` (``aal1``).
        InvalidCredentials (401) for a wrong one, RateLimited (429) while the account's or
        the client IP's failed logins are exhausted."""
        session_id = _session_of(principal)
        user = principal.user

        async def check() -> bool:
            return await self._password_ok(user.id, password)

        if not await self._throttle.reauthenticate(user.email, info, check):
            await self._failed(principal, session_id, "pwd", "bad_password", info)
            raise InvalidCredentials(BAD_PASSWORD)
        return await self._record(principal, session_id, "pwd", info)

    async def with_code(
        self,
        principal: Principal,
        code: str,
        info: RequestInfo,
        report: LimitReport | None = None,
    ) -> SteppedUp:
        """Step up with a TOTP code: ``otp`` joins the session's methods (``aal2`` after a
        password sign-in). InvalidCode (401) for a wrong, replayed or older code; RateLimited
        (429) past the MFA limit; a FieldError (422) when the user has no second factor."""
        session_id = _session_of(principal)
        if self.totp is None or not principal.user.mfa_enabled:
            raise FieldError("code", NO_AUTHENTICATOR)
        if not await self.totp.verify(principal.user.id, code, info, report):
            await self._failed(principal, session_id, "otp", "bad_code", info)
            raise InvalidCode(BAD_CODE)
        return await self._record(principal, session_id, "otp", info)

    async def _password_ok(self, user_id: uuid.UUID, password: str) -> bool:
        async with self._db.reading() as conn:
            stored = await user_rows.get_password_hash(conn, user_id)
        result = await self._hasher.verify(password, stored)
        if result.ok and result.new_hash is not None:
            async with self._db.transaction() as conn:
                await user_rows.set_password_hash(conn, user_id, result.new_hash)
        return result.ok

    async def _failed(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        method: Method,
        reason: str,
        info: RequestInfo,
    ) -> None:
        metrics.STEP_UPS.labels(method, "failure").inc()
        log.info("step_up_failed", user_id=str(principal.user.id), method=method, reason=reason)
        await self._audit.record_alone(
            AuditEvent(
                Action.STEP_UP,
                "failure",
                actor=Actor(principal.user.id),
                entity_type="session",
                entity_id=session_id,
                details={"method": method, "reason": reason},
            ),
            info,
        )

    async def _record(
        self, principal: Principal, session_id: uuid.UUID, method: Method, info: RequestInfo
    ) -> SteppedUp:
        user = principal.user
        now = utcnow()
        async with self._db.transaction() as conn:
            session = await session_rows.get_session(conn, self._envelope, session_id)
            # A session that ended while the password was being checked gains nothing.
            if (
                session is None
                or session.user_id != user.id
                or session.revoked_at is not None
                or session.expires_at <= now
            ):
                raise InvalidToken()
            amr: tuple[str, ...] = ("pwd",)
            if method == "otp":
                amr = session.auth.amr if "otp" in session.auth.amr else (*session.auth.amr, "otp")
            auth = AuthContext(now, amr)
            if not await session_rows.reauthenticate(conn, session_id, user.id, auth):
                raise InvalidToken()
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.STEP_UP,
                    actor=Actor(user.id),
                    entity_type="session",
                    entity_id=session_id,
                    details={"method": method, "amr": list(auth.amr), "acr": auth.acr},
                ),
                info,
            )
        access = self._codec.issue_access(
            user_id=str(user.id),
            email=user.email,
            session_id=str(session_id),
            org_id=str(principal.org_id) if principal.org_id is not None else None,
            role=principal.role.value if principal.role is not None else None,
            email_verified=user.email_verified,
            auth=auth,
        )
        metrics.STEP_UPS.labels(method, "success").inc()
        log.info("step_up", user_id=str(user.id), method=method, acr=auth.acr)
        expires_in = int((access.expires_at - access.issued_at).total_seconds())
        return SteppedUp(access.token, expires_in, auth)


def _session_of(principal: Principal) -> uuid.UUID:
    if principal.claims is None:
        raise PermissionDenied(NOT_A_SESSION)
    return principal.session_id
