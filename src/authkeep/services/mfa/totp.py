"""TOTP factors: setup, confirmation, removal and the replay-safe code check.

* **Setup** makes a secret, seals it with the data keys bound to its row
  (``mfa_totp.secret_sealed:`` + the row id as AES-GCM associated data: a sealed value
  copied into another user's row does not open there) and returns it with its
  ``otpauth://`` URI and QR code. The factor is *pending*: it counts for nothing until a
  code confirms it. A second setup while pending replaces it (a new secret); while
  confirmed it is refused (409): remove the factor first, with a recent sign-in and the
  second factor itself.
* **Confirmation** needs a correct code; it sets ``last_step`` to that code's time step, so
  the enrolment code can never be used again (it is the code most likely to have been seen
  over a shoulder), turns ``users.mfa_enabled`` on and issues the recovery codes, shown once.
* **Checking a code** (login's second step, step-up) accepts a step only if it is newer than
  the last accepted one, in one atomic statement (:func:`authkeep.db.mfa.accept_step`): the
  same code twice, an older code, and concurrent submissions of one code all get one
  success at most.
* Every code check is rate-limited (:class:`~authkeep.services.mfa.limits.MfaLimits`),
  audited (``mfa.verify``) and counted (``authkeep_mfa_verifications_total``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import metrics
from authkeep.db import mfa as mfa_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.mfa import FactorExists, TotpRecord
from authkeep.db.users import UserRecord
from authkeep.errors import Conflict, NotFound
from authkeep.security.data_keys import SealedValueError, SecretBox
from authkeep.security.totp import matching_step, new_secret, otpauth_uri, qr_svg
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.mfa.limits import MfaLimits
from authkeep.services.mfa.recovery import RecoveryCodes
from authkeep.services.rate_limits import LimitReport
from authkeep.services.revocation import Publish

__all__ = ["TotpFactors", "TotpSetup", "sealing_context"]

log = structlog.get_logger("authkeep.mfa")


ALREADY_ENROLLED = "An authenticator app is already set up: remove it first"
NOTHING_TO_CONFIRM = "No authenticator app setup to confirm: start with POST /mfa/totp/setup"
SETUP_REPLACED = "The setup was replaced meanwhile: scan the new QR code"
WRONG_ENROLMENT_CODE = "Invalid code: check the time on your device and try again"
NO_FACTOR = "No authenticator app is set up"


def sealing_context(factor_id: uuid.UUID) -> bytes:
    """The associated data a factor's secret is sealed with: its column and row."""
    return b"mfa_totp.secret_sealed:" + factor_id.bytes


@dataclass(frozen=True, slots=True)
class TotpSetup:
    """A new, pending factor as the user's app needs it."""

    secret: str = field(repr=False)
    otpauth_uri: str = field(repr=False)
    qr_svg: str = field(repr=False)


class TotpFactors:
    """A user's TOTP factor (one at most)."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        audit: AuditLog,
        recovery: RecoveryCodes,
        limits: MfaLimits,
        users_changed: Publish,
        *,
        issuer: str,
    ) -> None:
        """``box`` seals the secrets (the data keys); ``issuer`` names the service in the
        user's app (``AUTHKEEP_PRODUCT_NAME``); ``users_changed`` tells every worker that a
        user's ``mfa_enabled`` changed."""
        self._db = db
        self._box = box
        self._audit = audit
        self._recovery = recovery
        self._limits = limits
        self._users_changed = users_changed
        self._issuer = issuer

    def _secret_of(self, factor: TotpRecord) -> str | None:
        try:
            return self._box.open(factor.secret_sealed, context=sealing_context(factor.id)).decode()
        except (SealedValueError, UnicodeDecodeError):
            # A row whose secret does not open here (copied from another row, or sealed
            # with a data key since removed) is no factor: it verifies nothing.
            log.warning("mfa_totp_secret_unreadable", factor_id=str(factor.id))
            return None

    def _step(self, factor: TotpRecord, code: str, now: datetime) -> int | None:
        secret = self._secret_of(factor)
        return None if secret is None else matching_step(secret, code, now)

    async def setup(self, user: UserRecord) -> TotpSetup:
        """Start enrolment: a new pending factor (replacing a pending one). Conflict (409)
        when a confirmed factor exists."""
        secret = new_secret()
        factor_id = uuid.uuid4()
        sealed = self._box.seal(secret.encode(), context=sealing_context(factor_id))
        async with self._db.transaction() as conn:
            existing = await mfa_rows.get_totp(conn, user.id)
            if existing is not None and existing.confirmed:
                raise Conflict(ALREADY_ENROLLED)
            await mfa_rows.delete_pending_totp(conn, user.id)
            try:
                await mfa_rows.insert_totp(
                    conn, factor_id=factor_id, user_id=user.id, secret_sealed=sealed, now=utcnow()
                )
            except FactorExists:  # a concurrent setup or confirmation got there first
                raise Conflict(ALREADY_ENROLLED) from None
        uri = otpauth_uri(secret, account=user.email, issuer=self._issuer)
        log.info("mfa_totp_setup_started", user_id=str(user.id))
        return TotpSetup(secret, uri, qr_svg(uri))

    async def confirm(
        self,
        user: UserRecord,
        code: str,
        info: RequestInfo | None = None,
        report: LimitReport | None = None,
    ) -> list[str]:
        """Activate the pending factor with a correct code; returns the new recovery codes
        (shown once). RateLimited (429) past the MFA limit; FieldError (422, ``code``) for a
        wrong code; Conflict (409) with nothing pending or when already confirmed."""
        await self._limits.admit(user.id, info.ip if info else None, report)
        now = utcnow()
        async with self._db.reading() as conn:
            factor = await mfa_rows.get_totp(conn, user.id)
        if factor is None:
            raise Conflict(NOTHING_TO_CONFIRM)
        if factor.confirmed:
            raise Conflict(ALREADY_ENROLLED)
        step = self._step(factor, code, now)
        if step is None:
            await self._failed(user.id, "enrolment", info)
            raise FieldError("code", WRONG_ENROLMENT_CODE)
        async with self._db.transaction() as conn:
            if not await mfa_rows.confirm_totp(conn, factor.id, step, now):
                raise Conflict(SETUP_REPLACED)
            await user_rows.refresh_mfa_enabled(conn, user.id)
            codes = await self._recovery.issue(conn, user, now)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.MFA_TOTP_ENROLLED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                    details={"recovery_codes": len(codes)},
                ),
                info,
            )
        metrics.MFA_VERIFICATIONS.labels("totp", "success").inc()
        await self._users_changed([user.id])
        log.info("mfa_totp_enrolled", user_id=str(user.id))
        return codes

    async def delete(self, user: UserRecord, info: RequestInfo | None = None) -> None:
        """Remove the user's factor (confirmed or pending). Without another factor left,
        MFA is off and the recovery codes go too. NotFound (404) when there is none."""
        async with self._db.transaction() as conn:
            factor = await mfa_rows.get_totp(conn, user.id)
            if factor is None or not await mfa_rows.delete_totp(conn, user.id):
                raise NotFound(NO_FACTOR)
            enabled = await user_rows.refresh_mfa_enabled(conn, user.id)
            # Recovery codes stand in for a second factor; with none left they would be a
            # dormant credential nobody remembers having.
            voided = 0 if enabled else await mfa_rows.delete_recovery_codes(conn, user.id)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.MFA_TOTP_REMOVED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                    details={
                        "was_confirmed": factor.confirmed,
                        "mfa_enabled": enabled,
                        "recovery_codes_voided": voided,
                    },
                ),
                info,
            )
        await self._users_changed([user.id])
        log.info("mfa_totp_removed", user_id=str(user.id), mfa_enabled=enabled)

    async def check(
        self, conn: AsyncConnection, user_id: uuid.UUID, code: str, now: datetime
    ) -> bool:
        """In the caller's transaction: whether ``code`` is a current code of the user's
        confirmed factor for a step newer than any accepted before — and if so, that step
        is now the last accepted (it rolls back with the transaction). No limit, no audit:
        the caller (:meth:`verify`, the login's second step) does both."""
        factor = await mfa_rows.get_totp(conn, user_id)
        if factor is None or not factor.confirmed:
            return False
        step = self._step(factor, code, now)
        if step is None:
            return False
        return await mfa_rows.accept_step(conn, user_id, step)

    async def verify(
        self,
        user_id: uuid.UUID,
        code: str,
        info: RequestInfo | None = None,
        report: LimitReport | None = None,
    ) -> bool:
        """Check a code of the user's factor once (step-up and other callers): counted
        against the MFA limit (per user; per client IP too when ``info`` is given), then
        :meth:`check` in a transaction of its own, audited. RateLimited (429) past the
        limit."""
        await self._limits.admit(user_id, info.ip if info else None, report)
        async with self._db.transaction() as conn:
            accepted = await self.check(conn, user_id, code, utcnow())
            if accepted:
                await self._audit.record(conn, _verified(user_id, "success", "step_up"), info)
        if not accepted:
            await self._failed(user_id, "step_up", info)
            return False
        metrics.MFA_VERIFICATIONS.labels("totp", "success").inc()
        return True

    async def _failed(self, user_id: uuid.UUID, purpose: str, info: RequestInfo | None) -> None:
        metrics.MFA_VERIFICATIONS.labels("totp", "failure").inc()
        log.info("mfa_code_refused", user_id=str(user_id), purpose=purpose)
        await self._audit.record_quietly(_verified(user_id, "failure", purpose), info)


def _verified(user_id: uuid.UUID, outcome: str, purpose: str) -> AuditEvent:
    return AuditEvent(
        Action.MFA_VERIFY,
        "success" if outcome == "success" else "failure",
        actor=Actor(user_id),
        entity_type="user",
        entity_id=user_id,
        details={"method": "totp", "purpose": purpose},
    )
