"""Accounts: register, check credentials, change password, deactivate and delete."""

from __future__ import annotations

import uuid

import structlog

from authkeep import metrics
from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import Conflict, InvalidCredentials, NotFound, PolicyViolation
from authkeep.security.emails import (
    InvalidEmail,
    email_key,
    login_key,
    normalize_email,
)
from authkeep.security.envelope import Envelope
from authkeep.security.password_policy import Assessment, PasswordPolicy, PasswordRejected
from authkeep.security.passwords import PasswordHasher
from authkeep.services.audit import SYSTEM, Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.accounts")

DELETED_CANNOT_BE_ACTIVATED = "A deleted account cannot be reactivated"


class FieldError(PolicyViolation):
    """A rule broken by one submitted field; ``field`` names it for a 422 body, and
    ``location`` where it was sent (``body``, ``query``)."""

    def __init__(self, field: str, detail: str, *, location: str = "body") -> None:
        super().__init__(detail)
        self.field = field
        self.location = location


def valid_email(raw: str) -> str:
    """The stored form of ``raw``, or a FieldError that does not repeat it."""
    try:
        return normalize_email(raw)
    except InvalidEmail as exc:
        raise FieldError("email", str(exc)) from None


async def confirm_password(
    db: Database,
    hasher: PasswordHasher,
    audit: AuditLog,
    user: UserRecord,
    password: str,
    *,
    action: Action,
    info: RequestInfo | None,
    field: str = "password",
    detail: str = "Password is incorrect",
    reason: str = "bad_password",
) -> None:
    """Check the signed-in ``user``'s own ``password`` before a sensitive change: a stolen
    access token is not enough to take the account over or destroy it, and the attempt is
    worth seeing — a wrong one is audited as a failed ``action`` and refused with
    :class:`FieldError` on ``field``."""
    async with db.reading() as conn:
        stored_hash = await user_rows.get_password_hash(conn, user.id)
    if (await hasher.verify(password, stored_hash)).ok:
        return
    await audit.record_alone(
        AuditEvent(
            action,
            "failure",
            actor=Actor(user.id),
            entity_type="user",
            entity_id=user.id,
            details={"reason": reason},
        ),
        info,
    )
    raise FieldError(field, detail)


class Accounts:
    """Use cases on accounts. ``publish`` spreads session revocations to every worker;
    ``users_changed`` invalidates every worker's cached copy of a user whose status changed;
    ``audit`` records each change in the change's own transaction; ``password_policy``
    judges new passwords (off the event loop; one is made when none is given, and
    :meth:`close` stops it); ``envelope`` seals and opens the accounts' personal data."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        publish: Publish,
        audit: AuditLog | None = None,
        *,
        users_changed: Publish,
        envelope: Envelope,
        password_policy: PasswordPolicy | None = None,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._hasher = hasher
        self._policy = password_policy if password_policy is not None else PasswordPolicy()
        self._publish = publish
        self._users_changed = users_changed
        self._audit = audit if audit is not None else AuditLog(db)

    def close(self) -> None:
        """Stop the password policy's worker thread."""
        self._policy.close()

    async def valid_password(
        self,
        password: str,
        *,
        email: str | None,
        full_name: str | None = None,
        field: str = "password",
    ) -> None:
        """Apply the password policy, as a FieldError on ``field`` whose detail says what
        to do (and never repeats the password)."""
        try:
            await self._policy.check(password, email=email, full_name=full_name)
        except PasswordRejected as exc:
            raise FieldError(field, str(exc)) from None

    async def password_strength(
        self, password: str, *, email: str | None = None, full_name: str | None = None
    ) -> Assessment:
        """How a sign-up page's candidate password fares against the policy (for a meter;
        nothing is stored or logged)."""
        return await self._policy.assess(password, email=email, full_name=full_name)

    async def register(
        self,
        *,
        email: str,
        password: str,
        full_name: str | None = None,
        is_superuser: bool = False,
        email_verified: bool = False,
        info: RequestInfo | None = None,
        actor: Actor | None = None,
    ) -> UserRecord:
        """Create an account; Conflict when the email is taken (in any letter case). For
        operators (``create-admin``, ``seed-demo``): the public sign-up, which must not tell
        a taken address from a new one, is :class:`authkeep.services.email_flows.SignUp`.

        ``actor`` defaults to the new user; ``email_verified`` marks the address as proven
        (an operator vouches for it)."""
        stored = valid_email(email)
        await self.valid_password(password, email=stored, full_name=full_name)
        hashed = await self._hasher.hash(password)
        try:
            async with self._db.transaction() as conn:
                user = await user_rows.insert_user(
                    conn,
                    self._envelope,
                    email=stored,
                    email_key=email_key(stored),
                    hashed_password=hashed,
                    full_name=full_name,
                    is_superuser=is_superuser,
                    email_verified=email_verified,
                )
                await self._audit.record(
                    conn,
                    AuditEvent(
                        Action.USER_REGISTERED,
                        actor=actor if actor is not None else Actor(user.id),
                        entity_type="user",
                        entity_id=user.id,
                        details={"is_superuser": True} if is_superuser else {},
                    ),
                    info,
                )
        except user_rows.EmailTaken:
            raise Conflict("Email already registered") from None
        log.info("user_registered", user_id=str(user.id))
        return user

    async def check_credentials(
        self, email: str, password: str, info: RequestInfo | None = None
    ) -> UserRecord:
        """The user these credentials belong to, or InvalidCredentials.

        Unknown, wrong-password, inactive and deleted accounts fail alike, after the same
        work (one hash verification and one audit row), so neither the answer nor its timing
        tells them apart; the reason is kept in the audit row, never sent to the client.
        A correct password on a legacy or outdated hash is re-hashed and stored.
        """
        async with self._db.reading() as conn:
            key = login_key(email)
            found = (
                await user_rows.get_credentials(conn, self._envelope, key)
                if key is not None
                else None
            )
        user, stored_hash = found if found else (None, None)
        result = await self._hasher.verify(password, stored_hash)
        if user is None or not result.ok or not user.can_sign_in:
            reason = (
                "unknown_email"
                if user is None
                else "bad_password"
                if not result.ok
                else "deleted"
                if user.deleted_at
                else "inactive"
            )
            log.info("login_failed", reason=reason, user_id=str(user.id) if user else None)
            metrics.LOGINS.labels("failure").inc()
            await self._audit.record_alone(
                AuditEvent(
                    Action.LOGIN,
                    "failure",
                    actor=Actor(user.id) if user else SYSTEM,
                    entity_type="user" if user else None,
                    entity_id=user.id if user else None,
                    details={"reason": reason},
                ),
                info,
            )
            raise InvalidCredentials()
        if result.new_hash is not None:
            async with self._db.transaction() as conn:
                await user_rows.set_password_hash(conn, user.id, result.new_hash)
            log.info("password_hash_upgraded", user_id=str(user.id))
        return user

    async def change_password(
        self,
        user: UserRecord,
        *,
        current_password: str,
        new_password: str,
        keep_session: uuid.UUID | None,
        info: RequestInfo | None = None,
    ) -> None:
        """Replace the password and end every session but ``keep_session``."""
        await confirm_password(
            self._db,
            self._hasher,
            self._audit,
            user,
            current_password,
            action=Action.PASSWORD_CHANGED,
            info=info,
            field="current_password",
            detail="Current password is incorrect",
            reason="bad_current_password",
        )
        await self.valid_password(
            new_password, email=user.email, full_name=user.full_name, field="new_password"
        )
        if current_password == new_password:
            raise FieldError("new_password", "New password must differ from the current one")
        hashed = await self._hasher.hash(new_password)
        async with self._db.transaction() as conn:
            await user_rows.set_password_hash(conn, user.id, hashed)
            ended = await session_rows.revoke_sessions(
                conn, user_id=user.id, now=utcnow(), reason="password_changed", keep=keep_session
            )
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.PASSWORD_CHANGED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                    details={"sessions_ended": len(ended)},
                ),
                info,
            )
        await self._publish(ended)
        log.info("password_changed", user_id=str(user.id), sessions_ended=len(ended))

    async def set_active(
        self,
        user_id: uuid.UUID,
        active: bool,
        *,
        actor: Actor = SYSTEM,
        info: RequestInfo | None = None,
    ) -> UserRecord:
        """Activate or deactivate a user; deactivation ends every session at once.
        ``actor`` is the admin doing it (recorded in the audit log). Conflict when
        activating a deleted user."""
        return await self._change_status(
            user_id,
            is_active=active,
            reason="deactivated",
            action=Action.USER_ACTIVATED if active else Action.USER_DEACTIVATED,
            actor=actor,
            info=info,
        )

    async def soft_delete(
        self, user_id: uuid.UUID, *, actor: Actor = SYSTEM, info: RequestInfo | None = None
    ) -> UserRecord:
        """Mark a user deleted (the row stays) and end every session at once. Deleting a
        deleted user changes and records nothing. The account is never erased this way:
        deletions that erase are :class:`authkeep.services.privacy.deletion.AccountDeletion`'s
        (the routes use it)."""
        return await self._change_status(
            user_id,
            is_active=False,
            deleted=True,
            reason="deleted",
            action=Action.USER_DELETED,
            actor=actor,
            info=info,
        )

    async def _change_status(
        self,
        user_id: uuid.UUID,
        *,
        is_active: bool,
        reason: str,
        action: Action,
        actor: Actor,
        info: RequestInfo | None,
        deleted: bool = False,
    ) -> UserRecord:
        now = utcnow()
        async with self._db.transaction() as conn:
            user = await user_rows.get_by_id(conn, self._envelope, user_id)
            if user is None:
                raise NotFound()
            if user.deleted_at is not None:
                if deleted:
                    # Already deleted: nothing changes, so nothing is recorded again (a
                    # second "user.deleted" row would misdate the deletion).
                    return user
                if is_active:
                    # "Active" but deleted could still not sign in; saying it worked would
                    # mislead the admin. Undeleting is not offered.
                    raise Conflict(DELETED_CANNOT_BE_ACTIVATED)
            values: dict[str, object] = {"is_active": is_active}
            if deleted and user.deleted_at is None:
                values["deleted_at"] = now
            await user_rows.update_user(conn, user_id, **values)
            ended: list[uuid.UUID] = []
            if not is_active:
                ended = await session_rows.revoke_sessions(
                    conn, user_id=user_id, now=now, reason=reason
                )
            updated = await user_rows.get_by_id(conn, self._envelope, user_id)
            if updated is None:
                raise NotFound()
            await self._audit.record(
                conn,
                AuditEvent(
                    action,
                    actor=actor,
                    entity_type="user",
                    entity_id=user_id,
                    details={"sessions_ended": len(ended)},
                ),
                info,
            )
        await self._users_changed([user_id])
        await self._publish(ended)
        log.info("user_status_changed", user_id=str(user_id), active=is_active, deleted=deleted)
        return updated
