"""Reading the audit trail: the query API's rules, export, chain verification, retention.

* :class:`AuditReader` — who may read which rows (:meth:`AuditReader.scope_for`), cursor
  paging newest first, JSON-lines export. Every query is itself recorded
  (``audit.queried``): reading the trail is an event an investigator wants to see.
* :func:`verify` — walks every chain in one database snapshot and reports the first row
  whose content no longer matches its hash or whose link to its predecessor is broken.
* :func:`purge` — the one deletion: rows older than the retention, a prefix of each chain,
  with a ``audit.purged`` row recording each chain's new anchor (so verification goes on).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import audit as audit_rows
from authkeep.db.audit import AuditFilter, EntryRecord
from authkeep.db.base import BIGINT_MAX, utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditPolicy
from authkeep.errors import PermissionDenied, PolicyViolation
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
class AuditPage:
    """One page of rows, newest first, and the cursor of the next (None at the end)."""

    items: list[EntryRecord]
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
        await self._audit.record_alone(
            AuditEvent(
                Action.AUDIT_QUERIED,
                actor=Actor.of(principal),
                details={"filters": _describe(where), "rows": min(len(rows), limit)},
            ),
            info,
        )
        more = len(rows) > limit
        items = rows[:limit]
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


async def export(db: Database, where: AuditFilter | None = None) -> AsyncIterator[EntryRecord]:
    """Every matching row, oldest first, from one snapshot."""
    async with snapshot(db) as conn:
        async for row in audit_rows.walk(conn, where):
            yield row


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


async def verify(db: Database) -> Verification:
    """Walk every chain oldest first; stop at the first row that fails.

    A row fails when its stored hash differs from the hash of its content (the row was
    edited), or when its ``prev_hash`` is not the hash of the previous row of its chain (a
    row before it was deleted, inserted or reordered). The first row of a chain must name the
    chain's genesis value, or the anchor a retention purge recorded.
    """
    heads: dict[str, EntryRecord] = {}
    counts: dict[str, int] = {}
    rows = 0
    broken: BrokenLink | None = None
    async with snapshot(db) as conn:
        anchors = await audit_rows.purge_anchors(conn)
        async for row in audit_rows.walk(conn):
            rows += 1
            chain = row.chain
            previous = heads.get(chain)
            if previous is not None:
                if row.prev_hash != previous.hash:
                    broken = BrokenLink(
                        row.id,
                        chain,
                        f"prev_hash does not match row {previous.id}, the previous row of "
                        "this chain: rows between them were deleted or inserted",
                    )
            elif row.prev_hash != audit_rows.genesis_hash(chain) and row.prev_hash not in (
                anchors.get(chain, set())
            ):
                broken = BrokenLink(
                    row.id,
                    chain,
                    "first row of its chain names neither the genesis value nor a purge "
                    "anchor: earlier rows were deleted outside the retention purge",
                )
            if broken is None and row.computed_hash() != row.hash:
                broken = BrokenLink(
                    row.id, chain, "hash does not match the row's content: the row was edited"
                )
            if broken is not None:
                break
            heads[chain] = row
            counts[chain] = counts.get(chain, 0) + 1
    chains = [
        ChainHead(chain, counts[chain], head.id, head.hash) for chain, head in sorted(heads.items())
    ]
    return Verification(rows, chains, broken)


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
