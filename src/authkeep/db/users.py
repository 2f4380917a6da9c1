"""Queries on ``users``. Core statements on the ORM tables: no identity map, no lazy loads.

Personal data is sealed at rest (``security/envelope.py``, docs/privacy.md): ``email`` and
``full_name`` with the account's own user key (``user_keys``, joined into every read, so a
read stays one query), ``email_key`` is the keyed blind index of the folded address. Reads
return plaintext; look-ups by address match its index under every key of the ring.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import sealed, user_keys
from authkeep.db.base import utcnow
from authkeep.db.models import (
    Membership,
    Organization,
    TotpFactor,
    User,
    UserKey,
    WebAuthnCredential,
)
from authkeep.security.emails import email_key as fold_email
from authkeep.security.envelope import Envelope


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


# The columns of a UserRecord, in its field order, then the account's wrapped user key (other
# queries join them in: select them, :func:`join_user_key`, and :func:`user_from_row`).
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
    UserKey.wrapped_key,
)
_COLUMNS = USER_COLUMNS

UNREADABLE_EMAIL = ""
"""What ``UserRecord.email`` holds when the stored address cannot be read: the account was
erased (its key destroyed) or the row is damaged (``db/sealed.py``). No real address is
empty."""

# Columns that hold sealed values or the blind index: written only by the functions below.
_SEALED = frozenset({"email", "email_key", "full_name"})


_Select = TypeVar("_Select", bound="Select[*tuple[Any, ...]]")


class EmailTaken(Exception):
    """The folded email already belongs to an account."""


def join_user_key(stmt: _Select) -> _Select:
    """``stmt`` (a select of :data:`USER_COLUMNS` and more) with the user key joined in: one
    query reads a user and the key that opens it."""
    return stmt.outerjoin(UserKey, UserKey.user_id == User.id)


def user_from_row(envelope: Envelope, row: Sequence[Any]) -> UserRecord:
    """The :class:`UserRecord` of the :data:`USER_COLUMNS` at the start of ``row``, opened.
    The key is unwrapped once and remembered (:class:`Envelope`'s bounded map), so a
    request's later writes (a session's IP address) need no key read of their own."""
    user_id = row[0]
    aead = sealed.user_cipher(envelope, user_id, row[9])
    email = sealed.open_user(aead, "users", "email", user_id, row[1])
    return UserRecord(
        user_id,
        UNREADABLE_EMAIL if email is None else email,
        sealed.open_user(aead, "users", "full_name", user_id, row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
    )


def _readable(user: UserRecord) -> UserRecord | None:
    # An account whose address cannot be read does not authenticate: its tokens would carry
    # no address, and a damaged row is for an operator to look at, not to sign in with.
    return None if user.email == UNREADABLE_EMAIL else user


def _by_id() -> Select[*tuple[Any, ...]]:
    return join_user_key(select(*_COLUMNS))


async def get_by_id(
    conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID
) -> UserRecord | None:
    """The user with this id, deleted or not."""
    row = (await conn.execute(_by_id().where(User.id == user_id))).first()
    return user_from_row(envelope, row) if row else None


async def get_with_role(
    conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID, org_id: uuid.UUID | None
) -> tuple[UserRecord, str | None, bool] | None:
    """The user, their CURRENT role in ``org_id`` (None if not a member) and whether that
    organization requires a second factor, in one query on primary keys: the per-request
    path, so a role change, a removal or a new MFA policy takes effect on the member's next
    request instead of when their token expires. None also for an account whose address
    cannot be read."""
    if org_id is None:
        user = await get_by_id(conn, envelope, user_id)
        user = _readable(user) if user else None
        return (user, None, False) if user else None
    row = (
        await conn.execute(
            join_user_key(select(*_COLUMNS, Membership.role, Organization.require_mfa))
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
    found = _readable(user_from_row(envelope, row))
    if found is None:
        return None
    values = tuple(row)
    role = values[-2]
    return found, None if role is None else str(role), bool(values[-1])


# Built once: every login runs it, and building a statement costs more than running it.
# The index of the address under every key of the ring: an account not yet re-indexed
# after a rotation is still found.
_CREDENTIALS = join_user_key(select(*_COLUMNS, User.hashed_password)).where(
    User.email_key.in_(bindparam("indexes", expanding=True))
)


async def get_credentials(
    conn: AsyncConnection, envelope: Envelope, email_key: str
) -> tuple[UserRecord, str] | None:
    """The user with the folded email ``email_key`` and its password hash, for login, in
    one query (the user key comes with it). None also for an account whose address cannot
    be read."""
    row = (
        await conn.execute(_CREDENTIALS, {"indexes": list(envelope.blind_indexes(email_key))})
    ).first()
    if row is None:
        return None
    user = _readable(user_from_row(envelope, row))
    return (user, row[-1]) if user else None


async def get_by_email_key(
    conn: AsyncConnection, envelope: Envelope, email_key: str
) -> UserRecord | None:
    """The user with the folded email ``email_key``, deleted or not; None also for an account
    whose address cannot be read (nothing can be sent to it)."""
    row = (
        await conn.execute(_by_id().where(User.email_key.in_(envelope.blind_indexes(email_key))))
    ).first()
    return _readable(user_from_row(envelope, row)) if row else None


async def get_password_hash(conn: AsyncConnection, user_id: uuid.UUID) -> str | None:
    """The stored hash of a user's password."""
    return (
        await conn.execute(select(User.hashed_password).where(User.id == user_id))
    ).scalar_one_or_none()


async def _taken_under_older_keys(
    conn: AsyncConnection, envelope: Envelope, email_key: str, user_id: uuid.UUID
) -> bool:
    # The unique constraint compares the newest index only: until a rotation has re-indexed
    # every row, an address indexed under an older key must be looked for (no query at all
    # with a one-key ring).
    older = envelope.blind_indexes(email_key)[1:]
    if not older:
        return False
    found = await conn.execute(
        select(User.id).where(User.email_key.in_(older), User.id != user_id).limit(1)
    )
    return found.first() is not None


async def insert_user(
    conn: AsyncConnection,
    envelope: Envelope,
    *,
    email: str,
    email_key: str,
    hashed_password: str,
    full_name: str | None,
    is_superuser: bool = False,
    email_verified: bool = False,
) -> UserRecord:
    """Create a user and its user key (one transaction); raise :class:`EmailTaken` when the
    email is registered. ``email`` is the stored form, sealed with the new key with
    ``full_name``; ``email_key`` the folded form, stored as its blind index.
    ``email_verified``: the address counts as proven (an operator created the account)."""
    now = utcnow()
    verified_at = now if email_verified else None
    user_id = uuid.uuid4()
    try:
        async with conn.begin_nested():
            if await _taken_under_older_keys(conn, envelope, email_key, user_id):
                raise EmailTaken()
            aead = await user_keys.create(conn, envelope, user_id)
            await conn.execute(
                insert(User).values(
                    id=user_id,
                    email=sealed.seal_user(aead, "users", "email", user_id, email),
                    email_key=envelope.blind_index(email_key),
                    full_name=sealed.seal_user(aead, "users", "full_name", user_id, full_name),
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
    conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID, email: str, now: datetime
) -> bool:
    """Record that the owner proved ``email``, if it is still the account's address (a link
    sent to an address the account has since left proves nothing about the new one).
    Returns whether the account's address is ``email``. Compared by blind index (the stored
    address is ciphertext): the folded forms must match."""
    indexes = envelope.blind_indexes(fold_email(email))
    result = await conn.execute(
        update(User)
        .where(User.id == user_id, User.email_key.in_(indexes))
        .values(email_verified_at=func.coalesce(User.email_verified_at, now), updated_at=now)
    )
    return bool(result.rowcount)


async def set_email(
    conn: AsyncConnection,
    envelope: Envelope,
    user_id: uuid.UUID,
    *,
    email: str,
    email_key: str,
    now: datetime,
) -> None:
    """Give the account a new (proven) address; :class:`EmailTaken` when another account
    has it; :class:`~authkeep.db.sealed.MissingUserKey` for an erased account."""
    aead = await sealed.require_cipher(conn, envelope, user_id)
    try:
        async with conn.begin_nested():
            if await _taken_under_older_keys(conn, envelope, email_key, user_id):
                raise EmailTaken()
            await conn.execute(
                update(User)
                .where(User.id == user_id)
                .values(
                    email=sealed.seal_user(aead, "users", "email", user_id, email),
                    email_key=envelope.blind_index(email_key),
                    email_verified_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise EmailTaken() from None


async def update_user(conn: AsyncConnection, user_id: uuid.UUID, **values: object) -> None:
    """Set columns of one user (``is_active``, ``is_superuser``, ``deleted_at``, ...); the
    sealed ones (``email``, ``full_name``, ``email_key``) go through their own functions."""
    refused = _SEALED.intersection(values)
    if refused:
        raise ValueError(f"sealed columns are not set here: {sorted(refused)}")
    await conn.execute(update(User).where(User.id == user_id).values(updated_at=utcnow(), **values))


async def search(
    conn: AsyncConnection,
    envelope: Envelope,
    *,
    email_key: str | None = None,
    user_id: uuid.UUID | None = None,
    offset: int,
    limit: int,
) -> tuple[list[UserRecord], int]:
    """Users newest first, and the total count: every user, or the one with the folded
    email ``email_key`` (by blind index) or the id ``user_id``. Addresses and names are
    ciphertext: nothing matches a part of them."""
    conditions: list[ColumnElement[bool]] = []
    if email_key is not None:
        conditions.append(User.email_key.in_(envelope.blind_indexes(email_key)))
    if user_id is not None:
        conditions.append(User.id == user_id)
    stmt = _by_id().order_by(User.created_at.desc(), User.id)
    count = select(func.count()).select_from(User)
    if conditions:
        stmt = stmt.where(or_(*conditions))
        count = count.where(or_(*conditions))
    rows = (await conn.execute(stmt.offset(offset).limit(limit))).all()
    total = (await conn.execute(count)).scalar_one()
    return [user_from_row(envelope, row) for row in rows], total


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
