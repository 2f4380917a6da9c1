"""Queries on ``auth_sessions`` and ``refresh_tokens``.

A session's ``ip`` and ``user_agent`` are personal data: sealed with the user's key, bound to
the session's row (``db/sealed.py``); reads join the key in and return plaintext.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Row, Select, Table, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import sealed
from authkeep.db.audit import NewEntry, pending_insert_sql, pending_values
from authkeep.db.base import IP_LENGTH, USER_AGENT_LENGTH
from authkeep.db.models import AuthSession, RefreshToken, UserKey
from authkeep.db.orgs import ActiveOrg, active_org, default_org_sql
from authkeep.security.assurance import AuthContext, parse_amr
from authkeep.security.envelope import Envelope
from authkeep.security.text import clip


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as listed to its user."""

    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    ip: str | None
    user_agent: str | None
    auth_time: datetime | None = None
    amr: str = "pwd"

    @property
    def auth(self) -> AuthContext:
        """When and how the user last authenticated in this session."""
        return AuthContext(self.auth_time or self.created_at, parse_amr(self.amr))

    def idle_expires_at(self, idle_timeout: timedelta) -> datetime:
        """When the session ends unless refreshed first: ``idle_timeout`` after its last use,
        never past its absolute expiry."""
        return min(self.last_used_at + idle_timeout, self.expires_at)

    def is_live(self, now: datetime, idle_timeout: timedelta) -> bool:
        """Neither revoked, nor past its absolute expiry, nor idle for ``idle_timeout``."""
        return self.revoked_at is None and self.idle_expires_at(idle_timeout) > now


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """The stored facts about one refresh token."""

    jti: str
    user_id: uuid.UUID
    session_id: uuid.UUID
    token_hash: str
    created_at: datetime
    expires_at: datetime
    spent_at: datetime | None
    successor_jti: str | None
    revoked_at: datetime | None
    rotated_agent_hash: str | None


_SESSION_COLUMNS = (
    AuthSession.id,
    AuthSession.user_id,
    AuthSession.created_at,
    AuthSession.last_used_at,
    AuthSession.expires_at,
    AuthSession.revoked_at,
    AuthSession.ip,
    AuthSession.user_agent,
    AuthSession.auth_time,
    AuthSession.amr,
    UserKey.wrapped_key,
)
# Core inserts built once (values come with each execute): every login and refresh runs
# them, and the ORM's per-call ``insert(Entity).values(...)`` cost more than the round trip.
_INSERT_SESSION = insert(cast(Table, AuthSession.__table__))
_INSERT_REFRESH = insert(cast(Table, RefreshToken.__table__))
_REFRESH_COLUMNS = (
    RefreshToken.jti,
    RefreshToken.user_id,
    RefreshToken.session_id,
    RefreshToken.token_hash,
    RefreshToken.created_at,
    RefreshToken.expires_at,
    RefreshToken.spent_at,
    RefreshToken.successor_jti,
    RefreshToken.revoked_at,
    RefreshToken.rotated_agent_hash,
)


def _session(envelope: Envelope, row: Row[Any]) -> SessionRecord:
    values = row._asdict()
    aead = sealed.user_cipher(envelope, values["user_id"], values.pop("wrapped_key"))
    for column in ("ip", "user_agent"):
        values[column] = sealed.open_user(
            aead, "auth_sessions", column, values["id"], values[column]
        )
    return SessionRecord(**values)


def _select_sessions() -> Select[*tuple[Any, ...]]:
    return select(*_SESSION_COLUMNS).outerjoin(UserKey, UserKey.user_id == AuthSession.user_id)


async def create_session(
    conn: AsyncConnection,
    envelope: Envelope,
    *,
    user_id: uuid.UUID,
    now: datetime,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
    org_id: uuid.UUID | None = None,
    amr: str = "pwd",
    session_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert a new live session (active in ``org_id``, if given), authenticated now by
    the methods ``amr`` (comma-separated), and return its id (``session_id``, else a new
    one). The IP address and user agent are sealed with the user's key (remembered since
    the sign-in read the user: no query); an erased account's key is gone, and they are not
    kept."""
    session_id = session_id or uuid.uuid4()
    sealed_ip, sealed_agent = await _sealed_client(
        conn, envelope, user_id, session_id, ip, user_agent
    )
    await conn.execute(
        _INSERT_SESSION,
        {
            "id": session_id,
            "user_id": user_id,
            "created_at": now,
            "last_used_at": now,
            "expires_at": expires_at,
            "ip": sealed_ip,
            "user_agent": sealed_agent,
            "org_id": org_id,
            "auth_time": now,
            "amr": amr,
        },
    )
    return session_id


async def _sealed_client(
    conn: AsyncConnection,
    envelope: Envelope,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    ip: str | None,
    user_agent: str | None,
) -> tuple[str | None, str | None]:
    # A new session's IP address and user agent as stored: sealed with the user's key, none
    # for an erased account (its key is gone).
    try:
        aead = await sealed.require_cipher(conn, envelope, user_id)
    except sealed.MissingUserKey:
        aead = None
    # Reported by the client, so recorded, never refused: an over-long or binary value must
    # not fail the login it describes.
    return (
        _seal(aead, session_id, "ip", clip(ip, IP_LENGTH)),
        _seal(aead, session_id, "user_agent", clip(user_agent, USER_AGENT_LENGTH)),
    )


@dataclass(frozen=True, slots=True)
class NewRefresh:
    """A session's first refresh token, as :func:`open_session` stores it (its hash)."""

    jti: str
    token_hash: str
    created_at: datetime
    expires_at: datetime


# A login's writes as one statement (open_session): the default organization's query
# (db/orgs.py, the very query default_org runs), the session, its first refresh token and
# the audit row's insert (db/audit.py, parameters $12 on). A data-modifying WITH runs each
# part once, read or not, on one snapshot; the refresh token's foreign key to the session
# inserted beside it is checked at the statement's end, when both rows exist.
_OPEN_PARTS = (
    f"WITH org AS ({default_org_sql('$2')}), "  # noqa: S608  (built from constants)
    "new_session AS (INSERT INTO auth_sessions (id, user_id, created_at, last_used_at, "
    "expires_at, ip, user_agent, org_id, auth_time, amr) "
    "VALUES ($1, $2, $3, $3, $4, $5, $6, (SELECT organization_id FROM org), $3, $7)), "
    "new_refresh AS (INSERT INTO refresh_tokens (jti, user_id, session_id, token_hash, "
    "created_at, expires_at) VALUES ($8, $2, $1, $9, $10, $11))"
)
_OPEN_RESULT = " SELECT organization_id, role FROM org"
_OPEN_SESSION = _OPEN_PARTS + _OPEN_RESULT
_OPEN_SESSION_AUDITED = f"{_OPEN_PARTS}, audit_row AS ({pending_insert_sql(12)}){_OPEN_RESULT}"


async def open_session(
    conn: AsyncConnection,
    envelope: Envelope,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
    amr: str,
    refresh: NewRefresh,
    audit: NewEntry | None,
) -> ActiveOrg | None:
    """PostgreSQL: open a session in ONE statement, and return the organization it starts
    in (:func:`authkeep.db.orgs.default_org`, None without one).

    The statement reads the user's default organization, inserts the session (active in
    it; sealed as :func:`create_session` seals), its first refresh token ``refresh`` and,
    unless ``audit`` is None, that audit row (its address sealed) into ``audit_pending``
    (:func:`authkeep.db.audit.pending_insert_sql`). It runs on ``conn``'s driver connection as it
    is: when nothing ran on ``conn`` before (the user's key remembered), in autocommit —
    one round trip, no BEGIN nor COMMIT, atomic as any single statement, and the audit row
    joins its chain at that statement's own commit; otherwise inside ``conn``'s open
    transaction, committed with it. Either way all of it commits, or none of it."""
    sealed_ip, sealed_agent = await _sealed_client(
        conn, envelope, user_id, session_id, ip, user_agent
    )
    args: list[Any] = [
        session_id,
        user_id,
        now,
        expires_at,
        sealed_ip,
        sealed_agent,
        amr,
        refresh.jti,
        refresh.token_hash,
        refresh.created_at,
        refresh.expires_at,
    ]
    statement = _OPEN_SESSION
    if audit is not None:
        statement = _OPEN_SESSION_AUDITED
        args += pending_values(audit)
    # Straight to the driver, as the audit row's insert is (db/audit.py): through
    # SQLAlchemy, the adapter would open a transaction first (BEGIN, then COMMIT).
    raw = await conn.get_raw_connection()
    row = await raw.driver_connection.fetchrow(statement, *args)  # type: ignore[union-attr]
    return active_org(row)


def _seal(aead: AESGCM | None, session_id: uuid.UUID, column: str, value: str | None) -> str | None:
    if aead is None:
        return None
    return sealed.seal_user(aead, "auth_sessions", column, session_id, value)


async def get_session(
    conn: AsyncConnection, envelope: Envelope, session_id: uuid.UUID
) -> SessionRecord | None:
    """One session, live or not."""
    row = (await conn.execute(_select_sessions().where(AuthSession.id == session_id))).first()
    return _session(envelope, row) if row else None


async def live_sessions(
    conn: AsyncConnection,
    envelope: Envelope,
    user_id: uuid.UUID,
    now: datetime,
    idle_timeout: timedelta,
) -> list[SessionRecord]:
    """A user's sessions that are neither revoked, expired nor idle for ``idle_timeout``,
    most recently used first."""
    rows = await conn.execute(
        _select_sessions()
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
            AuthSession.last_used_at > now - idle_timeout,
        )
        .order_by(AuthSession.last_used_at.desc())
    )
    return [_session(envelope, row) for row in rows]


async def sessions_of(
    conn: AsyncConnection, envelope: Envelope, user_id: uuid.UUID, *, limit: int
) -> list[SessionRecord]:
    """Every stored session of a user, live or ended (until the purge removes it), newest
    first, at most ``limit`` (the data export)."""
    rows = await conn.execute(
        _select_sessions()
        .where(AuthSession.user_id == user_id)
        .order_by(AuthSession.created_at.desc(), AuthSession.id)
        .limit(limit)
    )
    return [_session(envelope, row) for row in rows]


async def touch_session(conn: AsyncConnection, session_id: uuid.UUID, now: datetime) -> None:
    """Record that the session was just used."""
    await conn.execute(
        update(AuthSession).where(AuthSession.id == session_id).values(last_used_at=now)
    )


async def revoke_sessions(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID,
    now: datetime,
    reason: str,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revoke a user's live sessions (just ``only``, or all but ``keep``) and their refresh
    tokens. Returns the ids of the sessions this call revoked."""
    condition = and_(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if only is not None:
        condition = and_(condition, AuthSession.id == only)
    if keep is not None:
        condition = and_(condition, AuthSession.id != keep)
    ids = list((await conn.execute(select(AuthSession.id).where(condition))).scalars())
    if not ids:
        return []
    await conn.execute(
        update(AuthSession)
        .where(AuthSession.id.in_(ids), AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    await conn.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id.in_(ids), RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return ids


async def revoked_since(conn: AsyncConnection, since: datetime) -> list[tuple[uuid.UUID, datetime]]:
    """Sessions revoked after ``since``: their access tokens may still be unexpired."""
    rows = await conn.execute(
        select(AuthSession.id, AuthSession.revoked_at).where(AuthSession.revoked_at > since)
    )
    return [(row[0], row[1]) for row in rows if row[1] is not None]


async def session_is_revoked(conn: AsyncConnection, session_id: uuid.UUID) -> bool:
    """Whether the session is revoked (or unknown)."""
    row = (
        await conn.execute(select(AuthSession.revoked_at).where(AuthSession.id == session_id))
    ).first()
    return row is None or row[0] is not None


async def insert_refresh(
    conn: AsyncConnection,
    *,
    jti: str,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    token_hash: str,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    """Store a new refresh token (its hash)."""
    await conn.execute(
        _INSERT_REFRESH,
        {
            "jti": jti,
            "user_id": user_id,
            "session_id": session_id,
            "token_hash": token_hash,
            "created_at": created_at,
            "expires_at": expires_at,
        },
    )


async def get_refresh(conn: AsyncConnection, jti: str) -> RefreshRecord | None:
    """One stored refresh token."""
    row = (await conn.execute(select(*_REFRESH_COLUMNS).where(RefreshToken.jti == jti))).first()
    # By name: SQLAlchemy types a select of more than nine columns as open-ended.
    return RefreshRecord(**row._asdict()) if row else None


async def spend_refresh(
    conn: AsyncConnection,
    *,
    jti: str,
    token_hash: str,
    successor_jti: str,
    agent_hash: str,
    now: datetime,
) -> bool:
    """Atomically mark a live refresh token spent by a client whose User-Agent hashes to
    ``agent_hash``. Exactly one concurrent caller wins: the conditional UPDATE takes the row
    lock and re-checks ``spent_at`` after waiting for it."""
    result = await conn.execute(
        update(RefreshToken)
        .where(
            RefreshToken.jti == jti,
            RefreshToken.token_hash == token_hash,
            RefreshToken.spent_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(spent_at=now, successor_jti=successor_jti, rotated_agent_hash=agent_hash)
    )
    return bool(result.rowcount == 1)


async def purge_batch(
    conn: AsyncConnection, *, now: datetime, ended_before: datetime, limit: int
) -> tuple[int, int, int]:
    """Delete at most ``limit`` expired refresh tokens, and at most ``limit`` sessions that
    expired or were revoked before ``ended_before`` (with all their tokens).

    Spent tokens stay until they expire: a replay of one must still be recognised as theft.
    Ended sessions stay until ``ended_before`` (the longest access-token lifetime ago): their
    revocation must still be known, and no refresh that began while they lived can still be
    running and about to insert a token for them. Returns (sessions, expired tokens, tokens
    of deleted sessions)."""
    expired = select(RefreshToken.jti).where(RefreshToken.expires_at <= now).limit(limit)
    tokens = await conn.execute(delete(RefreshToken).where(RefreshToken.jti.in_(expired)))
    ended = or_(AuthSession.expires_at <= ended_before, AuthSession.revoked_at < ended_before)
    ids = list((await conn.execute(select(AuthSession.id).where(ended).limit(limit))).scalars())
    if not ids:
        return 0, int(tokens.rowcount), 0
    cascaded = await conn.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(ids)))
    sessions = await conn.execute(delete(AuthSession).where(AuthSession.id.in_(ids)))
    return int(sessions.rowcount), int(tokens.rowcount), int(cascaded.rowcount)


async def reauthenticate(
    conn: AsyncConnection, session_id: uuid.UUID, user_id: uuid.UUID, auth: AuthContext
) -> bool:
    """Record a fresh authentication (a step-up) in a live session of ``user_id``: its
    ``auth_time`` and ``amr`` become ``auth``'s. False if no such unrevoked session."""
    result = await conn.execute(
        update(AuthSession)
        .where(
            AuthSession.id == session_id,
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
        )
        .values(auth_time=auth.auth_time, amr=auth.stored_amr)
    )
    return bool(result.rowcount)
