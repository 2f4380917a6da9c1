"""Reading the audit trail: the query API's rules, export, chain verification, retention.

* :class:`AuditReader` — who may read which rows (:meth:`AuditReader.scope_for`), cursor
  paging newest first, JSON-lines export. Every query is itself recorded
  (``audit.queried``): reading the trail is an event an investigator wants to see.
* :func:`verify` — walks every chain in one database snapshot and reports the first row
  whose content no longer matches its hash or whose link to its predecessor is broken.
* :func:`purge` — the one deletion: rows older than the retention, a prefix of each chain,
  with a ``audit.purged`` row recording each chain's new anchor (so verification goes on).

Readers (the query API, the export) see each row's client address in clear
(:class:`ReadEntry`; null once the account's key is destroyed) beside the value as stored,
which is what the hash covers: verification, here or by a client, never needs a key.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import audit as audit_rows
from authkeep.db import audit_ips
from authkeep.db.audit import AuditFilter, EntryRecord
from authkeep.db.base import BIGINT_MAX, utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditPolicy
from authkeep.errors import PermissionDenied, PolicyViolation
from authkeep.security.envelope import Envelope
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo

MAX_PAGE = 500
_CURSOR_PREFIX = "a1:"
_CURSOR_ID = re.compile(r"[1-9][0-9]{0,18}")  # ASCII digits only: int() takes any script's


@dataclass(frozen=True, slots=True)
class AuditScope:
    """The rows a reader may see: ``org_ids`` None means every organization's; ``platform``
    adds platform events (org_id NULL)."""

    org_ids: frozenset[uuid.UUID] | None
    platform: bool


EVERYTHING = AuditScope(None, True)


def encode_cursor(last_id: int) -> str:
    """An opaque cursor that resumes after row ``last_id``."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The row id inside a cursor; PolicyViolation when it is not one of ours.

    The id is bounded to what the id column holds: ``a1:99999999999999999999999`` once
    reached the driver, which failed with an overflow (a 500)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise PolicyViolation("Invalid cursor") from None
    digits = raw.removeprefix(_CURSOR_PREFIX)
    if digits == raw or not _CURSOR_ID.fullmatch(digits) or int(digits) > BIGINT_MAX:
        raise PolicyViolation("Invalid cursor")
    return int(digits)


@dataclass(frozen=True, slots=True)
class ReadEntry:
    """A row as its readers see it: the stored row and its client address in clear."""

    record: EntryRecord
    ip: str | None
    """The address (None: none recorded, or the account's key was destroyed)."""

    @property
    def id(self) -> int:
        """The row's id."""
        return self.record.id

    def as_json(self) -> dict[str, Any]:
        """The API's and the export's view: ``ip`` in clear, ``ip_stored`` as stored and
        hashed (sealed; a clear address on rows from before encryption)."""
        return {**self.record.as_json(), "ip": self.ip, "ip_stored": self.record.ip}


async def read_entries(
    conn: AsyncConnection, envelope: Envelope | None, rows: list[EntryRecord]
) -> list[ReadEntry]:
    """``rows`` with their addresses opened (the actors' keys read in one query)."""
    ips = await audit_ips.reveal(conn, envelope, rows)
    return [ReadEntry(row, ip) for row, ip in zip(rows, ips, strict=True)]


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of rows, newest first, and the cursor of the next (None at the end)."""

    items: list[ReadEntry]
    next_cursor: str | None


class AuditReader:
    """Query and export the audit trail, within the caller's scope."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    def scope_for(self, principal: object) -> AuditScope | None:
        """What ``principal`` may read, or None (403).

        Platform admins (``is_superuser``) read everything. Hook for organizations: an org
        admin gets ``AuditScope(frozenset({org_id}), platform=False)`` — wire it here.
        """
        user = getattr(principal, "user", None)
        if user is not None and getattr(user, "is_superuser", False):
            return EVERYTHING
        return None

    @staticmethod
    def _within(scope: AuditScope, where: AuditFilter) -> AuditFilter:
        if scope.org_ids is None:
            return where
        if where.org_ids is not None:
            asked = set(where.org_ids)
            allowed = asked & scope.org_ids
            return replace(
                where, org_ids=sorted(allowed), platform=where.platform and scope.platform
            )
        return replace(where, org_ids=sorted(scope.org_ids), platform=scope.platform)

    async def page(
        self,
        principal: object,
        where: AuditFilter,
        *,
        cursor: str | None = None,
        limit: int = 100,
        info: RequestInfo | None = None,
    ) -> AuditPage:
        """Rows matching ``where`` within the principal's scope, newest first."""
        scope = self.scope_for(principal)
        if scope is None:
            raise PermissionDenied()
        limit = max(1, min(limit, MAX_PAGE))
        before = decode_cursor(cursor) if cursor else None
        effective = self._within(scope, where)
        async with self._db.reading() as conn:
            rows = await audit_rows.search(conn, effective, before_id=before, limit=limit + 1)
            items = await read_entries(conn, self._audit.envelope, rows[:limit])
        await self._audit.record_alone(
            AuditEvent(
                Action.AUDIT_QUERIED,
                actor=Actor.of(principal),
                details={"filters": _describe(where), "rows": min(len(rows), limit)},
            ),
            info,
        )
        more = len(rows) > limit
        return AuditPage(items, encode_cursor(items[-1].id) if more and items else None)


def _describe(where: AuditFilter) -> dict[str, object]:
    described: dict[str, object] = {}
    for name in (
        "actor_user_id",
        "actor_api_key_id",
        "action",
        "entity_type",
        "entity_id",
        "outcome",
        "since",
        "until",
    ):
        value = getattr(where, name)
        if value is not None:
            described[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    if where.org_ids is not None:
        described["org_ids"] = [str(org) for org in where.org_ids]
    if where.platform:
        described["platform"] = True
    return described


@asynccontextmanager
async def snapshot(db: Database) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction that sees one consistent state of the database.

    On PostgreSQL, ids are taken at INSERT and rows of different chains commit in any order,
    so reading batch after batch outside a snapshot could miss a row that committed late and
    report a link as broken.
    """
    async with db.engine.connect() as conn:
        if db.is_postgres:
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            if db.is_postgres:
                await conn.execute(text("SET TRANSACTION READ ONLY"))
            yield conn


async def export(
    db: Database,
    where: AuditFilter | None = None,
    *,
    envelope: Envelope | None = None,
    batch: int = 1000,
) -> AsyncIterator[ReadEntry]:
    """Every matching row, oldest first, from one snapshot, its address opened with
    ``envelope`` (without one, only addresses from before encryption show)."""
    async with snapshot(db) as conn:
        pending: list[EntryRecord] = []
        async for row in audit_rows.walk(conn, where, batch=batch):
            pending.append(row)
            if len(pending) >= batch:
                for entry in await read_entries(conn, envelope, pending):
                    yield entry
                pending = []
        for entry in await read_entries(conn, envelope, pending):
            yield entry


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first row that fails verification."""

    row_id: int
    chain: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest row of a chain: publish ``hash`` elsewhere to detect a rewritten tail."""

    chain: str
    rows: int
    head_id: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of :func:`verify`."""

    rows: int
    chains: list[ChainHead]
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        """True when every link held."""
        return self.broken is None


VerifyProgress = Callable[[int, int], None]
"""Called as :func:`verify` goes with (rows checked, rows expected): the second is an
estimate from the id range, exact unless ids were skipped (a rolled-back append)."""


async def verify(
    db: Database, progress: VerifyProgress | None = None, *, jobs: int = 1
) -> Verification:
    """Walk every chain oldest first; stop at the first row that fails.

    A row fails when its stored hash differs from the hash of its content (the row was
    edited), or when its ``prev_hash`` is not the hash of the previous row of its chain (a
    row before it was deleted, inserted or reordered). The first row of a chain must name the
    chain's genesis value, or the anchor a retention purge recorded.

    Streams the log in pages, with flat memory; ``jobs`` > 1 walks a large log on PostgreSQL
    in that many processes, with the same result (:mod:`authkeep.services.audit_verify`).
    ``progress`` hears about the rows checked as the walk goes.
    """
    # Imported here: that module builds on this one's results and snapshot.
    from authkeep.services import audit_verify

    return await audit_verify.verify(db, progress, jobs=jobs)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What :func:`purge` did."""

    cutoff: datetime
    retention_days: int
    deleted: int
    anchors: dict[str, str]


async def purge(db: Database, *, retention_days: int) -> PurgeReport:
    """Delete audit rows older than the retention (the larger of ``retention_days`` and the
    database's ``audit_policy``), in one transaction, and record the purge.

    On PostgreSQL ``db`` must connect as the purge role; the guard trigger refuses anyone
    else, and any row younger than the policy's retention.
    """
    async with db.transaction() as conn:
        policy_days = (
            await conn.execute(select(AuditPolicy.retention_days).where(AuditPolicy.id == 1))
        ).scalar_one_or_none()
        days = max(retention_days, policy_days or 0)
        # The trigger compares with the transaction's now(): use the same clock.
        now = (
            (await conn.execute(text("SELECT now()"))).scalar_one() if db.is_postgres else utcnow()
        )
        cutoff = now - timedelta(days=days)
        plans = await audit_rows.plan_purge(conn, cutoff)
        anchors = {plan.chain: plan.last_hash for plan in plans}
        if plans:
            # Written even with AUTHKEEP_AUDIT_ENABLED=false: without the anchors it
            # carries, the purged chains would no longer verify.
            await audit_rows.append(
                conn,
                AuditLog.entry(
                    AuditEvent(
                        Action.AUDIT_PURGED,
                        details={
                            "cutoff": cutoff.isoformat(),
                            "retention_days": days,
                            "deleted": sum(plan.rows for plan in plans),
                            "anchors": anchors,
                        },
                    ),
                    None,
                ),
            )
        deleted = await audit_rows.execute_purge(conn, plans)
    return PurgeReport(cutoff, days, deleted, anchors)
