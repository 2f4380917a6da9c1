"""Platform administration (``is_superuser``): find, activate, deactivate and delete users,
and reset a user's second factors.

Platform admins manage accounts, not tenants: being one grants no access to any
organization's data (that takes a membership, like anyone else). An admin cannot deactivate
or delete their own account here (Conflict): the last platform admin locking themselves out
would need a database session to undo. Each change is audited by
:class:`~authkeep.services.accounts.Accounts` (a deletion, which takes a reason and erases
the account at once, by :class:`~authkeep.services.privacy.deletion.AccountDeletion`) in the
change's transaction, with the admin as the actor.

An MFA reset (a user who lost their authenticator and their recovery codes) removes every
factor and pending MFA challenge of the user, ends their sessions at once (a session elevated
with a lost, maybe stolen, device must not outlive the reset), emails them through the outbox
and records the admin's reason, all in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from authkeep.db import factors as factor_rows
from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import Conflict, NotFound, PermissionDenied
from authkeep.security.emails import InvalidEmail, email_key, normalize_email
from authkeep.security.envelope import Envelope
from authkeep.services.accounts import Accounts, FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.authn import Principal
from authkeep.services.context import RequestInfo
from authkeep.services.mail import Mailer
from authkeep.services.privacy.deletion import AccountDeletion
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.platform_admin")

MFA_RESET_TEMPLATE = "mfa_reset"

MAX_PAGE = 100
SELF_CHANGE = "Platform admins cannot deactivate or delete their own account"


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of a user search."""

    items: list[UserRecord]
    total: int
    offset: int
    limit: int


def require_superuser(principal: Principal) -> None:
    """PermissionDenied unless a platform admin acts through a user session."""
    if principal.is_api_key or not principal.user.is_superuser:
        raise PermissionDenied("Platform admins only", entity_type="admin")


SEARCH_TERMS = (
    "q must be an exact email address or a user id: addresses and names are stored "
    "encrypted, so a part of one matches nothing"
)


def search_terms(query: str | None) -> tuple[str | None, uuid.UUID | None]:
    """What a user search looks for: (folded email, id); (None, None) for every user.
    A FieldError on ``q`` for a query that is neither an address nor an id."""
    if query is None or not query.strip():
        return None, None
    try:
        return None, uuid.UUID(query.strip())
    except ValueError:
        pass
    try:
        return email_key(normalize_email(query)), None
    except InvalidEmail:
        raise FieldError("q", SEARCH_TERMS, location="query") from None


async def _nothing(_ids: Iterable[uuid.UUID]) -> None:
    return None


class PlatformAdmin:
    """Use cases of the platform admin routes. ``mailer`` sends the MFA-reset notice;
    ``publish`` spreads session revocations and ``users_changed`` drops cached copies of a
    user, in every worker."""

    def __init__(
        self,
        db: Database,
        accounts: Accounts,
        *,
        audit: AuditLog | None = None,
        mailer: Mailer | None = None,
        publish: Publish = _nothing,
        users_changed: Publish = _nothing,
        envelope: Envelope,
        deletion: AccountDeletion | None = None,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._deletion = deletion
        self._accounts = accounts
        self._audit = audit if audit is not None else AuditLog(db)
        self._mailer = mailer
        self._publish = publish
        self._users_changed = users_changed

    async def search(
        self, principal: Principal, *, query: str | None, offset: int = 0, limit: int = 50
    ) -> UserPage:
        """Every user, or the one whose address is exactly ``query`` (in any letter case) or
        whose id it is; newest first. Addresses and names are stored encrypted, so nothing
        matches a part of them: any other ``query`` is a FieldError on ``q``."""
        require_superuser(principal)
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        email_key, user_id = search_terms(query)
        async with self._db.read_transaction() as conn:
            items, total = await user_rows.search(
                conn,
                self._envelope,
                email_key=email_key,
                user_id=user_id,
                offset=offset,
                limit=limit,
            )
        return UserPage(items, total, offset, limit)

    async def set_active(
        self,
        principal: Principal,
        user_id: uuid.UUID,
        active: bool,
        info: RequestInfo | None = None,
    ) -> UserRecord:
        """Activate or deactivate a user; deactivation ends their sessions at once."""
        require_superuser(principal)
        if user_id == principal.user.id and not active:
            raise Conflict(SELF_CHANGE)
        return await self._accounts.set_active(
            user_id, active, actor=Actor.of(principal), info=info
        )

    async def delete(
        self,
        principal: Principal,
        user_id: uuid.UUID,
        reason: str,
        info: RequestInfo | None = None,
    ) -> None:
        """Delete a user for ``reason`` (audited): locked at once, then erased at once
        (:meth:`AccountDeletion.by_admin`, docs/privacy.md). NotFound for an unknown or
        erased user; SoleAdmin for the only admin of organizations with other members."""
        require_superuser(principal)
        if user_id == principal.user.id:
            raise Conflict(SELF_CHANGE)
        if self._deletion is None:
            raise RuntimeError("PlatformAdmin was built without the deletion service")
        await self._deletion.by_admin(principal, user_id, reason, info)

    async def reset_mfa(
        self,
        principal: Principal,
        user_id: uuid.UUID,
        reason: str,
        info: RequestInfo | None = None,
    ) -> factor_rows.FactorsRemoved:
        """Remove every second factor of ``user_id`` (TOTP, recovery codes, passkeys, pending
        MFA challenges), end their sessions, email them and audit it with ``reason``; one
        transaction. NotFound for an unknown user."""
        require_superuser(principal)
        now = utcnow()
        async with self._db.transaction() as conn:
            user = await user_rows.get_by_id(conn, self._envelope, user_id)
            if user is None:
                raise NotFound()
            removed = await factor_rows.delete_all_factors(conn, user_id)
            await user_rows.refresh_mfa_enabled(conn, user_id)
            ended = await session_rows.revoke_sessions(
                conn, user_id=user_id, now=now, reason="mfa_reset"
            )
            if self._mailer is not None and user.deleted_at is None:
                await self._mailer.enqueue(conn, MFA_RESET_TEMPLATE, user.email, {})
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.MFA_RESET,
                    actor=Actor.of(principal),
                    entity_type="user",
                    entity_id=user_id,
                    details={
                        "reason": reason,
                        "removed": removed.as_details(),
                        "sessions_ended": len(ended),
                    },
                ),
                info,
            )
        await self._users_changed([user_id])
        await self._publish(ended)
        log.info(
            "mfa_reset",
            user_id=str(user_id),
            admin_id=str(principal.user.id),
            sessions_ended=len(ended),
        )
        return removed
