"""Queries on ``users``. Core statements on the ORM tables: no identity map, no lazy loads."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.base import utcnow
from authkeep.db.models import Membership, Organization, TotpFactor, User, WebAuthnCredential


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as the rest of authkeep sees it: never with its password hash."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    deleted_at: datetime | None
    email_verified_at: datetime | None = None
    """When the owner proved the address (a link sent to it was opened); None: never."""
    mfa_enabled: bool = False
    """Whether the user has a second factor (a confirmed TOTP factor or a passkey)."""

    @property
    def can_sign_in(self) -> bool:
        """Active and not deleted."""
        return self.is_active and self.deleted_at is None

    @property
    def email_verified(self) -> bool:
        """Whether the owner proved the current address."""
        return self.email_verified_at is not None


# The columns of a UserRecord, in its field order (other queries join them in).
USER_COLUMNS = (
    User.id,
    User.email,
    User.full_name,
    User.is_active,
    User.is_superuser,
    User.created_at,
    User.deleted_at,
    User.email_verified_at,
    User.mfa_enabled,
)
_COLUMNS = USER_COLUMNS


class EmailTaken(Exception):
    """The folded email already belongs to an account."""


def _record(row: object) -> UserRecord:
    return UserRecord(*row)  # type: ignore[misc]


async def get_by_id(conn: AsyncConnection, user_id: uuid.UUID) -> UserRecord | None:
    """The user with this id, deleted or not."""
    row = (await conn.execute(select(*_COLUMNS).where(User.id == user_id))).first()
    return _record(row) if row else None


async def get_with_role(
    conn: AsyncConnection, user_id: uuid.UUID, org_id: uuid.UUID | None
) -> tuple[UserRecord, str | None, bool] | None:
    """The user, their CURRENT role in ``org_id`` (None if not a member) and whether that
    organization requires a second factor, in one query on primary keys: the per-request
    path, so a role change, a removal or a new MFA policy takes effect on the member's next
    request instead of when their token expires."""
    if org_id is None:
        user = await get_by_id(conn, user_id)
        return (user, None, False) if user else None
    row = (
        await conn.execute(
            select(*_COLUMNS, Membership.role, Organization.require_mfa)
            .outerjoin(
                Membership,
                and_(Membership.user_id == User.id, Membership.organization_id == org_id),
            )
            .outerjoin(Organization, Organization.id == Membership.organization_id)
            .where(User.id == user_id)
        )
    ).first()
    if row is None:
        return None
    role = row[-2]
    return _record(row[:-2]), None if role is None else str(role), bool(row[-1])


# Built once: every login runs it, and building a statement costs more than running it.
_CREDENTIALS = select(*_COLUMNS, User.hashed_password).where(
    User.email_key == bindparam("email_key")
)


async def get_credentials(conn: AsyncConnection, email_key: str) -> tuple[UserRecord, str] | None:
    """The user with this folded email and its password hash, for login."""
    row = (await conn.execute(_CREDENTIALS, {"email_key": email_key})).first()
    if row is None:
        return None
    return _record(row[:-1]), row[-1]


async def get_by_email_key(conn: AsyncConnection, email_key: str) -> UserRecord | None:
    """The user with this folded email, deleted or not."""
    row = (await conn.execute(select(*_COLUMNS).where(User.email_key == email_key))).first()
    return _record(row) if row else None


async def get_password_hash(conn: AsyncConnection, user_id: uuid.UUID) -> str | None:
    """The stored hash of a user's password."""
    return (
        await conn.execute(select(User.hashed_password).where(User.id == user_id))
    ).scalar_one_or_none()


async def insert_user(
    conn: AsyncConnection,
    *,
    email: str,
    email_key: str,
    hashed_password: str,
    full_name: str | None,
    is_superuser: bool = False,
    email_verified: bool = False,
) -> UserRecord:
    """Create a user; raise :class:`EmailTaken` when the email is registered.
    ``email_verified``: the address counts as proven (an operator created the account)."""
    now = utcnow()
    verified_at = now if email_verified else None
    user_id = uuid.uuid4()
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(User).values(
                    id=user_id,
                    email=email,
                    email_key=email_key,
                    full_name=full_name,
                    hashed_password=hashed_password,
                    is_active=True,
                    is_superuser=is_superuser,
                    created_at=now,
                    updated_at=now,
                    email_verified_at=verified_at,
                )
            )
    except IntegrityError:
        raise EmailTaken() from None
    return UserRecord(user_id, email, full_name, True, is_superuser, now, None, verified_at)


async def set_password_hash(conn: AsyncConnection, user_id: uuid.UUID, hashed: str) -> None:
    """Replace a user's password hash."""
    await conn.execute(
        update(User).where(User.id == user_id).values(hashed_password=hashed, updated_at=utcnow())
    )


async def mark_email_verified(
    conn: AsyncConnection, user_id: uuid.UUID, email: str, now: datetime
) -> bool:
    """Record that the owner proved ``email``, if it is still the account's address (a link
    sent to an address the account has since left proves nothing about the new one).
    Returns whether the account's address is ``email``."""
    result = await conn.execute(
        update(User)
        .where(User.id == user_id, User.email == email)
        .values(email_verified_at=func.coalesce(User.email_verified_at, now), updated_at=now)
    )
    return bool(result.rowcount)


async def set_email(
    conn: AsyncConnection, user_id: uuid.UUID, *, email: str, email_key: str, now: datetime
) -> None:
    """Give the account a new (proven) address; :class:`EmailTaken` when another account
    has it."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                update(User)
                .where(User.id == user_id)
                .values(email=email, email_key=email_key, email_verified_at=now, updated_at=now)
            )
    except IntegrityError:
        raise EmailTaken() from None


async def update_user(conn: AsyncConnection, user_id: uuid.UUID, **values: object) -> None:
    """Set columns of one user (``is_active``, ``is_superuser``, ``full_name``, ...)."""
    await conn.execute(update(User).where(User.id == user_id).values(updated_at=utcnow(), **values))


async def search(
    conn: AsyncConnection, *, query: str | None, offset: int, limit: int
) -> tuple[list[UserRecord], int]:
    """Users whose email or name contains ``query``, newest first, and the total count."""
    condition = None
    if query:
        escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        condition = or_(
            User.email_key.like(pattern, escape="\\"),
            func.lower(User.full_name).like(pattern, escape="\\"),
        )
    stmt = select(*_COLUMNS).order_by(User.created_at.desc(), User.id)
    count = select(func.count()).select_from(User)
    if condition is not None:
        stmt = stmt.where(condition)
        count = count.where(condition)
    rows = (await conn.execute(stmt.offset(offset).limit(limit))).all()
    total = (await conn.execute(count)).scalar_one()
    return [_record(row) for row in rows], total


async def refresh_mfa_enabled(conn: AsyncConnection, user_id: uuid.UUID) -> bool:
    """Recompute ``users.mfa_enabled`` from the user's factors (a confirmed TOTP factor or
    any passkey) in one statement, inside the caller's transaction; returns the new value.
    Called by every change of a factor, so the flag never disagrees with the factors."""
    has_factor = or_(
        select(TotpFactor.id)
        .where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
        .exists(),
        select(WebAuthnCredential.id).where(WebAuthnCredential.user_id == user_id).exists(),
    )
    result = await conn.execute(
        update(User)
        .where(User.id == user_id)
        .values(mfa_enabled=has_factor)
        .returning(User.mfa_enabled)
    )
    return bool(result.scalar_one_or_none())
