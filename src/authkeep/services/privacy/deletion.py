"""Deleting an account: by its owner, by a platform admin, or for inactivity (docs/privacy.md,
"Deletion").

A deletion first **locks** the account, in one transaction after the account's row lock:
``deleted_at`` is set (it can no longer sign in: the same 401 as a wrong password), every
session is revoked and every API key it made is revoked (in every worker at once, through
the revocation store), its pending emailed links are voided, and the erasure is scheduled
at ``deletion_at``. The owner (for their own request or an inactivity deletion) is emailed
a single-use link that cancels it until then (:meth:`AccountDeletion.cancel`: the account
is unlocked, no session comes back). The purge erases the account when its time comes
(:class:`~authkeep.services.privacy.erasure.Erasure`); with a grace period of 0 the erasure
follows at once, as it does for a platform admin's deletion.

Nobody deletes the only admin of an organization that has other members (:class:`SoleAdmin`
names them): the organization would be left with nobody to manage it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import account_tokens as token_rows
from authkeep.db import deletion as deletion_rows
from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import Conflict, EmailTokenUnusable, NotFound, SoleAdmin
from authkeep.security.envelope import Envelope
from authkeep.security.passwords import PasswordHasher
from authkeep.services.accounts import confirm_password
from authkeep.services.audit import SYSTEM, Action, Actor, AuditEvent, AuditLog
from authkeep.services.authn import Principal
from authkeep.services.context import RequestInfo
from authkeep.services.email_flows.tokens import EmailTokens, store_token
from authkeep.services.mail import Mailer
from authkeep.services.privacy.erasure import Erased, Erasure
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.deletion")

CANCEL_PURPOSE: token_rows.Purpose = "deletion_cancel"
BAD_PASSWORD = "Password is incorrect"
"""The wrong-password answer of every route that asks for the current password again."""
SELF_DELETE = "Platform admins cannot deactivate or delete their own account"
# Emailed links of every kind die with the lock: a password reset or an address change must
# not act on an account that is leaving (a cancel link of an admin's deletion included).
_VOIDED: tuple[token_rows.Purpose, ...] = (
    "verify_email",
    "password_reset",
    "email_change",
    CANCEL_PURPOSE,
)

Origin = Literal["self", "inactivity", "admin"]


def mail_date(when: datetime) -> str:
    """A time as an email shows it: to the minute, in UTC."""
    return when.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A deletion: when the account will be (or was) erased; ``new`` is False when one was
    pending already and nothing changed."""

    deletion_at: datetime
    new: bool


@dataclass(frozen=True, slots=True)
class _Locked:
    sessions: list[uuid.UUID]
    api_keys: int
    links: int


class AccountDeletion:
    """Deletion requests, cancellations and admin deletions. ``grace`` is
    ``AUTHKEEP_ACCOUNT_DELETION_GRACE_DAYS``; ``tokens`` issue and spend the cancel links
    (keyed hashes, like every emailed link); ``publish`` and ``users_changed`` spread the
    revocations to every worker."""

    def __init__(
        self,
        db: Database,
        envelope: Envelope,
        hasher: PasswordHasher,
        audit: AuditLog,
        mailer: Mailer,
        tokens: EmailTokens,
        erasure: Erasure,
        *,
        grace: timedelta,
        publish: Publish,
        users_changed: Publish,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._hasher = hasher
        self._audit = audit
        self._mailer = mailer
        self._tokens = tokens
        self._erasure = erasure
        self._grace = grace
        self._publish = publish
        self._users_changed = users_changed

    @property
    def grace(self) -> timedelta:
        """Time between a deletion request and the erasure."""
        return self._grace

    @property
    def erasure(self) -> Erasure:
        """What erases the accounts whose deletion is due."""
        return self._erasure

    async def request(
        self, user: UserRecord, password: str, info: RequestInfo | None = None
    ) -> Scheduled:
        """The owner's deletion (``DELETE /auth/me``; the route checks the sign-in is
        recent). FieldError on ``password`` for a wrong one (audited); SoleAdmin when the
        account is the only admin of organizations with other members. A deletion already
        pending is answered again, unchanged (two requests racing: one schedules it)."""
        await confirm_password(
            self._db,
            self._hasher,
            self._audit,
            user,
            password,
            action=Action.USER_DELETION_REQUESTED,
            info=info,
            detail=BAD_PASSWORD,
        )
        return await self._schedule(user.id, "self", actor=Actor(user.id), info=info)

    async def schedule_inactive(self, user_id: uuid.UUID, inactive_days: int) -> bool:
        """Schedule the deletion of an account unused for ``inactive_days`` (the retention
        job, after its warning), exactly as if its owner had asked. False when it did not
        happen: gone, locked or leaving already, or the only admin of an organization with
        other members (it stays, and the job tries again next time)."""
        try:
            scheduled = await self._schedule(
                user_id, "inactivity", actor=SYSTEM, info=None, inactive_days=inactive_days
            )
        except (NotFound, SoleAdmin):
            return False
        return scheduled.new

    async def _schedule(
        self,
        user_id: uuid.UUID,
        origin: Origin,
        *,
        actor: Actor,
        info: RequestInfo | None,
        inactive_days: int = 0,
    ) -> Scheduled:
        now = utcnow()
        deletion_at = now + self._grace
        async with self._db.transaction() as conn:
            state = await deletion_rows.lock_account(conn, user_id)
            if state is None:
                raise NotFound()
            if state.deletion_at is not None:
                return Scheduled(state.deletion_at, new=False)
            if origin == "inactivity" and (state.deleted_at is not None or not state.is_active):
                raise NotFound()
            blockers = await deletion_rows.sole_admin_of(conn, user_id)
            if blockers:
                raise SoleAdmin(blockers)
            user = await user_rows.get_by_id(conn, self._envelope, user_id)
            locked = await self._lock(conn, user_id, now=now, deletion_at=deletion_at)
            emailed = False
            if self._grace > timedelta(0) and user is not None and user.email:
                await self._send_cancel_link(conn, user, now, deletion_at, inactive_days)
                emailed = True
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.USER_DELETION_REQUESTED,
                    actor=actor,
                    entity_type="user",
                    entity_id=user_id,
                    details={
                        "origin": origin,
                        "deletion_at": deletion_at.isoformat(),
                        "sessions_ended": len(locked.sessions),
                        "keys_revoked": locked.api_keys,
                        "links_voided": locked.links,
                        "emailed": emailed,
                    },
                ),
                info,
            )
        await self._after_lock(user_id, locked)
        log.info("user_deletion_requested", user_id=str(user_id), origin=origin)
        if self._grace <= timedelta(0):
            await self._erasure.erase(user_id, now=deletion_at, actor=actor, info=info)
        return Scheduled(deletion_at, new=True)

    async def _lock(
        self, conn: AsyncConnection, user_id: uuid.UUID, *, now: datetime, deletion_at: datetime
    ) -> _Locked:
        await deletion_rows.schedule(conn, user_id, now=now, deletion_at=deletion_at)
        ended = await session_rows.revoke_sessions(
            conn, user_id=user_id, now=now, reason="deletion_requested"
        )
        keys = await deletion_rows.revoke_api_keys(conn, user_id, now)
        links = await token_rows.void_unused(conn, user_id=user_id, purposes=_VOIDED, now=now)
        return _Locked(ended, keys, links)

    async def _after_lock(self, user_id: uuid.UUID, locked: _Locked) -> None:
        # After the commit: every worker drops its cached copy of the user (its status
        # changed) and refuses the revoked sessions' tokens from its next request on.
        await self._users_changed([user_id])
        await self._publish(locked.sessions)

    async def _send_cancel_link(
        self,
        conn: AsyncConnection,
        user: UserRecord,
        now: datetime,
        deletion_at: datetime,
        inactive_days: int,
    ) -> None:
        token = self._tokens.issue()
        # The link lives exactly as long as the grace period: once the erasure is due, there
        # is nothing left to cancel.
        await store_token(
            conn,
            self._tokens.envelope,
            user_id=user.id,
            purpose=CANCEL_PURPOSE,
            token=token,
            email=user.email,
            now=now,
            ttl=deletion_at - now,
        )
        await self._mailer.enqueue(
            conn,
            "deletion_scheduled",
            user.email,
            {
                "token": token.token,
                "deletion_date": mail_date(deletion_at),
                "inactive_days": inactive_days,
            },
        )

    async def cancel(self, token: str, info: RequestInfo | None = None) -> None:
        """Cancel a pending deletion with the emailed link (``POST
        /auth/me/deletion/cancel``): the account is unlocked and counts as used now; no
        session or API key comes back. EmailTokenUnusable (400) for an unknown, used or
        expired link, or one whose account was erased or unlocked meanwhile."""
        now = utcnow()
        async with self._db.transaction() as conn:
            # The account's row first, then the link's: the erasure locks in that order too
            # (the other way round, a cancel racing the purge could deadlock with it).
            found = await self._tokens.peek(conn, token, CANCEL_PURPOSE, now)
            if await deletion_rows.lock_account(conn, found.user_id) is None:
                raise EmailTokenUnusable()
            record = await self._tokens.consume(conn, token, CANCEL_PURPOSE, now)
            if record.user_id != found.user_id or not await deletion_rows.unschedule(
                conn, record.user_id, now
            ):
                raise EmailTokenUnusable()
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.USER_DELETION_CANCELLED,
                    actor=Actor(record.user_id),
                    entity_type="user",
                    entity_id=record.user_id,
                    details={"via": "link"},
                ),
                info,
            )
        await self._users_changed([record.user_id])
        log.info("user_deletion_cancelled", user_id=str(record.user_id))

    async def by_admin(
        self,
        principal: Principal,
        user_id: uuid.UUID,
        reason: str,
        info: RequestInfo | None = None,
    ) -> Erased | None:
        """A platform admin's deletion (the caller checks that it is one): audited as
        ``user.deleted`` with the admin's ``reason``, then erased at once (no grace: nobody
        but an admin could cancel it, and the owner is not asked). The owner is emailed a
        notice. NotFound for an unknown (or erased) account, Conflict for the admin's own,
        SoleAdmin as for any deletion (unless the account is already leaving)."""
        if user_id == principal.user.id:
            raise Conflict(SELF_DELETE)
        now = utcnow()
        async with self._db.transaction() as conn:
            state = await deletion_rows.lock_account(conn, user_id)
            if state is None:
                raise NotFound()
            if not state.pending:
                blockers = await deletion_rows.sole_admin_of(conn, user_id)
                if blockers:
                    raise SoleAdmin(blockers)
            user = await user_rows.get_by_id(conn, self._envelope, user_id)
            locked = await self._lock(conn, user_id, now=now, deletion_at=now)
            if user is not None and user.email:
                await self._mailer.enqueue(conn, "account_deleted", user.email, {})
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.USER_DELETED,
                    actor=Actor.of(principal),
                    entity_type="user",
                    entity_id=user_id,
                    details={
                        "reason": reason,
                        "sessions_ended": len(locked.sessions),
                        "keys_revoked": locked.api_keys,
                        "was_pending": state.pending,
                    },
                ),
                info,
            )
        await self._after_lock(user_id, locked)
        log.info("user_deleted_by_admin", user_id=str(user_id), admin_id=str(principal.user.id))
        return await self._erasure.erase(user_id, now=now, actor=Actor.of(principal), info=info)
