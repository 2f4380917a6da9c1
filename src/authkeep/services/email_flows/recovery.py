"""Forgot / reset password.

``forgot`` answers alike, in the same time, for any address: it counts the mail limits and
writes one mail intent; whether an account exists is looked up after the response, by the
outbox worker (:mod:`authkeep.services.email_flows.intents`), which then stores the link's
keyed hash and queues the email.

``reset`` spends the link once (an atomic conditional update) and, in one transaction, sets
the new password, ends every session (published at once to every worker, so access tokens
die on their next request), voids the other pending reset and email-change links, marks the
address as proven (the link reached it), audits, and queues a "password changed" notice.
"""

from __future__ import annotations

import structlog

from authkeep.db import account_tokens as token_rows
from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.errors import EmailTokenUnusable
from authkeep.security.emails import email_key
from authkeep.security.passwords import PasswordHasher
from authkeep.services.accounts import Accounts, valid_email
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.email_flows.intents import queue_intent
from authkeep.services.email_flows.limits import MailLimits
from authkeep.services.email_flows.tokens import EmailTokens
from authkeep.services.mail.mailer import Mailer
from authkeep.services.outbox.queue import Outbox
from authkeep.services.rate_limits import LimitReport
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.password_reset")


class PasswordRecovery:
    """Forgot-password links and resets."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        accounts: Accounts,
        outbox: Outbox,
        mailer: Mailer,
        tokens: EmailTokens,
        limits: MailLimits,
        audit: AuditLog,
        *,
        publish: Publish,
        users_changed: Publish,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._accounts = accounts
        self._outbox = outbox
        self._mailer = mailer
        self._tokens = tokens
        self._envelope = tokens.envelope
        self._limits = limits
        self._audit = audit
        self._publish = publish
        self._users_changed = users_changed

    async def forgot(
        self, email: str, info: RequestInfo | None = None, report: LimitReport | None = None
    ) -> None:
        """Queue a reset link for ``email`` if it has an account; the same work and answer
        whatever the address (FieldError only for a malformed one, RateLimited for a spent
        client budget)."""
        key = email_key(valid_email(email))
        if not await self._limits.admit(key, info.ip if info else None, report):
            return
        token = self._tokens.issue()
        async with self._db.transaction() as conn:
            await queue_intent(
                self._outbox, conn, action="password_reset", email_key=key, token=token, info=info
            )

    async def reset(self, token: str, new_password: str, info: RequestInfo | None = None) -> None:
        """Set a new password with a reset link and end every session. EmailTokenUnusable
        for a bad, used, expired or voided link; FieldError (``new_password``) when the
        policy rejects the password — the link then stays usable."""
        async with self._db.reading() as conn:
            found = await self._tokens.peek(conn, token, "password_reset", utcnow())
            user = await user_rows.get_by_id(conn, self._envelope, found.user_id)
        if user is None or not user.can_sign_in:
            raise EmailTokenUnusable()
        # Judged before the link is spent: a rejected password must not cost the user it.
        await self._accounts.valid_password(
            new_password, email=user.email, full_name=user.full_name, field="new_password"
        )
        hashed = await self._hasher.hash(new_password)
        now = utcnow()
        async with self._db.transaction() as conn:
            record = await self._tokens.consume(conn, token, "password_reset", now)
            await user_rows.set_password_hash(conn, user.id, hashed)
            # Whoever knew the old password may have started an email change, or asked for
            # another link: none of it survives the reset.
            voided = await token_rows.void_unused(
                conn, user_id=user.id, purposes=("password_reset", "email_change"), now=now
            )
            verified = await user_rows.mark_email_verified(
                conn, self._envelope, user.id, record.email, now
            )
            ended = await session_rows.revoke_sessions(
                conn, user_id=user.id, now=now, reason="password_reset"
            )
            await self._mailer.enqueue(conn, "password_changed", user.email, {})
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.PASSWORD_RESET,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                    details={
                        "sessions_ended": len(ended),
                        "links_voided": voided,
                        "email_verified": verified,
                    },
                ),
                info,
            )
        await self._publish(ended)
        await self._users_changed([user.id])
        log.info("password_reset", user_id=str(user.id), sessions_ended=len(ended))
