"""Changing the account's address: asked with the password, done by the new address.

``request`` needs the current password (a stolen access token is not enough to move the
account, and with it its password resets, to another mailbox). It never checks whether the
new address is taken — the answer and the work are the same either way — and changes
nothing: it stores a link's keyed hash, mails the link to the new address and a notice to
the old one (whose "this wasn't me" path is a password reset, which voids the pending
change). ``confirm`` spends the link once and moves the account to the new, now proven,
address; only then would a taken address show, to whoever holds that mailbox.
"""

from __future__ import annotations

import structlog

from authkeep.db import account_tokens as token_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import Conflict, EmailTokenUnusable
from authkeep.security.emails import email_key
from authkeep.security.passwords import PasswordHasher
from authkeep.services.accounts import FieldError, confirm_password, valid_email
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.email_flows.config import EmailFlowConfig
from authkeep.services.email_flows.limits import MailLimits
from authkeep.services.email_flows.tokens import EmailTokens, store_token
from authkeep.services.mail.mailer import Mailer
from authkeep.services.rate_limits import LimitReport
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.email_change")

EMAIL_IN_USE = "This email address is already in use by another account"


class EmailChange:
    """Email-change requests and confirmations."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        mailer: Mailer,
        tokens: EmailTokens,
        limits: MailLimits,
        audit: AuditLog,
        config: EmailFlowConfig,
        *,
        users_changed: Publish,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._mailer = mailer
        self._tokens = tokens
        self._envelope = tokens.envelope
        self._limits = limits
        self._audit = audit
        self._config = config
        self._users_changed = users_changed

    async def request(
        self,
        user: UserRecord,
        *,
        new_email: str,
        password: str,
        info: RequestInfo | None = None,
        report: LimitReport | None = None,
    ) -> None:
        """Mail a confirmation link to ``new_email`` and a notice to the current address.
        FieldError for a malformed or unchanged address (``new_email``) or a wrong password
        (``password``); RateLimited when the client's mail budget is spent."""
        try:
            new = valid_email(new_email)
        except FieldError as exc:
            raise FieldError("new_email", exc.detail) from None
        new_key = email_key(new)
        if new_key == email_key(user.email):
            raise FieldError("new_email", "This is already your email address")
        await confirm_password(
            self._db,
            self._hasher,
            self._audit,
            user,
            password,
            action=Action.EMAIL_CHANGE_REQUESTED,
            info=info,
        )
        mail = await self._limits.admit(new_key, info.ip if info else None, report)
        token = self._tokens.issue()
        now = utcnow()
        async with self._db.transaction() as conn:
            if mail:
                await store_token(
                    conn,
                    self._envelope,
                    user_id=user.id,
                    purpose="email_change",
                    token=token,
                    email=new,
                    now=now,
                    ttl=self._config.change_ttl,
                )
                await self._mailer.enqueue(
                    conn, "email_change_confirm", new, {"token": token.token, "new_email": new}
                )
            # The notice always goes: the owner must hear of a change they did not ask for.
            await self._mailer.enqueue(conn, "email_change_notice", user.email, {"new_email": new})
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.EMAIL_CHANGE_REQUESTED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                    details={"link_sent": mail},
                ),
                info,
            )
        log.info("email_change_requested", user_id=str(user.id))

    async def confirm(self, token: str, info: RequestInfo | None = None) -> UserRecord:
        """Spend an email-change link: the account's address becomes the new, proven one.
        EmailTokenUnusable for a bad, used, expired or voided link; Conflict when another
        account took the address meanwhile (the link then stays usable)."""
        now = utcnow()
        async with self._db.transaction() as conn:
            record = await self._tokens.consume(conn, token, "email_change", now)
            user = await user_rows.get_by_id(conn, self._envelope, record.user_id)
            if user is None or not user.can_sign_in:
                raise EmailTokenUnusable()
            try:
                await user_rows.set_email(
                    conn,
                    self._envelope,
                    user.id,
                    email=record.email,
                    email_key=email_key(record.email),
                    now=now,
                )
            except user_rows.EmailTaken:
                raise Conflict(EMAIL_IN_USE) from None
            # Links mailed to the old address (verification, reset) and other pending
            # changes are void: they were issued for an address the account has left.
            await token_rows.void_unused(
                conn,
                user_id=user.id,
                purposes=("verify_email", "password_reset", "email_change"),
                now=now,
            )
            updated = await user_rows.get_by_id(conn, self._envelope, user.id)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.EMAIL_CHANGED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                ),
                info,
            )
        await self._users_changed([user.id])
        log.info("email_changed", user_id=str(user.id))
        return updated or user
