"""Sign-up that tells no one which addresses have accounts, and email verification.

``register`` does the same work whether the address is new or taken: the password policy,
one password hash, the mail limits, one attempted insert, one audit row and one mail intent
(:mod:`authkeep.services.email_flows.intents`) — then the same answer. A new account gets a
verification link (unless ``AUTHKEEP_EMAIL_VERIFICATION=off``); the owner of a taken
address gets "someone tried to sign up with your address" instead, within the recipient's
mail limit.

With ``AUTHKEEP_EMAIL_VERIFICATION=required``, :meth:`SignUp.require_verified` is the
login gate: only after a correct password does an unverified account learn that it must
verify (and a fresh link is queued, within the same limit).
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import EmailNotVerified, EmailTokenUnusable
from authkeep.security.emails import email_key
from authkeep.security.passwords import PasswordHasher
from authkeep.services.accounts import Accounts, valid_email
from authkeep.services.audit import SYSTEM, Action, Actor, AuditEvent, AuditLog
from authkeep.services.consents import ConsentPolicy, Consents
from authkeep.services.context import RequestInfo
from authkeep.services.email_flows.config import EmailFlowConfig
from authkeep.services.email_flows.intents import IntentAction, queue_intent
from authkeep.services.email_flows.limits import MailLimits
from authkeep.services.email_flows.tokens import EmailTokens
from authkeep.services.outbox.queue import Outbox
from authkeep.services.rate_limits import LimitReport
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.signup")


class SignUp:
    """Registration, verification links and the login gate."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        accounts: Accounts,
        outbox: Outbox,
        tokens: EmailTokens,
        limits: MailLimits,
        audit: AuditLog,
        config: EmailFlowConfig,
        *,
        users_changed: Publish,
        consents: Consents | None = None,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._accounts = accounts
        self._outbox = outbox
        self._tokens = tokens
        # The accounts' personal data is sealed with the key the tokens' addresses use.
        self._envelope = tokens.envelope
        self._limits = limits
        self._audit = audit
        self._config = config
        self._users_changed = users_changed
        # None: no consent purpose configured (a sign-up that sends consents is refused).
        self._consents = consents if consents is not None else Consents(db, audit, ConsentPolicy())

    @property
    def config(self) -> EmailFlowConfig:
        """The flows' configuration (verification mode, link lifetimes)."""
        return self._config

    async def register(
        self,
        *,
        email: str,
        password: str,
        full_name: str | None = None,
        consents: Mapping[str, str] | None = None,
        info: RequestInfo | None = None,
        report: LimitReport | None = None,
    ) -> None:
        """Create an account, or mail the owner of the taken address; the caller cannot
        tell which happened. FieldError for a malformed address or a rejected password
        (alike for both), RateLimited when the client's mail budget is spent.

        ``consents`` (purpose -> the version the user agreed to) are checked first, before
        anything about the address, so their FieldError says nothing about it; they are
        recorded (and audited) for a new account only: the owner of a taken address decided
        their consents themselves."""
        grants = self._consents.policy.signup_grants(consents)
        stored = valid_email(email)
        await self._accounts.valid_password(password, email=stored, full_name=full_name)
        key = email_key(stored)
        mail = await self._limits.admit(key, info.ip if info else None, report)
        # The hash is made either way: it is most of the time a sign-up costs, and skipping
        # it for a taken address would make "taken" the fast answer.
        hashed = await self._hasher.hash(password)
        token = self._tokens.issue()
        async with self._db.transaction() as conn:
            try:
                user: UserRecord | None = await user_rows.insert_user(
                    conn,
                    self._envelope,
                    email=stored,
                    email_key=key,
                    hashed_password=hashed,
                    full_name=full_name,
                )
            except user_rows.EmailTaken:
                user = None
            if user is not None:
                action: IntentAction = "register"
                event = AuditEvent(
                    Action.USER_REGISTERED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                )
            else:
                action = "signup_attempt"
                event = AuditEvent(
                    Action.SIGNUP_EXISTING_EMAIL,
                    "failure",
                    actor=SYSTEM,
                    details={"reason": "email_taken"},
                )
            if mail:
                await queue_intent(
                    self._outbox, conn, action=action, email_key=key, token=token, info=info
                )
            await self._audit.record(conn, event, info)
            if user is not None:
                await self._consents.record_signup(conn, user.id, grants, info)
        if user is not None:
            log.info("user_registered", user_id=str(user.id))
        else:
            log.info("signup_existing_email")

    async def resend(
        self, email: str, info: RequestInfo | None = None, report: LimitReport | None = None
    ) -> None:
        """Queue a new verification link for ``email`` if it belongs to an unverified
        account; the same work and answer whatever the address (FieldError only for a
        malformed one, RateLimited for a spent client budget)."""
        key = email_key(valid_email(email))
        if not await self._limits.admit(key, info.ip if info else None, report):
            return
        await self._queue(key, "verify_email", info)

    async def _queue(self, key: str, action: IntentAction, info: RequestInfo | None) -> None:
        token = self._tokens.issue()
        async with self._db.transaction() as conn:
            await queue_intent(
                self._outbox, conn, action=action, email_key=key, token=token, info=info
            )

    async def verify(self, token: str, info: RequestInfo | None = None) -> UserRecord:
        """Spend a verification link: the account's address is proven. EmailTokenUnusable
        for a bad, used or expired link, or one sent to an address the account has left."""
        now = utcnow()
        async with self._db.transaction() as conn:
            record = await self._tokens.consume(conn, token, "verify_email", now)
            user = await user_rows.get_by_id(conn, self._envelope, record.user_id)
            if user is None or not user.can_sign_in:
                raise EmailTokenUnusable()
            if not await user_rows.mark_email_verified(
                conn, self._envelope, user.id, record.email, now
            ):
                raise EmailTokenUnusable()
            updated = await user_rows.get_by_id(conn, self._envelope, user.id)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.EMAIL_VERIFIED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                    details={"via": "verification_link"},
                ),
                info,
            )
        # Every worker's cached copy of the user must show the address as verified now.
        await self._users_changed([user.id])
        log.info("email_verified", user_id=str(user.id))
        return updated or user

    async def require_verified(self, user: UserRecord, info: RequestInfo) -> None:
        """The login gate, called after a correct password: EmailNotVerified when
        verification is required and the address is not proven. A fresh link is queued
        (within the recipient's mail limit), so the answer is also the way out."""
        if self._config.verification != "required" or user.email_verified:
            return
        await self._audit.record_alone(
            AuditEvent(
                Action.LOGIN,
                "failure",
                actor=Actor(user.id),
                entity_type="user",
                entity_id=user.id,
                details={"reason": "email_not_verified"},
            ),
            info,
        )
        key = email_key(user.email)
        if await self._limits.admit_recipient_quietly(key):
            await self._queue(key, "verify_email", info)
        log.info("login_email_not_verified", user_id=str(user.id))
        raise EmailNotVerified()
