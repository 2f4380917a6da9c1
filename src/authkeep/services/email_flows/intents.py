"""Mail intents: the open flows decide *after* the response whether an email goes out.

``register`` (for a taken address), ``verify-email/resend`` and ``password/forgot`` must
answer alike, and in the same time, whether or not the address has an account. So the
request does the same work either way — it counts the mail limits, makes a token and
writes one ``account_mail`` outbox message (the *intent*) in its transaction — and never
looks the address up. The outbox worker then hands the intent to
:class:`AccountMailHandler`, which looks the address up and, if there is an account to
mail, stores the token's hash and queues the real email, in one transaction.

Exactly-once: the email is queued with the intent's id as its ``dedup_key``, first in that
transaction; an intent handled twice (a worker died before marking it sent) finds the key
used and writes nothing, so one intent causes at most one email and one live token.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import users as user_rows
from authkeep.db.account_tokens import Purpose
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.outbox import ClaimedMessage
from authkeep.db.users import UserRecord
from authkeep.security.email_tokens import IssuedEmailToken
from authkeep.security.envelope import Envelope
from authkeep.services.audit import SYSTEM, Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.email_flows.config import EmailFlowConfig
from authkeep.services.email_flows.tokens import store_token
from authkeep.services.mail.mailer import Mailer
from authkeep.services.outbox.handlers import PermanentDeliveryError
from authkeep.services.outbox.queue import Outbox

log = structlog.get_logger("authkeep.email_flows")

ACCOUNT_MAIL = "account_mail"
"""The outbox kind of mail intents."""

IntentAction = Literal["register", "verify_email", "password_reset", "signup_attempt"]
_ACTIONS = frozenset(get_args(IntentAction))


async def queue_intent(
    outbox: Outbox,
    conn: AsyncConnection,
    *,
    action: IntentAction,
    email_key: str,
    token: IssuedEmailToken,
    info: RequestInfo | None,
) -> None:
    """Write a mail intent in the caller's transaction. The payload holds the token until
    the intent is handled, then is scrubbed to the action's name (like an email's)."""
    info = info or RequestInfo()
    await outbox.enqueue(
        conn,
        ACCOUNT_MAIL,
        {
            "action": action,
            "email_key": email_key,
            "token": token.token,
            "token_hash": token.hash,
            "info": {
                "ip": info.ip,
                "user_agent": info.short_user_agent,
                "request_id": info.request_id,
            },
        },
    )


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise PermanentDeliveryError(f"malformed account_mail payload ({name})")
    return value


def _info(payload: Mapping[str, Any]) -> RequestInfo:
    raw = payload.get("info")
    if not isinstance(raw, dict):
        return RequestInfo()
    values = {k: v if isinstance(v, str) else None for k, v in raw.items()}
    return RequestInfo(values.get("ip"), values.get("user_agent"), values.get("request_id"))


class AccountMailHandler:
    """Handles ``account_mail`` intents (an outbox handler)."""

    def __init__(
        self,
        db: Database,
        mailer: Mailer,
        audit: AuditLog,
        config: EmailFlowConfig,
        *,
        envelope: Envelope,
    ) -> None:
        """``envelope`` opens the accounts' addresses and seals the links' ones."""
        self._db = db
        self._envelope = envelope
        self._mailer = mailer
        self._audit = audit
        self._config = config

    async def deliver(self, message: ClaimedMessage) -> None:
        """Look the address up and queue the email the intent calls for, if any."""
        payload = message.payload
        action = _text(payload, "action")
        if action not in _ACTIONS:
            raise PermanentDeliveryError("unknown account_mail action")
        token = IssuedEmailToken(_text(payload, "token"), _text(payload, "token_hash"))
        email_key = _text(payload, "email_key")
        info = _info(payload)
        dedup = f"{ACCOUNT_MAIL}:{message.id}"
        async with self._db.transaction() as conn:
            user = await user_rows.get_by_email_key(conn, self._envelope, email_key)
            now = utcnow()
            if action == "password_reset":
                await self._reset(conn, user, token, dedup, now, info)
            elif action == "signup_attempt":
                if user is not None and user.can_sign_in:
                    await self._mailer.enqueue(
                        conn, "signup_attempt_existing", user.email, {}, dedup_key=dedup
                    )
            elif action == "verify_email" or self._config.verification != "off":
                await self._verify(conn, user, token, dedup, now, info)
        log.info("account_mail_handled", action=action, message_id=str(message.id))

    def scrub(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the action only: the token and the address must not outlive the intent."""
        return {"action": payload.get("action")}

    async def _verify(
        self,
        conn: AsyncConnection,
        user: UserRecord | None,
        token: IssuedEmailToken,
        dedup: str,
        now: datetime,
        info: RequestInfo,
    ) -> None:
        if user is None or not user.can_sign_in or user.email_verified:
            return
        await self._send_link(
            conn,
            user,
            purpose="verify_email",
            context={"token": token.token},
            token=token,
            ttl=self._config.verify_ttl,
            action=Action.EMAIL_VERIFICATION_SENT,
            dedup=dedup,
            now=now,
            info=info,
        )

    async def _reset(
        self,
        conn: AsyncConnection,
        user: UserRecord | None,
        token: IssuedEmailToken,
        dedup: str,
        now: datetime,
        info: RequestInfo,
    ) -> None:
        if user is None or not user.can_sign_in:
            # Recorded without naming the address (the audit log is append-only: no
            # unknown address typed by a stranger is kept there for ever).
            reason = "unknown_email" if user is None else "cannot_sign_in"
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.PASSWORD_RESET_REQUESTED,
                    "failure",
                    actor=SYSTEM,
                    entity_type="user" if user else None,
                    entity_id=user.id if user else None,
                    details={"reason": reason},
                ),
                info,
            )
            return
        minutes = int(self._config.reset_ttl.total_seconds() // 60)
        await self._send_link(
            conn,
            user,
            purpose="password_reset",
            context={"token": token.token, "expires_minutes": minutes},
            token=token,
            ttl=self._config.reset_ttl,
            action=Action.PASSWORD_RESET_REQUESTED,
            dedup=dedup,
            now=now,
            info=info,
        )

    async def _send_link(
        self,
        conn: AsyncConnection,
        user: UserRecord,
        *,
        purpose: Purpose,
        context: dict[str, Any],
        token: IssuedEmailToken,
        ttl: timedelta,
        action: Action,
        dedup: str,
        now: datetime,
        info: RequestInfo,
    ) -> None:
        """Queue the ``purpose`` email (its template has the same name) with its link's
        token, store the token's hash and audit ``action`` — once per intent: a redelivered
        intent finds its email already queued (``dedup``) and does nothing."""
        if not await self._mailer.enqueue(conn, purpose, user.email, context, dedup_key=dedup):
            return
        await store_token(
            conn,
            self._envelope,
            user_id=user.id,
            purpose=purpose,
            token=token,
            email=user.email,
            now=now,
            ttl=ttl,
        )
        await self._audit.record(
            conn,
            AuditEvent(action, actor=Actor(user.id), entity_type="user", entity_id=user.id),
            info,
        )
