"""Queries on ``organizations`` and ``memberships``, and the active organization of a session.

These two tables are the tenancy *directory*: they are read before any organization is known
(the per-request role look-up, "my organizations", switching), so they carry no row-level
security; every query here is keyed by the organization and user the service verified.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import sealed
from authkeep.db.models import AuthSession, Membership, Organization, User, UserKey
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role, parse_role


@dataclass(frozen=True, slots=True)
class OrgRecord:
    """An organization and the role the asking user has in it; ``require_mfa``: whether its
    members need a second factor."""

    id: uuid.UUID
    name: str
    created_at: datetime
    role: Role
    require_mfa: bool = False


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One member of an organization."""

    user_id: uuid.UUID
    email: str
    full_name: str | None
    role: Role
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class ActiveOrg:
    """The organization a token is scoped to, with the member's current role."""

    org_id: uuid.UUID
    role: Role


class AlreadyMember(Exception):
    """The user already belongs to the organization."""


Origin = Literal["created", "invitation", "legacy"]
"""How a membership came to be: the user ``created`` the organization, accepted an
``invitation``, or was added directly before invitations existed (``legacy``, without
consent; migration 0008 keeps those)."""
CREATED: Origin = "created"
INVITATION: Origin = "invitation"
LANDING_ORIGINS: tuple[Origin, ...] = (CREATED, INVITATION)
"""The memberships a new session may start in: ones the user chose."""


_LIVE = Organization.deleted_at.is_(None)
_ORG_COLUMNS = (
    Organization.id,
    Organization.name,
    Organization.created_at,
    Membership.role,
    Organization.require_mfa,
)
_MEMBER_COLUMNS = (
    User.id,
    User.email,
    User.full_name,
    Membership.role,
    Membership.created_at,
    UserKey.wrapped_key,
)


def _org(row: Row[uuid.UUID, str, datetime, str, bool]) -> OrgRecord:
    org_id, name, created_at, role, require_mfa = row
    return OrgRecord(org_id, name, created_at, Role(role), bool(require_mfa))


def _member(envelope: Envelope, row: Row[Any]) -> MemberRecord:
    user_id, email, full_name, role, joined, wrapped = tuple(row)
    # Sealed with the member's key (db/users.py); "" / None when it cannot be read.
    aead = sealed.user_cipher(envelope, user_id, wrapped)
    return MemberRecord(
        user_id,
        sealed.open_user(aead, "users", "email", user_id, email) or "",
        sealed.open_user(aead, "users", "full_name", user_id, full_name),
        Role(role),
        joined,
    )


def _select_members() -> Select[*tuple[Any, ...]]:
    return (
        select(*_MEMBER_COLUMNS)
        .select_from(User)
        .join(Membership, Membership.user_id == User.id)
        .outerjoin(UserKey, UserKey.user_id == User.id)
    )


async def insert_org(
    conn: AsyncConnection, *, name: str, creator: uuid.UUID, now: datetime
) -> OrgRecord:
    """Create an organization with ``creator`` as its admin."""
    org_id = uuid.uuid4()
    await conn.execute(
        insert(Organization).values(
            id=org_id, name=name, created_by=creator, created_at=now, updated_at=now
        )
    )
    await insert_member(
        conn, org_id=org_id, user_id=creator, role=Role.ADMIN, now=now, origin=CREATED
    )
    return OrgRecord(org_id, name, now, Role.ADMIN)


async def orgs_of(conn: AsyncConnection, user_id: uuid.UUID) -> list[OrgRecord]:
    """The live organizations ``user_id`` belongs to, oldest membership first."""
    rows = await conn.execute(
        select(*_ORG_COLUMNS)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user_id, _LIVE)
        .order_by(Membership.created_at, Organization.id)
    )
    return [_org(row) for row in rows]


async def org_for_member(
    conn: AsyncConnection, org_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = False
) -> OrgRecord | None:
    """The live organization ``org_id`` if ``user_id`` is a member, else None.

    ``lock`` takes the organization row's lock (PostgreSQL ``FOR UPDATE``) until the
    transaction ends, which serialises every membership change of one organization: two
    admins demoting each other at the same moment cannot both see "another admin remains".
    It locks the caller's membership row too: PostgreSQL re-reads only *locked* rows after
    waiting, so without it the second admin would act on the role it had before the first
    one's change committed (a just-demoted admin still adding members or renaming).
    """
    stmt = (
        select(*_ORG_COLUMNS)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Organization.id == org_id, Membership.user_id == user_id, _LIVE)
    )
    if lock:
        stmt = stmt.with_for_update(of=(Organization, Membership))
    row = (await conn.execute(stmt)).first()
    return _org(row) if row else None


async def lock_org(conn: AsyncConnection, org_id: uuid.UUID) -> bool:
    """Take the live organization's row lock (PostgreSQL ``FOR UPDATE``) until the
    transaction ends, as every membership change does first; False when it is gone.

    Taking it *first* keeps one lock order (organization, then memberships and
    invitations): a membership insert otherwise takes a key-share lock on the organization
    only after locking an invitation, and deadlocks with an admin's revoke, which goes the
    other way round."""
    row = (
        await conn.execute(
            select(Organization.id).where(Organization.id == org_id, _LIVE).with_for_update()
        )
    ).first()
    return row is not None


async def rename_org(conn: AsyncConnection, org_id: uuid.UUID, name: str, now: datetime) -> None:
    """Change an organization's name."""
    await update_org(conn, org_id, now, name=name)


async def update_org(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    now: datetime,
    *,
    name: str | None = None,
    require_mfa: bool | None = None,
) -> None:
    """Change an organization's name and/or its MFA policy (None: unchanged)."""
    values: dict[str, object] = {"updated_at": now}
    if name is not None:
        values["name"] = name
    if require_mfa is not None:
        values["require_mfa"] = require_mfa
    await conn.execute(update(Organization).where(Organization.id == org_id).values(**values))


async def soft_delete_org(conn: AsyncConnection, org_id: uuid.UUID, now: datetime) -> int:
    """Mark an organization deleted and remove its memberships (every member loses access
    on their next request). Returns how many memberships were removed."""
    await conn.execute(
        update(Organization)
        .where(Organization.id == org_id, _LIVE)
        .values(deleted_at=now, updated_at=now)
    )
    result = await conn.execute(delete(Membership).where(Membership.organization_id == org_id))
    return int(result.rowcount)


async def insert_member(
    conn: AsyncConnection,
    *,
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    role: Role,
    now: datetime,
    origin: Origin,
) -> None:
    """Add a member; :class:`AlreadyMember` if they belong already. ``origin`` records how
    they came in (it decides whether a login may start in this organization)."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(Membership).values(
                    user_id=user_id,
                    organization_id=org_id,
                    role=role.value,
                    created_at=now,
                    updated_at=now,
                    origin=origin,
                )
            )
    except IntegrityError:
        raise AlreadyMember() from None


async def members(
    conn: AsyncConnection, envelope: Envelope, org_id: uuid.UUID
) -> list[MemberRecord]:
    """Every member of an organization, oldest first."""
    rows = await conn.execute(
        _select_members()
        .where(Membership.organization_id == org_id)
        .order_by(Membership.created_at, User.id)
    )
    return [_member(envelope, row) for row in rows]


async def member_ids(conn: AsyncConnection, org_id: uuid.UUID) -> list[uuid.UUID]:
    """The user ids of an organization's members (nothing to decrypt)."""
    rows = await conn.execute(
        select(Membership.user_id).where(Membership.organization_id == org_id)
    )
    return list(rows.scalars())


async def member(
    conn: AsyncConnection, envelope: Envelope, org_id: uuid.UUID, user_id: uuid.UUID
) -> MemberRecord | None:
    """One member of an organization."""
    row = (
        await conn.execute(
            _select_members().where(
                Membership.organization_id == org_id, Membership.user_id == user_id
            )
        )
    ).first()
    return _member(envelope, row) if row else None


async def has_member_with_email(
    conn: AsyncConnection, envelope: Envelope, org_id: uuid.UUID, email_key: str
) -> bool:
    """Whether the account with the folded email ``email_key`` is a member of ``org_id``
    (matched by blind index under every ring key)."""
    row = (
        await conn.execute(
            select(Membership.user_id)
            .join(User, User.id == Membership.user_id)
            .where(
                Membership.organization_id == org_id,
                User.email_key.in_(envelope.blind_indexes(email_key)),
            )
        )
    ).first()
    return row is not None


async def count_admins(conn: AsyncConnection, org_id: uuid.UUID) -> int:
    """How many admins an organization has."""
    return int(
        (
            await conn.execute(
                select(func.count()).where(
                    Membership.organization_id == org_id, Membership.role == Role.ADMIN.value
                )
            )
        ).scalar_one()
    )


async def set_role(
    conn: AsyncConnection, org_id: uuid.UUID, user_id: uuid.UUID, role: Role, now: datetime
) -> None:
    """Change a member's role."""
    await conn.execute(
        update(Membership)
        .where(Membership.organization_id == org_id, Membership.user_id == user_id)
        .values(role=role.value, updated_at=now)
    )


async def remove_member(conn: AsyncConnection, org_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Remove a member; whether there was one."""
    result = await conn.execute(
        delete(Membership).where(
            Membership.organization_id == org_id, Membership.user_id == user_id
        )
    )
    return bool(result.rowcount)


def _default_org_query(user_id: ColumnElement[Any]) -> Select[uuid.UUID, str]:
    return (
        select(Membership.organization_id, Membership.role)
        .join(Organization, Organization.id == Membership.organization_id)
        .where(
            Membership.user_id == user_id,
            # A session never starts in an organization the user did not create or accept:
            # a membership someone else made (legacy direct adds) would otherwise be where an
            # embedding app stores the new user's data, in the adder's tenant.
            Membership.origin.in_(LANDING_ORIGINS),
            _LIVE,
        )
        .order_by(Membership.created_at, Membership.organization_id)
        .limit(1)
    )


# Built once: every login runs it.
_DEFAULT_ORG = _default_org_query(bindparam("user_id"))


def default_org_sql(user_param: str) -> str:
    """PostgreSQL text of :func:`default_org`'s query (columns ``organization_id``,
    ``role``), the user's id read from the placeholder ``user_param`` (``$2``): for a
    statement that embeds it (:func:`authkeep.db.sessions.open_session`). The same query
    object as :func:`default_org`'s, so the two cannot pick different organizations."""
    query = _default_org_query(literal_column(user_param))
    # Literal binds: the origins and the limit are constants of the code, not input.
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def active_org(row: Sequence[Any] | None) -> ActiveOrg | None:
    """The :class:`ActiveOrg` of a default-organization row (organization id, role); None
    without a row or with a role authkeep does not know."""
    role = parse_role(row[1]) if row else None
    return ActiveOrg(row[0], role) if row and role else None


async def default_org(conn: AsyncConnection, user_id: uuid.UUID) -> ActiveOrg | None:
    """The organization a new session starts in: the user's oldest membership that they
    created or accepted (``legacy`` ones are reachable by switching, never by default)."""
    return active_org((await conn.execute(_DEFAULT_ORG, {"user_id": user_id})).first())


async def session_org(conn: AsyncConnection, session_id: uuid.UUID) -> ActiveOrg | None:
    """The session's active organization and the user's current role in it; None when the
    session has none or the user is no longer a member (a token then carries no org)."""
    row = (
        await conn.execute(
            select(AuthSession.org_id, Membership.role)
            .join(
                Membership,
                and_(
                    Membership.user_id == AuthSession.user_id,
                    Membership.organization_id == AuthSession.org_id,
                ),
            )
            .where(AuthSession.id == session_id)
        )
    ).first()
    if row is None or row[0] is None:
        return None
    role = parse_role(row[1])
    return ActiveOrg(row[0], role) if role else None


async def set_session_org(
    conn: AsyncConnection,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    org_id: uuid.UUID,
    *,
    now: datetime,
    idle_timeout: timedelta,
) -> bool:
    """Make ``org_id`` the live session's active organization; False if the session is not
    the user's or not live (revoked, past its absolute expiry, or idle for
    ``idle_timeout``)."""
    result = await conn.execute(
        update(AuthSession)
        .where(
            AuthSession.id == session_id,
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
            AuthSession.last_used_at > now - idle_timeout,
        )
        .values(org_id=org_id)
    )
    return bool(result.rowcount)
