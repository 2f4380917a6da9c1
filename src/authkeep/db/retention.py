"""Queries of the retention jobs that ``authkeep purge`` runs: when accounts were last used,
which ones are inactive, and deleting dead single-use rows (MFA login challenges, WebAuthn
challenges, spent or expired account tokens).

"Used" is read from rows authkeep writes anyway: a sign-in inserts a session, a refresh
moves its ``last_used_at``, an API key's use moves the key's (at most every few minutes).
Nothing is written on the login path for retention's sake. Because the session purge
deletes ended sessions, :func:`fold_session_activity` first copies their newest use into
``users.last_active_at``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.engine import ORG_SETTING, set_local
from authkeep.db.models import (
    AccountToken,
    ApiKey,
    AuthSession,
    Membership,
    MfaLoginChallenge,
    User,
    WebAuthnChallenge,
)

last_active = func.coalesce(User.last_active_at, User.created_at)
"""When an account was last known to be used (its creation, for one never used)."""


async def fold_session_activity(
    conn: AsyncConnection, *, limit: int, after: uuid.UUID | None = None
) -> tuple[int, uuid.UUID | None]:
    """Move ``users.last_active_at`` forward to the newest use of each account's sessions,
    for the next ``limit`` accounts with sessions after ``after`` in id order (a keyset on
    the sessions' ``user_id`` index: each batch reads only its own accounts' sessions, so a
    whole pass is linear in the table). Returns how many accounts moved and where the next
    batch starts (None: the pass is complete)."""
    groups = (
        select(AuthSession.user_id, func.max(AuthSession.last_used_at).label("at"))
        .group_by(AuthSession.user_id)
        .order_by(AuthSession.user_id)
        .limit(limit)
    )
    if after is not None:
        groups = groups.where(AuthSession.user_id > after)
    newest = groups.subquery()
    rows = (
        await conn.execute(
            # Outer join: sessions of an account erased meanwhile still count for the keyset.
            select(newest.c.user_id, newest.c.at, (newest.c.at > last_active).label("newer"))
            .outerjoin(User, User.id == newest.c.user_id)
            .order_by(newest.c.user_id)
        )
    ).all()
    moved = 0
    for user_id, at, newer in rows:
        if newer:
            await touch(conn, user_id, at)
            moved += 1
    return moved, (rows[-1][0] if len(rows) == limit else None)


async def touch(conn: AsyncConnection, user_id: uuid.UUID, at: datetime) -> None:
    """Record a use of the account at ``at`` (never moves ``last_active_at`` back)."""
    await conn.execute(
        update(User)
        .where(User.id == user_id, or_(User.last_active_at.is_(None), User.last_active_at < at))
        .values(last_active_at=at)
    )


async def api_key_last_use(conn: AsyncConnection, user_id: uuid.UUID) -> datetime | None:
    """The newest use of a key ``user_id`` created in an organization they belong to. Run
    inside a transaction: ``api_keys`` is a tenant table, so each organization is bound in
    turn (and the binding cleared at the end)."""
    orgs = list(
        (
            await conn.execute(
                select(Membership.organization_id).where(Membership.user_id == user_id)
            )
        ).scalars()
    )
    newest: datetime | None = None
    for org_id in orgs:
        await set_local(conn, ORG_SETTING, str(org_id))
        used = (
            await conn.execute(
                select(func.max(ApiKey.last_used_at)).where(
                    ApiKey.organization_id == org_id, ApiKey.created_by == user_id
                )
            )
        ).scalar_one_or_none()
        if used is not None and (newest is None or used > newest):
            newest = used
    if orgs:
        await set_local(conn, ORG_SETTING, "")
    return newest


@dataclass(frozen=True, slots=True)
class IdleAccount:
    """An account unused since ``last_active``; ``warned_at``: when this idle spell's
    warning went out (None: not yet)."""

    user_id: uuid.UUID
    last_active: datetime
    warned_at: datetime | None


def _idle(cutoff: datetime) -> ColumnElement[bool]:
    # Accounts retention applies to: active, not already leaving, not platform admins (the
    # last one erased for idleness would lock every operator out), unused since ``cutoff``.
    return and_(
        User.is_active.is_(True),
        User.deleted_at.is_(None),
        User.deletion_at.is_(None),
        User.is_superuser.is_(False),
        last_active < cutoff,
    )


def _unwarned() -> ColumnElement[bool]:
    # A warning sent before the latest use belongs to an earlier idle spell.
    return or_(User.inactivity_warned_at.is_(None), User.inactivity_warned_at < last_active)


async def to_warn(
    conn: AsyncConnection, cutoff: datetime, *, after: uuid.UUID | None, limit: int
) -> list[IdleAccount]:
    """Idle accounts not yet warned in this idle spell, by id after ``after``."""
    return await _idle_accounts(conn, and_(_idle(cutoff), _unwarned()), after, limit)


async def to_schedule(
    conn: AsyncConnection,
    cutoff: datetime,
    warned_before: datetime,
    *,
    after: uuid.UUID | None,
    limit: int,
) -> list[IdleAccount]:
    """Idle accounts warned in this idle spell at or before ``warned_before``."""
    warned = and_(
        User.inactivity_warned_at.is_not(None),
        User.inactivity_warned_at >= last_active,
        User.inactivity_warned_at <= warned_before,
    )
    return await _idle_accounts(conn, and_(_idle(cutoff), warned), after, limit)


async def _idle_accounts(
    conn: AsyncConnection, condition: ColumnElement[bool], after: uuid.UUID | None, limit: int
) -> list[IdleAccount]:
    # Keyset pages by id: an account skipped (an API key in use, a sole admin) does not
    # come back within one run.
    where = condition if after is None else and_(condition, User.id > after)
    rows = await conn.execute(
        select(User.id, last_active, User.inactivity_warned_at)
        .where(where)
        .order_by(User.id)
        .limit(limit)
    )
    return [IdleAccount(row[0], row[1], row[2]) for row in rows]


async def count_idle(conn: AsyncConnection, cutoff: datetime, warned_before: datetime) -> Any:
    """(to warn, to schedule) counts at ``cutoff``, before API-key use is considered."""
    warn = select(func.count()).select_from(User).where(_idle(cutoff), _unwarned())
    schedule = (
        select(func.count())
        .select_from(User)
        .where(
            _idle(cutoff),
            User.inactivity_warned_at.is_not(None),
            User.inactivity_warned_at >= last_active,
            User.inactivity_warned_at <= warned_before,
        )
    )
    return (await conn.execute(warn)).scalar_one(), (await conn.execute(schedule)).scalar_one()


async def mark_warned(conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> bool:
    """Record the warning, unless the account was used or changed meanwhile."""
    result = await conn.execute(
        update(User)
        .where(User.id == user_id, User.deleted_at.is_(None), _unwarned())
        .values(inactivity_warned_at=now)
    )
    return bool(result.rowcount)


def _dead(now: datetime) -> tuple[tuple[str, Any, ColumnElement[bool]], ...]:
    # Single-use rows no request can use any more: an MFA login step or a WebAuthn ceremony
    # that expired or was finished, an emailed link that expired, was voided or was spent.
    return (
        (
            "mfa_login_challenges",
            MfaLoginChallenge,
            or_(MfaLoginChallenge.expires_at <= now, MfaLoginChallenge.used_at.is_not(None)),
        ),
        (
            "webauthn_challenges",
            WebAuthnChallenge,
            or_(WebAuthnChallenge.expires_at <= now, WebAuthnChallenge.used_at.is_not(None)),
        ),
        (
            "account_tokens",
            AccountToken,
            or_(AccountToken.expires_at <= now, AccountToken.used_at.is_not(None)),
        ),
    )


DEAD_ROW_TABLES = ("mfa_login_challenges", "webauthn_challenges", "account_tokens")


async def delete_dead_rows(conn: AsyncConnection, table: str, now: datetime, *, limit: int) -> int:
    """Delete at most ``limit`` dead rows of ``table`` (one of :data:`DEAD_ROW_TABLES`)."""
    for name, model, condition in _dead(now):
        if name == table:
            doomed = select(model.id).where(condition).limit(limit)
            result = await conn.execute(delete(model).where(model.id.in_(doomed)))
            return int(result.rowcount or 0)
    raise ValueError(f"not a table of dead single-use rows: {table!r}")


async def count_dead_rows(conn: AsyncConnection, now: datetime) -> dict[str, int]:
    """How many dead rows each of :data:`DEAD_ROW_TABLES` holds."""
    counts = {}
    for name, model, condition in _dead(now):
        counts[name] = int(
            (
                await conn.execute(select(func.count()).select_from(model).where(condition))
            ).scalar_one()
        )
    return counts
