"""Rows of ``audit_log``: appending to a hash chain, searching, walking, purging.

**The chain.** Each row's ``hash`` is SHA-256 over ``digest|at|prev_hash``: ``digest`` is the
SHA-256 of a canonical JSON serialisation of the row's content (:func:`canonical`), ``at``
its time (UTC, microseconds) and ``prev_hash`` the ``hash`` of the previous row of the same
chain — one chain per organization (``org_id``) and one for platform events (``org_id``
NULL). The first row of a chain points at a per-chain genesis value. Editing a row changes
its hash (caught by recomputing); deleting or reordering rows breaks a ``prev_hash`` link.

**No forks.** Appends to one chain are serialised: on PostgreSQL by a transaction-scoped
advisory lock on the chain, taken before the head is read and held until commit; on SQLite by
``BEGIN IMMEDIATE`` (one writer at a time). ``UNIQUE (prev_hash)`` makes the database refuse
a fork even if a writer skipped the lock.

**One round trip.** The lock is held until the writer's transaction commits, so what runs
under it must be short. On PostgreSQL the whole append — lock, head, time, link hash, insert
— is one call of the ``authkeep_audit_append`` function (:func:`postgres_append_function`);
only the content digest, which needs no lock, is computed here first. That is why the link
hash covers the digest rather than the JSON itself: PostgreSQL can compute it exactly.

**At commit.** Even one call leaves the lock held while the writer waits for its turn on a
busy event loop before it can send COMMIT. :func:`append_at_commit` therefore only queues
the row (``audit_pending``, in the same transaction); a deferred constraint trigger appends
it to its chain during COMMIT, on the server, and the chain's lock lasts just that. The row
still commits or rolls back with the change it describes.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import audit_guard
from authkeep.db.base import utcnow
from authkeep.db.models import AuditEntry

PLATFORM_CHAIN = "platform"
HASH_VERSION = 2
PURGE_ACTION = "audit.purged"
_LOCK_NAMESPACE = b"authkeep.audit_log:"


@dataclass(frozen=True, slots=True)
class NewEntry:
    """What a writer says about an event; the chain fields are computed on append."""

    action: str
    outcome: str = "success"
    org_id: uuid.UUID | None = None
    actor_user_id: uuid.UUID | None = None
    actor_api_key_id: uuid.UUID | None = None
    request_id: str | None = None
    ip: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """One stored row."""

    id: int
    at: datetime
    org_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    request_id: str | None
    ip: str | None
    action: str
    entity_type: str | None
    entity_id: str | None
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def chain(self) -> str:
        """The key of the chain this row belongs to."""
        return chain_key(self.org_id)

    def computed_hash(self) -> str:
        """The hash this row's content and ``prev_hash`` should have."""
        return entry_hash(
            at=self.at,
            org_id=self.org_id,
            actor_user_id=self.actor_user_id,
            actor_api_key_id=self.actor_api_key_id,
            request_id=self.request_id,
            ip=self.ip,
            action=self.action,
            entity_type=self.entity_type,
            entity_id=self.entity_id,
            outcome=self.outcome,
            details=self.details,
            prev_hash=self.prev_hash,
        )

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view (for the API and exports)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "org_id": _str(self.org_id),
            "actor_user_id": _str(self.actor_user_id),
            "actor_api_key_id": _str(self.actor_api_key_id),
            "request_id": self.request_id,
            "ip": self.ip,
            "action": self.action,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "outcome": self.outcome,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


_COLUMNS = (
    AuditEntry.id,
    AuditEntry.at,
    AuditEntry.org_id,
    AuditEntry.actor_user_id,
    AuditEntry.actor_api_key_id,
    AuditEntry.request_id,
    AuditEntry.ip,
    AuditEntry.action,
    AuditEntry.entity_type,
    AuditEntry.entity_id,
    AuditEntry.outcome,
    AuditEntry.details,
    AuditEntry.prev_hash,
    AuditEntry.hash,
)


def _str(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def chain_key(org_id: uuid.UUID | None) -> str:
    """The chain of an organization, or the platform chain."""
    return PLATFORM_CHAIN if org_id is None else str(org_id)


def genesis_hash(chain: str) -> str:
    """What the first row of ``chain`` names as its predecessor (distinct per chain, so that
    ``UNIQUE (prev_hash)`` holds across chains)."""
    return hashlib.sha256(b"authkeep-audit-genesis:" + chain.encode("ascii")).hexdigest()


def _json_safe(value: Any) -> Any:
    # Values must read back from JSON (SQLite) and JSONB (PostgreSQL) exactly as hashed:
    # JSONB turns 1.0 into 1.0 but 1e20 into an integer and refuses NUL characters.
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return value.replace("\x00", "")
    return str(value).replace("\x00", "")


def normalize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """``details`` as plain JSON values that survive a round trip through either backend."""
    return _json_safe(details or {})  # type: ignore[no-any-return]


def canonical(
    *,
    org_id: uuid.UUID | None,
    actor_user_id: uuid.UUID | None,
    actor_api_key_id: uuid.UUID | None,
    request_id: str | None,
    ip: str | None,
    action: str,
    entity_type: str | None,
    entity_id: str | None,
    outcome: str,
    details: Mapping[str, Any],
) -> bytes:
    """The bytes a row's content digest covers: sorted-key, ASCII-only, whitespace-free JSON."""
    body = {
        "v": HASH_VERSION,
        "org_id": _str(org_id),
        "actor_user_id": _str(actor_user_id),
        "actor_api_key_id": _str(actor_api_key_id),
        "request_id": request_id,
        "ip": ip,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "outcome": outcome,
        "details": details,
    }
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _time_text(at: datetime) -> str:
    # Exactly what PostgreSQL's to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
    # gives, so that both sides hash the same bytes.
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def link_hash(digest: str, at: datetime, prev_hash: str) -> str:
    """SHA-256 (hex) of ``digest|at|prev_hash``: what chains a row to its predecessor."""
    return hashlib.sha256(f"{digest}|{_time_text(at)}|{prev_hash}".encode("ascii")).hexdigest()


def _digest(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(**content)).hexdigest()


def entry_hash(*, at: datetime, prev_hash: str, **content: Any) -> str:
    """The ``hash`` a row with these fields must have."""
    return link_hash(_digest(content), at, prev_hash)


def _lock_id(chain: str) -> int:
    digest = hashlib.sha256(_LOCK_NAMESPACE + chain.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _in_chain(org_id: uuid.UUID | None) -> ColumnElement[bool]:
    return AuditEntry.org_id.is_(None) if org_id is None else AuditEntry.org_id == org_id


async def lock_chain(conn: AsyncConnection, org_id: uuid.UUID | None) -> None:
    """Hold the chain's append lock until ``conn``'s transaction ends (PostgreSQL; SQLite's
    write transactions are already exclusive)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_id(chain_key(org_id))}
        )


def _head_query(org_id: uuid.UUID | None) -> Select[str]:
    # SQLite's planner walks the (org_id, id) index backwards for this, NULL included (its
    # IS NULL is an equality to it); PostgreSQL appends through authkeep_audit_append.
    return select(AuditEntry.hash).where(_in_chain(org_id)).order_by(AuditEntry.id.desc()).limit(1)


async def chain_head(conn: AsyncConnection, org_id: uuid.UUID | None) -> str:
    """The hash a new row of this chain must name as its predecessor."""
    head = (await conn.execute(_head_query(org_id))).scalar_one_or_none()
    if head is not None:
        return head
    anchor = await _purge_anchor(conn, chain_key(org_id))
    return anchor or genesis_hash(chain_key(org_id))


async def _purge_anchor(conn: AsyncConnection, chain: str) -> str | None:
    # A chain whose rows were all purged goes on from its last purged row.
    rows = await conn.execute(
        select(AuditEntry.details)
        .where(AuditEntry.action == PURGE_ACTION)
        .order_by(AuditEntry.id.desc())
    )
    for (details,) in rows:
        anchor = (details or {}).get("anchors", {}).get(chain)
        if anchor:
            return str(anchor)
    return None


def _chain_of(entry: NewEntry) -> tuple[int, str, str]:
    # What the PostgreSQL append needs to find the chain: its lock, key and genesis value.
    chain = chain_key(entry.org_id)
    return _lock_id(chain), chain, genesis_hash(chain)


def _content(entry: NewEntry) -> dict[str, Any]:
    # The fields the content digest covers (all but the chain's: at, prev_hash, hash).
    return {
        "org_id": entry.org_id,
        "actor_user_id": entry.actor_user_id,
        "actor_api_key_id": entry.actor_api_key_id,
        "request_id": entry.request_id,
        "ip": entry.ip,
        "action": entry.action,
        "entity_type": entry.entity_type,
        "entity_id": entry.entity_id,
        "outcome": entry.outcome,
        "details": normalize_details(entry.details),
    }


async def append(
    conn: AsyncConnection, entry: NewEntry, *, at: datetime | None = None
) -> EntryRecord:
    """Append ``entry`` to its chain inside ``conn``'s transaction (committed with it).

    Call it last in a transaction: the chain stays locked from here until commit.
    """
    content = _content(entry)
    details = content["details"]
    digest = _digest(content)
    if conn.dialect.name == "postgresql":
        lock, chain, genesis = _chain_of(entry)
        row = (
            await conn.execute(
                text(
                    "SELECT id, at, prev_hash, hash FROM authkeep_audit_append("
                    "CAST(:lock AS bigint), CAST(:chain AS text), CAST(:genesis AS text), "
                    "CAST(:digest AS text), CAST(:at AS timestamptz), CAST(:org_id AS uuid), "
                    "CAST(:actor_user_id AS uuid), CAST(:actor_api_key_id AS uuid), "
                    "CAST(:request_id AS text), CAST(:ip AS text), CAST(:action AS text), "
                    "CAST(:entity_type AS text), CAST(:entity_id AS text), "
                    "CAST(:outcome AS text), CAST(:details AS jsonb))"
                ),
                {
                    "lock": lock,
                    "chain": chain,
                    "genesis": genesis,
                    "digest": digest,
                    "at": at,
                    **content,
                    # Serialised here: SQLAlchemy's asyncpg codec for jsonb takes JSON text.
                    "details": json.dumps(details, allow_nan=False),
                },
            )
        ).one()
        stored_at = row[1] if row[1].tzinfo else row[1].replace(tzinfo=UTC)
        return EntryRecord(id=int(row[0]), at=stored_at, prev_hash=row[2], hash=row[3], **content)
    prev = await chain_head(conn, entry.org_id)
    # The time is read after the lock (SQLite: the write transaction), so it never goes
    # backwards along a chain.
    when = at or utcnow()
    fields: dict[str, Any] = {"at": when, **content, "prev_hash": prev}
    digest_hash = link_hash(digest, when, prev)
    row_id = (
        await conn.execute(
            insert(AuditEntry).values(**fields, hash=digest_hash).returning(AuditEntry.id)
        )
    ).scalar_one()
    return EntryRecord(id=int(row_id), hash=digest_hash, **fields)


async def append_at_commit(
    conn: AsyncConnection,
    entry: NewEntry,
    *,
    alone: bool = False,
) -> None:
    """Append ``entry`` when ``conn``'s transaction commits (PostgreSQL: through
    ``audit_pending`` and its deferred trigger; SQLite, whose write transactions are already
    exclusive: at once, with :func:`append`). Its id and hash exist only after the commit.
    ``alone``: the row is the only statement of its transaction (``AuditLog.record_alone``),
    which may then run as one autocommitted statement."""
    if conn.dialect.name != "postgresql":
        await append(conn, entry)
        return
    # Straight to the driver, on the transaction's own connection: this runs on every
    # audited request, and SQLAlchemy's execution machinery costs more than the insert.
    raw = await conn.get_raw_connection()
    if not alone and not raw.driver_connection.is_in_transaction():  # type: ignore[union-attr]
        # SQLAlchemy sends BEGIN with the transaction's first statement of its own: were
        # this insert the first, it would run (and commit) outside the transaction, and a
        # rollback of the change would leave its audit row behind.
        await conn.exec_driver_sql("SELECT 1")
    await raw.driver_connection.execute(  # type: ignore[union-attr]
        _PENDING_INSERT, *pending_values(entry)
    )


_PENDING_PARAMS = 14
_PENDING_COLUMNS = (
    "lock, chain, genesis, digest, org_id, actor_user_id, actor_api_key_id, request_id, ip, "
    "action, entity_type, entity_id, outcome, details"
)


def pending_insert_sql(first: int = 1) -> str:
    """PostgreSQL: the ``INSERT INTO audit_pending`` that queues one row for its chain (the
    deferred trigger of :func:`postgres_pending_trigger` appends it when the transaction
    commits), with its 14 placeholders numbered from ``$first``; :func:`pending_values`
    gives their values. :func:`append_at_commit` runs it alone; a statement that writes a
    change and its audit row together carries it as a data-modifying CTE
    (:func:`authkeep.db.sessions.open_session`)."""
    values = ", ".join(f"${n}" for n in range(first, first + _PENDING_PARAMS))
    # Only placeholders are formatted in: numbers made here, never input.
    return f"INSERT INTO audit_pending ({_PENDING_COLUMNS}) VALUES ({values})"  # noqa: S608


def pending_values(entry: NewEntry) -> list[Any]:
    """The values of :func:`pending_insert_sql`'s placeholders for ``entry``, its address
    already sealed (``authkeep.db.audit_ips.seal``)."""
    content = _content(entry)
    return [
        *_chain_of(entry),
        _digest(content),
        entry.org_id,
        entry.actor_user_id,
        entry.actor_api_key_id,
        entry.request_id,
        entry.ip,
        entry.action,
        entry.entity_type,
        entry.entity_id,
        entry.outcome,
        # The connection's jsonb codec takes JSON text.
        json.dumps(content["details"], allow_nan=False),
    ]


_PENDING_INSERT = pending_insert_sql()


def postgres_pending_trigger(schema: str) -> list[str]:
    """The deferred trigger that appends each ``audit_pending`` row at COMMIT."""
    q = audit_guard.quote_ident(schema)
    return [
        f"""
CREATE OR REPLACE FUNCTION {q}.authkeep_audit_seal()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $seal$
BEGIN
    PERFORM {q}.authkeep_audit_append(
        NEW.lock, NEW.chain, NEW.genesis, NEW.digest, NULL::timestamptz, NEW.org_id,
        NEW.actor_user_id, NEW.actor_api_key_id, NEW.request_id, NEW.ip, NEW.action,
        NEW.entity_type, NEW.entity_id, NEW.outcome, NEW.details);
    DELETE FROM {q}.audit_pending WHERE id = NEW.id;
    RETURN NULL;
END
$seal$
""",  # noqa: S608  (schema is a quoted identifier read from the server, not input)
        f"""
CREATE CONSTRAINT TRIGGER authkeep_audit_seal
AFTER INSERT ON {q}.audit_pending
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION {q}.authkeep_audit_seal()
""",
    ]


# Why the head query is not "WHERE org_id = $1 ORDER BY id DESC LIMIT 1": with an equality,
# PostgreSQL drops org_id from the wanted order, so the primary key's backward scan gives
# "id DESC" as well, and the planner often prefers it, filtering org_id row by row from the
# newest row: a cost of every row appended to other chains since this chain's last one (for
# a quiet organization in a busy log, the whole table). IS NULL is no equality to the
# planner, so the platform chain's head was a bitmap scan of the whole chain and a sort.
# Both grew with the table (bench/webhooks.py: +1 ms per 4,000 rows). A range (>= $1 AND
# <= $1) and the order "org_id DESC, id DESC" leave the (org_id, id) index as the only plan
# without a sort: one index step, whatever the statistics say (migration 0015).


def postgres_append_function(schema: str) -> str:
    """``authkeep_audit_append``: the whole locked part of an append, in one call.

    Runs with the caller's rights (the app role may insert into ``audit_log``); its
    ``search_path`` is pinned and the table schema-qualified, as for the guard trigger. The
    chain's head is found in one index step, never by a scan (see the comment above).
    """
    table = f"{audit_guard.quote_ident(schema)}.audit_log"
    head = "SELECT a.hash, a.at INTO v_prev, v_head_at FROM " + table + " AS a WHERE "  # noqa: S608
    return f"""
CREATE OR REPLACE FUNCTION {audit_guard.quote_ident(schema)}.authkeep_audit_append(
    p_lock bigint, p_chain text, p_genesis text, p_digest text, p_at timestamptz,
    p_org_id uuid, p_actor_user_id uuid, p_actor_api_key_id uuid, p_request_id text,
    p_ip text, p_action text, p_entity_type text, p_entity_id text, p_outcome text,
    p_details jsonb)
RETURNS TABLE (id bigint, at timestamptz, prev_hash text, hash text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $append$
DECLARE
    v_prev text;
    v_head_at timestamptz;
    v_at timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    -- Read after the lock: a statement of a volatile function sees what committed before it.
    -- The head: one backward step of the (org_id, id) index, written so that no other plan
    -- gives this order (authkeep/db/audit.py, above postgres_append_function).
    IF p_org_id IS NULL THEN
        {head}a.org_id IS NULL ORDER BY a.org_id DESC NULLS FIRST, a.id DESC LIMIT 1;
    ELSE
        {head}a.org_id >= p_org_id AND a.org_id <= p_org_id
            ORDER BY a.org_id DESC, a.id DESC LIMIT 1;
    END IF;
    IF v_prev IS NULL THEN
        -- A chain whose rows were all purged goes on from its last purged row.
        SELECT a.details -> 'anchors' ->> p_chain INTO v_prev FROM {table} AS a
        WHERE a.action = '{PURGE_ACTION}' AND coalesce(a.details -> 'anchors' ->> p_chain, '') <> ''
        ORDER BY a.id DESC LIMIT 1;
        v_prev := coalesce(v_prev, p_genesis);
    END IF;
    -- Never backwards along a chain, whatever the clocks of the app's hosts say.
    v_at := coalesce(p_at, greatest(clock_timestamp(), v_head_at));
    RETURN QUERY
    INSERT INTO {table} AS a (at, org_id, actor_user_id, actor_api_key_id, request_id, ip,
                              action, entity_type, entity_id, outcome, details, prev_hash,
                              hash)
    VALUES (v_at, p_org_id, p_actor_user_id, p_actor_api_key_id, p_request_id, p_ip,
            p_action, p_entity_type, p_entity_id, p_outcome, p_details, v_prev,
            encode(sha256(convert_to(p_digest || '|' || to_char(v_at AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.US') || '|' || v_prev, 'UTF8')), 'hex'))
    RETURNING a.id, a.at, a.prev_hash::text, a.hash::text;
END
$append$
"""  # noqa: S608  (schema is a quoted identifier read from the server, not input)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which rows a search or export returns. ``org_ids`` None means every chain; an empty
    collection means none; ``platform`` adds the platform chain to ``org_ids``."""

    org_ids: Sequence[uuid.UUID] | None = None
    platform: bool = False
    actor_user_id: uuid.UUID | None = None
    actor_api_key_id: uuid.UUID | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses."""
        found: list[ColumnElement[bool]] = []
        if self.org_ids is not None:
            scope = AuditEntry.org_id.in_(list(self.org_ids))
            found.append(scope | AuditEntry.org_id.is_(None) if self.platform else scope)
        for column, value in (
            (AuditEntry.actor_user_id, self.actor_user_id),
            (AuditEntry.actor_api_key_id, self.actor_api_key_id),
            (AuditEntry.action, self.action),
            (AuditEntry.entity_type, self.entity_type),
            (AuditEntry.entity_id, self.entity_id),
            (AuditEntry.outcome, self.outcome),
        ):
            if value is not None:
                found.append(column == value)
        if self.since is not None:
            found.append(AuditEntry.at >= self.since)
        if self.until is not None:
            found.append(AuditEntry.at < self.until)
        return found


def _record(row: Sequence[Any]) -> EntryRecord:
    return EntryRecord(*row)


def _select(where: AuditFilter) -> Select[Any]:
    return select(*_COLUMNS).where(and_(True, *where.conditions()))


async def search(
    conn: AsyncConnection, where: AuditFilter, *, before_id: int | None, limit: int
) -> list[EntryRecord]:
    """Newest first: up to ``limit`` rows with ``id < before_id``."""
    stmt = _select(where)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    rows = await conn.execute(stmt.order_by(AuditEntry.id.desc()).limit(limit))
    return [_record(row) for row in rows]


async def walk(
    conn: AsyncConnection,
    where: AuditFilter | None = None,
    *,
    batch: int = 1000,
    after: int = 0,
) -> AsyncIterator[EntryRecord]:
    """Every matching row with ``id > after``, oldest first, fetched ``batch`` rows at a
    time (keyset paging, so memory stays flat and no cursor stays open on the server)."""
    stmt = _select(where or AuditFilter()).order_by(AuditEntry.id)
    while True:
        rows = (await conn.execute(stmt.where(AuditEntry.id > after).limit(batch))).all()
        for row in rows:
            yield _record(row)
        if len(rows) < batch:
            return
        after = rows[-1][0]


# -- one user's rows (the data export, services/privacy/export.py) --------------------------


def _about(user_id: uuid.UUID) -> ColumnElement[bool]:
    # Two indexed conditions (actor; entity type and id): PostgreSQL ORs two index scans.
    return (AuditEntry.actor_user_id == user_id) | and_(
        AuditEntry.entity_type == "user", AuditEntry.entity_id == str(user_id)
    )


async def about_user(conn: AsyncConnection, user_id: uuid.UUID, *, limit: int) -> list[EntryRecord]:
    """The rows about one user, newest first, at most ``limit``: those where the user acted
    (``actor_user_id``: with a session, or through one of their API keys) and those whose
    entity is the user (``entity_type`` ``user``), whoever acted."""
    rows = await conn.execute(
        select(*_COLUMNS).where(_about(user_id)).order_by(AuditEntry.id.desc()).limit(limit)
    )
    return [_record(row) for row in rows]


async def orgs_acted_in(conn: AsyncConnection, user_id: uuid.UUID, action: str) -> list[uuid.UUID]:
    """The organizations in whose chains ``user_id`` is the actor of an ``action`` row."""
    rows = await conn.execute(
        select(AuditEntry.org_id)
        .where(
            AuditEntry.actor_user_id == user_id,
            AuditEntry.action == action,
            AuditEntry.org_id.is_not(None),
        )
        .distinct()
    )
    return sorted(org_id for (org_id,) in rows if org_id is not None)


async def chain_tips(
    conn: AsyncConnection, org_ids: Sequence[uuid.UUID | None]
) -> dict[str, tuple[int, str]]:
    """The newest row (id, hash) of each chain named by ``org_ids`` (None: the platform
    chain), by chain key; a chain without rows is left out. One backward step of the
    ``(org_id, id)`` index per chain, written as the append's head query is (see above
    :func:`postgres_append_function`): no other plan gives that order."""
    tips: dict[str, tuple[int, str]] = {}
    for org_id in org_ids:
        stmt = select(AuditEntry.id, AuditEntry.hash)
        if org_id is None:
            stmt = stmt.where(AuditEntry.org_id.is_(None)).order_by(
                AuditEntry.org_id.desc().nulls_first(), AuditEntry.id.desc()
            )
        else:
            stmt = stmt.where(AuditEntry.org_id >= org_id, AuditEntry.org_id <= org_id).order_by(
                AuditEntry.org_id.desc(), AuditEntry.id.desc()
            )
        row = (await conn.execute(stmt.limit(1))).first()
        if row is not None:
            tips[chain_key(org_id)] = (int(row[0]), str(row[1]))
    return tips


@dataclass(frozen=True, slots=True)
class HeadRow:
    """The newest row of a chain, and how many rows the chain holds."""

    org_id: uuid.UUID | None
    head_id: int
    head_hash: str
    head_at: datetime
    rows: int

    @property
    def chain(self) -> str:
        """The chain's key."""
        return chain_key(self.org_id)


async def chain_heads(conn: AsyncConnection) -> list[HeadRow]:
    """Every chain's head row and row count (one pass over the ``(org_id, id)`` index)."""
    tops = (
        await conn.execute(
            select(AuditEntry.org_id, func.max(AuditEntry.id), func.count()).group_by(
                AuditEntry.org_id
            )
        )
    ).all()
    counts = {int(top[1]): int(top[2]) for top in tops}
    heads = []
    ids = sorted(counts)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        found = await conn.execute(
            select(AuditEntry.id, AuditEntry.org_id, AuditEntry.hash, AuditEntry.at).where(
                AuditEntry.id.in_(chunk)
            )
        )
        for row_id, org_id, row_hash, at in found:
            heads.append(HeadRow(org_id, int(row_id), str(row_hash), at, counts[int(row_id)]))
    return sorted(heads, key=lambda head: head.chain)


async def purge_anchors(conn: AsyncConnection) -> dict[str, set[str]]:
    """Per chain, the hashes of last purged rows recorded by purges still in the log: the
    first surviving row of a purged chain names one of them as its predecessor."""
    found: dict[str, set[str]] = {}
    rows = await conn.execute(select(AuditEntry.details).where(AuditEntry.action == PURGE_ACTION))
    for (details,) in rows:
        for chain, anchor in ((details or {}).get("anchors") or {}).items():
            found.setdefault(str(chain), set()).add(str(anchor))
    return found


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What a purge will remove from one chain: rows up to ``last_id``, the newest of them
    having ``last_hash`` (the anchor the chain's first surviving row names)."""

    org_id: uuid.UUID | None
    last_id: int
    last_hash: str
    rows: int

    @property
    def chain(self) -> str:
        """The chain's key."""
        return chain_key(self.org_id)


async def plan_purge(conn: AsyncConnection, cutoff: datetime) -> list[PurgePlan]:
    """Per chain, the longest run of oldest rows that are all older than ``cutoff``.

    Only a prefix of each chain is ever removed, never a row in the middle, so every
    surviving link stays checkable. Each planned chain stays locked until the transaction
    ends, so the plan cannot go stale.
    """
    chains = list(
        (
            await conn.execute(select(AuditEntry.org_id).where(AuditEntry.at < cutoff).distinct())
        ).scalars()
    )
    plans = []
    for org_id in chains:
        await lock_chain(conn, org_id)
        keep_from = (
            await conn.execute(
                select(func.min(AuditEntry.id)).where(_in_chain(org_id), AuditEntry.at >= cutoff)
            )
        ).scalar_one_or_none()
        doomed = _in_chain(org_id)
        if keep_from is not None:
            doomed = and_(doomed, AuditEntry.id < keep_from)
        last = (
            await conn.execute(
                select(AuditEntry.id, AuditEntry.hash)
                .where(doomed)
                .order_by(AuditEntry.id.desc())
                .limit(1)
            )
        ).first()
        if last is None:
            continue
        count = (
            await conn.execute(select(func.count()).select_from(AuditEntry).where(doomed))
        ).scalar_one()
        plans.append(PurgePlan(org_id, int(last[0]), str(last[1]), int(count)))
    return plans


async def execute_purge(conn: AsyncConnection, plans: Sequence[PurgePlan]) -> int:
    """Delete what :func:`plan_purge` planned; returns the number of rows deleted.

    On SQLite the DELETE trigger is dropped and recreated inside this transaction (DDL is
    transactional there, and ``BEGIN IMMEDIATE`` keeps other writers out meanwhile); on
    PostgreSQL the connection must be the purge role's, and the trigger checks each row.
    """
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        await conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
    deleted = 0
    for plan in plans:
        result = await conn.execute(
            delete(AuditEntry).where(_in_chain(plan.org_id), AuditEntry.id <= plan.last_id)
        )
        deleted += int(result.rowcount)
    if sqlite:
        await conn.exec_driver_sql(audit_guard.SQLITE_NO_DELETE)
    return deleted
