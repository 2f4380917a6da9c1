"""Queries on ``api_keys`` — a tenant table under row-level security on PostgreSQL.

Every statement runs in a transaction bound to the key's organization
(:meth:`~authkeep.db.engine.Database.tenant_transaction`), except the one look-up that must
happen before the organization is known: authenticating a presented key. For that one a
second, SELECT-only policy shows the row whose ``prefix`` equals ``app.api_key_prefix``,
which :func:`find_for_auth` sets for its transaction — so the app role can read a key's row
only by already holding its prefix, never list keys across organizations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.audit_guard import quote_ident
from authkeep.db.engine import set_local
from authkeep.db.models import ApiKey, Membership, Organization, User, UserKey
from authkeep.db.users import UNREADABLE_EMAIL, USER_COLUMNS, UserRecord, user_from_row
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role, parse_role

LOOKUP_SETTING = "app.api_key_prefix"
LOOKUP_POLICY = "authkeep_api_key_lookup"


def lookup_policy_statements(table: str = "api_keys") -> list[str]:
    """The extra PostgreSQL policy that lets authentication find a key by its prefix."""
    return [
        f"CREATE POLICY {LOOKUP_POLICY} ON {quote_ident(table)} AS PERMISSIVE FOR SELECT "
        f"TO PUBLIC USING (prefix = NULLIF(current_setting('{LOOKUP_SETTING}', true), ''))"
    ]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key, as listed to an admin: never its hash."""

    id: uuid.UUID
    org_id: uuid.UUID
    prefix: str
    name: str
    role: Role
    created_by: uuid.UUID
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyForAuth:
    """What authenticating a key needs, from one query: the key, its hash, its creator,
    the creator's current role in the key's organization (None if no longer a member) and
    whether that organization requires a second factor of its members."""

    key: ApiKeyRecord
    key_hash: str
    creator: UserRecord
    creator_role: Role | None
    org_requires_mfa: bool = False


_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.organization_id,
    ApiKey.prefix,
    ApiKey.name,
    ApiKey.role,
    ApiKey.created_by,
    ApiKey.created_at,
    ApiKey.expires_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
)
_USER_COLUMNS = USER_COLUMNS


def _key(row: tuple[object, ...]) -> ApiKeyRecord:
    values = list(row)
    values[4] = Role(str(values[4]))
    return ApiKeyRecord(*values)  # type: ignore[arg-type]


async def insert_key(
    conn: AsyncConnection,
    *,
    org_id: uuid.UUID,
    prefix: str,
    key_hash: str,
    name: str,
    role: Role,
    created_by: uuid.UUID,
    now: datetime,
    expires_at: datetime | None,
) -> ApiKeyRecord:
    """Store a new key (its hash only)."""
    key_id = uuid.uuid4()
    await conn.execute(
        insert(ApiKey).values(
            id=key_id,
            organization_id=org_id,
            prefix=prefix,
            key_hash=key_hash,
            name=name,
            role=role.value,
            created_by=created_by,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return ApiKeyRecord(key_id, org_id, prefix, name, role, created_by, now, expires_at, None, None)


async def keys_of(conn: AsyncConnection, org_id: uuid.UUID) -> list[ApiKeyRecord]:
    """An organization's keys, newest first (revoked ones included)."""
    rows = await conn.execute(
        select(*_KEY_COLUMNS)
        .where(ApiKey.organization_id == org_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    return [_key(tuple(row)) for row in rows]


async def revoke(
    conn: AsyncConnection, org_id: uuid.UUID, key_id: uuid.UUID, now: datetime
) -> tuple[ApiKeyRecord | None, bool]:
    """Revoke one key of the organization (idempotent): the key (None if the organization
    has no such key) and whether this call revoked it."""
    result = await conn.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.organization_id == org_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    row = (
        await conn.execute(
            select(*_KEY_COLUMNS).where(ApiKey.id == key_id, ApiKey.organization_id == org_id)
        )
    ).first()
    return (_key(tuple(row)) if row else None), bool(result.rowcount)


async def revoke_all(conn: AsyncConnection, org_id: uuid.UUID, now: datetime) -> int:
    """Revoke every live key of an organization."""
    result = await conn.execute(
        update(ApiKey)
        .where(ApiKey.organization_id == org_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


async def find_for_auth(
    conn: AsyncConnection, envelope: Envelope, prefix: str
) -> KeyForAuth | None:
    """The key with ``prefix``, its creator and the creator's role, in one indexed query
    (the creator's user key with it: the creator's address is sealed). None also when the
    creator's address cannot be read (as for a sign-in, ``db/users.py``).
    Run it inside a transaction (:meth:`~authkeep.db.engine.Database.read_transaction`):
    on PostgreSQL the prefix is set as ``app.api_key_prefix`` for the lookup policy."""
    await set_local(conn, LOOKUP_SETTING, prefix)
    row = (
        await conn.execute(
            select(
                *_KEY_COLUMNS,
                ApiKey.key_hash,
                *_USER_COLUMNS,
                Membership.role,
                Organization.require_mfa,
            )
            .join(User, User.id == ApiKey.created_by)
            .outerjoin(UserKey, UserKey.user_id == User.id)
            .join(Organization, Organization.id == ApiKey.organization_id)
            .outerjoin(
                Membership,
                and_(
                    Membership.user_id == ApiKey.created_by,
                    Membership.organization_id == ApiKey.organization_id,
                ),
            )
            .where(ApiKey.prefix == prefix)
        )
    ).first()
    if row is None:
        return None
    values = tuple(row)
    key_count = len(_KEY_COLUMNS)
    user_end = key_count + 1 + len(_USER_COLUMNS)
    creator = user_from_row(envelope, values[key_count + 1 : user_end])
    if creator.email == UNREADABLE_EMAIL:
        return None
    return KeyForAuth(
        key=_key(values[:key_count]),
        key_hash=str(values[key_count]),
        creator=creator,
        creator_role=parse_role(values[user_end]),
        org_requires_mfa=bool(values[user_end + 1]),
    )


async def touch(
    conn: AsyncConnection, key_id: uuid.UUID, now: datetime, *, stale_before: datetime
) -> bool | None:
    """Record a use: True if this was the key's first use, False if ``last_used_at`` was
    older than ``stale_before`` and was moved, None if another request already did it.
    Conditional updates, so concurrent first uses report "first" exactly once."""
    first = await conn.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.last_used_at.is_(None))
        .values(last_used_at=now)
    )
    if first.rowcount:
        return True
    later = await conn.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at < stale_before, ApiKey.last_used_at.is_(None)),
        )
        .values(last_used_at=now)
    )
    return False if later.rowcount else None
