"""Queries on ``invitations``: an email address invited into an organization with a role.

An invitation is *pending* while it is neither accepted, declined nor revoked and has not
expired. Every state change here is one conditional ``UPDATE … WHERE <still pending>``: of
two concurrent accepts (or an accept racing a revoke) exactly one matches the row, so the
loser changes nothing and learns it from the row count.

Like ``memberships``, this table is part of the tenancy directory (read before the
invitee belongs to the organization): no row-level security; every query is keyed by the
organization the service verified or by the invitee's verified email key.

The invitee may have no account, so ``email`` is sealed with the master data-key ring (bound
to the invitation's row) and ``email_key`` holds the blind index of the folded address
(``db/sealed.py``). Records carry plaintext: the address, and its folded form as
``email_key`` (what accepting compares); look-ups match the index under every ring key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import sealed
from authkeep.db.models import Invitation, Organization, User, UserKey
from authkeep.security.emails import email_key as fold_email
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role

__all__ = [
    "InvitationRecord",
    "Invitee",
    "by_id",
    "by_token_hash",
    "decline",
    "for_email",
    "insert_invitation",
    "invitee",
    "mark_accepted",
    "pending_for_org",
    "revoke",
    "revoke_pending",
]


@dataclass(frozen=True, slots=True)
class InvitationRecord:
    """One invitation, with its organization's name (for the invitee's list). ``email_key``
    is the folded address (``""`` with ``email`` when the stored address cannot be read)."""

    id: uuid.UUID
    org_id: uuid.UUID
    org_name: str
    email: str
    email_key: str
    role: Role
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    declined_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        """``pending``, ``accepted``, ``declined``, ``revoked`` or ``expired``."""
        if self.accepted_at is not None:
            return "accepted"
        if self.declined_at is not None:
            return "declined"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "pending"


_COLUMNS = (
    Invitation.id,
    Invitation.organization_id,
    Organization.name,
    Invitation.email,
    Invitation.email_key,
    Invitation.role,
    Invitation.invited_by,
    Invitation.created_at,
    Invitation.expires_at,
    Invitation.accepted_at,
    Invitation.declined_at,
    Invitation.revoked_at,
)
_LIVE_ORG = Organization.deleted_at.is_(None)


def _pending(now: datetime) -> ColumnElement[bool]:
    return and_(
        Invitation.accepted_at.is_(None),
        Invitation.declined_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > now,
    )


def _record(envelope: Envelope, row: Row[Any]) -> InvitationRecord:
    values = list(row)
    email = sealed.open_master(envelope, "invitations", "email", values[0], values[3]) or ""
    values[3] = email
    values[4] = fold_email(email)
    values[5] = Role(values[5])
    return InvitationRecord(*values)


def _select() -> Any:
    return select(*_COLUMNS).join(Organization, Organization.id == Invitation.organization_id)


async def insert_invitation(
    conn: AsyncConnection,
    envelope: Envelope,
    *,
    org_id: uuid.UUID,
    email: str,
    email_key: str,
    role: Role,
    token_hash: str,
    invited_by: uuid.UUID,
    now: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    """Write a new pending invitation; its id. ``email`` is the stored form (sealed),
    ``email_key`` the folded one (stored as its blind index)."""
    invitation_id = uuid.uuid4()
    await conn.execute(
        insert(Invitation).values(
            id=invitation_id,
            organization_id=org_id,
            email=sealed.seal_master(envelope, "invitations", "email", invitation_id, email),
            email_key=envelope.blind_index(email_key),
            role=role.value,
            token_hash=token_hash,
            invited_by=invited_by,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return invitation_id


async def revoke_pending(
    conn: AsyncConnection, envelope: Envelope, org_id: uuid.UUID, email_key: str, now: datetime
) -> list[uuid.UUID]:
    """Revoke every pending invitation of ``email_key`` into ``org_id`` (a re-invite
    replaces them); their ids."""
    rows = await conn.execute(
        select(Invitation.id).where(
            Invitation.organization_id == org_id,
            Invitation.email_key.in_(envelope.blind_indexes(email_key)),
            _pending(now),
        )
    )
    ids = [row[0] for row in rows]
    if ids:
        await conn.execute(
            update(Invitation).where(Invitation.id.in_(ids), _pending(now)).values(revoked_at=now)
        )
    return ids


async def pending_for_org(
    conn: AsyncConnection, envelope: Envelope, org_id: uuid.UUID, now: datetime
) -> list[InvitationRecord]:
    """The pending invitations of a live organization, oldest first."""
    rows = await conn.execute(
        _select()
        .where(Invitation.organization_id == org_id, _LIVE_ORG, _pending(now))
        .order_by(Invitation.created_at, Invitation.id)
    )
    return [_record(envelope, row) for row in rows]


async def for_email(
    conn: AsyncConnection, envelope: Envelope, email_key: str, now: datetime
) -> list[InvitationRecord]:
    """The pending invitations of the folded address ``email_key`` into live
    organizations, oldest first."""
    rows = await conn.execute(
        _select()
        .where(
            Invitation.email_key.in_(envelope.blind_indexes(email_key)), _LIVE_ORG, _pending(now)
        )
        .order_by(Invitation.created_at, Invitation.id)
    )
    return [_record(envelope, row) for row in rows]


async def by_id(
    conn: AsyncConnection, envelope: Envelope, invitation_id: uuid.UUID
) -> InvitationRecord | None:
    """One invitation into a live organization, whatever its state."""
    row = (await conn.execute(_select().where(Invitation.id == invitation_id, _LIVE_ORG))).first()
    return _record(envelope, row) if row else None


async def by_token_hash(
    conn: AsyncConnection, envelope: Envelope, token_hash: str
) -> InvitationRecord | None:
    """The invitation whose link token hashes to ``token_hash`` (live organization)."""
    row = (
        await conn.execute(_select().where(Invitation.token_hash == token_hash, _LIVE_ORG))
    ).first()
    return _record(envelope, row) if row else None


async def _settle(
    conn: AsyncConnection, invitation_id: uuid.UUID, now: datetime, values: dict[str, Any]
) -> bool:
    result = await conn.execute(
        update(Invitation).where(Invitation.id == invitation_id, _pending(now)).values(**values)
    )
    return bool(result.rowcount)


async def mark_accepted(
    conn: AsyncConnection, invitation_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> bool:
    """Accept a pending invitation; False when it was no longer pending (another accept,
    a decline or a revoke got there first, or it expired)."""
    return await _settle(conn, invitation_id, now, {"accepted_at": now, "accepted_by": user_id})


async def decline(conn: AsyncConnection, invitation_id: uuid.UUID, now: datetime) -> bool:
    """Decline a pending invitation; False when it was no longer pending."""
    return await _settle(conn, invitation_id, now, {"declined_at": now})


async def revoke(
    conn: AsyncConnection, org_id: uuid.UUID, invitation_id: uuid.UUID, now: datetime
) -> bool:
    """Revoke a pending invitation of ``org_id``; False when there is none such."""
    result = await conn.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation_id,
            Invitation.organization_id == org_id,
            _pending(now),
        )
        .values(revoked_at=now)
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class Invitee:
    """What accepting checks about the signed-in user, read in the accepting transaction."""

    email_key: str
    email_verified: bool


async def invitee(conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID) -> Invitee | None:
    """The user's folded email and whether its address was proven; None for an account that
    cannot sign in (inactive or deleted) or whose address cannot be read."""
    row = (
        await conn.execute(
            select(User.email, User.email_verified_at, UserKey.wrapped_key)
            .outerjoin(UserKey, UserKey.user_id == User.id)
            .where(User.id == user_id, User.is_active.is_(True), User.deleted_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    aead = sealed.user_cipher(envelope, user_id, row[2])
    email = sealed.open_user(aead, "users", "email", user_id, row[0])
    return Invitee(fold_email(email), row[1] is not None) if email else None
