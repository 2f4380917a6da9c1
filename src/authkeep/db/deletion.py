"""Queries of account deletion: lock an account for deletion, find what stands in the way,
schedule and cancel, and remove an erased account's rows (``services/privacy``).

An account pending deletion has ``deleted_at`` (it is locked: it cannot sign in, and every
token of it is refused) and ``deletion_at`` (when the purge erases it). The erasure deletes
the rows that are the account's data; the database's foreign keys do the rest: API keys
cascade with their creator (``api_keys`` is under row-level security, which a cascade is
not), organizations, invitations and webhook endpoints the account made keep existing with
NULL in their ``created_by``/``invited_by``/``accepted_by``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Exists, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from authkeep.db.engine import ORG_SETTING, set_local
from authkeep.db.models import (
    AccountToken,
    ApiKey,
    AuthSession,
    Consent,
    Invitation,
    Membership,
    MfaLoginChallenge,
    Organization,
    RecoveryCode,
    RefreshToken,
    TotpFactor,
    User,
    WebAuthnChallenge,
    WebAuthnCredential,
)
from authkeep.security.permissions import Role


@dataclass(frozen=True, slots=True)
class AccountState:
    """What deciding on a deletion needs to know about an account."""

    user_id: uuid.UUID
    email_key: str
    is_active: bool
    deleted_at: datetime | None
    deletion_at: datetime | None

    @property
    def pending(self) -> bool:
        """A deletion is scheduled (the account is locked until it is erased or cancelled)."""
        return self.deletion_at is not None


_STATE = (User.id, User.email_key, User.is_active, User.deleted_at, User.deletion_at)


async def lock_account(conn: AsyncConnection, user_id: uuid.UUID) -> AccountState | None:
    """The account's deletion state, its row locked until the transaction ends (PostgreSQL
    ``FOR UPDATE``; SQLite's write transaction is exclusive already): two deletions, or a
    deletion and a cancellation, of one account run one after the other."""
    row = (await conn.execute(select(*_STATE).where(User.id == user_id).with_for_update())).first()
    return AccountState(*row) if row else None


async def lock_due(conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> AccountState | None:
    """The account, locked, if its erasure is due at ``now``; None otherwise (erased
    meanwhile, or the deletion was cancelled: the lock waits for that change, then the
    condition is evaluated again on the new row)."""
    row = (
        await conn.execute(
            select(*_STATE)
            .where(User.id == user_id, User.deletion_at.is_not(None), User.deletion_at <= now)
            .with_for_update()
        )
    ).first()
    return AccountState(*row) if row else None


async def due(conn: AsyncConnection, now: datetime, *, limit: int) -> list[uuid.UUID]:
    """Accounts whose erasure is due at ``now``, oldest deadline first."""
    rows = await conn.execute(
        select(User.id)
        .where(User.deletion_at.is_not(None), User.deletion_at <= now)
        .order_by(User.deletion_at, User.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def count_due(conn: AsyncConnection, now: datetime) -> int:
    """How many erasures are due at ``now``."""
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(User)
                .where(User.deletion_at.is_not(None), User.deletion_at <= now)
            )
        ).scalar_one()
    )


async def sole_admin_of(conn: AsyncConnection, user_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """The live organizations in which ``user_id`` is the only admin and which have other
    members: deleting the account would leave them with nobody to manage them. Members
    whose own deletion is pending count for neither (they are leaving too). The
    organizations' rows are locked first (the lock order of every membership change), so a
    concurrent demotion or departure cannot slip between this check and the deletion."""
    admin_of = list(
        (
            await conn.execute(
                select(Membership.organization_id)
                .join(Organization, Organization.id == Membership.organization_id)
                .where(
                    Membership.user_id == user_id,
                    Membership.role == Role.ADMIN.value,
                    Organization.deleted_at.is_(None),
                )
                .order_by(Membership.organization_id)
            )
        ).scalars()
    )
    if not admin_of:
        return []
    await conn.execute(
        select(Organization.id)
        .where(Organization.id.in_(admin_of))
        .order_by(Organization.id)
        .with_for_update()
    )
    other, other_user = aliased(Membership), aliased(User)

    def others(*conditions: ColumnElement[bool]) -> Exists:
        return exists(
            select(other.user_id)
            .join(other_user, other_user.id == other.user_id)
            .where(
                other.organization_id == Organization.id,
                other.user_id != user_id,
                other_user.deleted_at.is_(None),
                *conditions,
            )
        )

    rows = await conn.execute(
        select(Organization.id, Organization.name)
        .where(
            Organization.id.in_(admin_of),
            ~others(other.role == Role.ADMIN.value),
            others(),
        )
        .order_by(Organization.name, Organization.id)
    )
    return [(row[0], str(row[1])) for row in rows]


async def schedule(
    conn: AsyncConnection, user_id: uuid.UUID, *, now: datetime, deletion_at: datetime
) -> None:
    """Lock the account (``deleted_at``, kept if set already) and set its erasure time."""
    await conn.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            deleted_at=func.coalesce(User.deleted_at, now), deletion_at=deletion_at, updated_at=now
        )
    )


async def unschedule(conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> bool:
    """Cancel a pending deletion that is not yet due: the account is unlocked and counts as
    used now (the cancellation is its owner's doing). Whether there was one to cancel."""
    result = await conn.execute(
        update(User)
        .where(User.id == user_id, User.deletion_at.is_not(None), User.deletion_at > now)
        .values(
            deleted_at=None,
            deletion_at=None,
            last_active_at=now,
            inactivity_warned_at=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def revoke_api_keys(conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> int:
    """Revoke the live API keys ``user_id`` created in the organizations they belong to (a
    key in any other one is refused already: its creator has no role there). ``api_keys``
    is a tenant table: each organization is bound in turn, within the caller's transaction,
    and the binding is cleared at the end."""
    orgs = list(
        (
            await conn.execute(
                select(Membership.organization_id)
                .where(Membership.user_id == user_id)
                .order_by(Membership.organization_id)
            )
        ).scalars()
    )
    revoked = 0
    for org_id in orgs:
        await set_local(conn, ORG_SETTING, str(org_id))
        result = await conn.execute(
            update(ApiKey)
            .where(
                ApiKey.organization_id == org_id,
                ApiKey.created_by == user_id,
                ApiKey.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        revoked += int(result.rowcount or 0)
    if orgs:
        await set_local(conn, ORG_SETTING, "")
    return revoked


async def memberships(conn: AsyncConnection, user_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """``(organization id, role)`` of each of the account's memberships."""
    rows = await conn.execute(
        select(Membership.organization_id, Membership.role)
        .where(Membership.user_id == user_id)
        .order_by(Membership.organization_id)
    )
    return [(row[0], str(row[1])) for row in rows]


async def orgs_without_admin(
    conn: AsyncConnection, org_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """Those of ``org_ids`` that are live, have members and no admin left."""
    if not org_ids:
        return []
    admins = exists(
        select(Membership.user_id).where(
            Membership.organization_id == Organization.id, Membership.role == Role.ADMIN.value
        )
    )
    members = exists(
        select(Membership.user_id).where(Membership.organization_id == Organization.id)
    )
    rows = await conn.execute(
        select(Organization.id)
        .where(Organization.id.in_(org_ids), Organization.deleted_at.is_(None), members, ~admins)
        .order_by(Organization.id)
    )
    return list(rows.scalars())


# The account's own rows, children first. ``api_keys`` goes by cascade with the user row.
_ACCOUNT_TABLES = (
    RefreshToken,
    AuthSession,
    Membership,
    AccountToken,
    RecoveryCode,
    TotpFactor,
    MfaLoginChallenge,
    WebAuthnCredential,
    WebAuthnChallenge,
    Consent,
)


async def remove_account(
    conn: AsyncConnection, user_id: uuid.UUID, *, email_indexes: Sequence[str]
) -> dict[str, int]:
    """Delete every row that is the account's data, then the account itself; returns how
    many rows went per table (API keys, under row-level security, go by cascade and are not
    counted). ``email_indexes`` are the stored forms of the account's address under which
    invitations name it: those invitations go too (whatever their state), with the ones the
    account accepted."""
    removed: dict[str, int] = {}
    for table in _ACCOUNT_TABLES:
        column = table.user_id
        result = await conn.execute(delete(table).where(column == user_id))
        removed[table.__tablename__] = int(result.rowcount or 0)
    invited = Invitation.accepted_by == user_id
    if email_indexes:
        invited = or_(invited, Invitation.email_key.in_(list(email_indexes)))
    result = await conn.execute(delete(Invitation).where(invited))
    removed["invitations"] = int(result.rowcount or 0)
    result = await conn.execute(delete(User).where(User.id == user_id))
    removed["users"] = int(result.rowcount or 0)
    return {table: count for table, count in removed.items() if count}
