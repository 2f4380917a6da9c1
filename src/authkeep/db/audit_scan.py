"""Every audit row, oldest first, read and re-hashed as fast as Python allows: what
``authkeep audit verify`` walks (ten million rows in under a minute on a small machine).

:func:`pages` yields the rows in pages of :data:`ScanRow` — plain strings by position, in
id order — and the function :func:`row_hasher` makes recomputes a row's ``hash`` from one.
Together they give exactly what :func:`~authkeep.db.audit.entry_hash` gives for the same
:class:`~authkeep.db.audit.EntryRecord` (a property test holds them equal); only the cost
differs:

* **No per-row objects of our own**: on PostgreSQL the driver's records are read straight
  from keyset pages (``id > last ORDER BY id LIMIT n``: memory stays bounded and the primary
  key index walks the table in order), with the next page requested before the current one
  is hashed, so the server works while Python hashes.
* **The server formats**: the time comes as the exact text the chain hashes (``to_char``, as
  ``authkeep_audit_append`` writes it) and UUIDs as text, instead of being decoded into
  ``datetime`` and ``UUID`` objects and formatted again here.
* **Pre-encoded JSON**: the canonical content (:func:`~authkeep.db.audit.canonical`) is a
  fixed template of sorted keys whose values are quoted by the C encoder, instead of a
  dictionary sorted and serialised per row; ``details`` is parsed and re-serialised once
  per distinct stored value (a page of sign-ins repeats the same few).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator, Callable, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import audit as audit_rows
from authkeep.db.base import BIGINT_MAX
from authkeep.db.models import AuditEntry

__all__ = ["PAGE", "ScanRow", "id_bounds", "id_span", "pages", "row_hasher", "scan_row"]

PAGE = 10_000
"""Rows per page: large enough that a round trip is noise, small enough for flat memory."""

ScanRow = Sequence[Any]
"""One row as :func:`pages` yields it, by position (the order of ``audit_log``'s columns):
``id`` (int); ``at`` as the chain hashes it (``YYYY-MM-DDTHH:MM:SS.ffffff``, UTC); ``org_id``,
``actor_user_id``, ``actor_api_key_id`` as text or None; ``request_id``, ``ip``, ``action``,
``entity_type``, ``entity_id``, ``outcome`` as stored; ``details`` as JSON text (any
serialisation of the stored value); ``prev_hash``; ``hash``."""

_DETAILS = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
).encode
_MEMO_SIZE = 4096
# ``canonical``'s body: its keys in the order ``sort_keys`` puts them (guarded below).
_KEYS = (
    "action",
    "actor_api_key_id",
    "actor_user_id",
    "details",
    "entity_id",
    "entity_type",
    "ip",
    "org_id",
    "outcome",
    "request_id",
    "v",
)
if sorted(_KEYS) != list(_KEYS):  # pragma: no cover - a guard on the constant above
    raise RuntimeError("audit_scan._KEYS must be sorted")
_BODY = "{" + ",".join(f'"{key}":%s' for key in _KEYS) + "}"


def row_hasher() -> Callable[[ScanRow], str]:
    """A function that returns the ``hash`` a :data:`ScanRow` must have: the value
    :func:`~authkeep.db.audit.entry_hash` gives for the same row.

    :func:`~authkeep.db.audit.canonical` serialises a dictionary with sorted keys; here the
    same body is a template of those keys in that order (:data:`_KEYS`), each value quoted
    by the C encoder ``json.dumps`` itself uses. ``details`` is parsed and re-serialised
    canonically once per distinct stored text (a page of sign-ins repeats a few), in a memo
    that is emptied when full, so memory stays flat whatever the log holds.
    """
    quote = encode_basestring_ascii
    sha256 = hashlib.sha256
    loads = json.loads
    details_memo: dict[str, str] = {}
    version = str(audit_rows.HASH_VERSION)

    def hash_row(row: ScanRow) -> str:
        (_, at, org, user, key, request, ip, action, kind, entity, outcome, details, prev) = row[
            :13
        ]
        canonical = details_memo.get(details)
        if canonical is None:
            if len(details_memo) >= _MEMO_SIZE:
                details_memo.clear()
            canonical = details_memo[details] = _DETAILS(loads(details))
        body = _BODY % (
            quote(action),
            "null" if key is None else quote(key),
            "null" if user is None else quote(user),
            canonical,
            "null" if entity is None else quote(entity),
            "null" if kind is None else quote(kind),
            "null" if ip is None else quote(ip),
            "null" if org is None else quote(org),
            quote(outcome),
            "null" if request is None else quote(request),
            version,
        )
        digest = sha256(body.encode("ascii")).hexdigest()
        # UTF-8, not ASCII: a tampered prev_hash with other characters must fail the
        # comparison the caller makes, not raise here.
        return sha256(f"{digest}|{at}|{prev}".encode()).hexdigest()

    return hash_row


def scan_row(record: audit_rows.EntryRecord) -> tuple[Any, ...]:
    """``record`` as a :data:`ScanRow` (the SQLite path, and tests)."""
    return (
        record.id,
        audit_rows._time_text(record.at),
        _text(record.org_id),
        _text(record.actor_user_id),
        _text(record.actor_api_key_id),
        record.request_id,
        record.ip,
        record.action,
        record.entity_type,
        record.entity_id,
        record.outcome,
        json.dumps(record.details),
        record.prev_hash,
        record.hash,
    )


_PG_PAGE = (
    "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), "
    "org_id::text, actor_user_id::text, actor_api_key_id::text, request_id, ip, action, "
    "entity_type, entity_id, outcome, details::text, prev_hash, hash "
    "FROM audit_log WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3"
)


async def pages(
    conn: AsyncConnection, *, page: int | None = None, after: int = 0, upto: int = BIGINT_MAX
) -> AsyncGenerator[list[ScanRow], None]:
    """Every row with ``after < id <= upto``, oldest first, ``page`` rows (default
    :data:`PAGE`) at a time. Run it inside one snapshot (``audit_admin.snapshot``): pages are
    separate statements. Close it before the transaction ends when stopping early
    (``contextlib.aclosing``)."""
    page = page or PAGE
    if conn.dialect.name == "postgresql":
        # Closed with this generator: its clean-up must run before the caller's next query.
        async with contextlib.aclosing(_postgres_pages(conn, page, after, upto)) as stream:
            async for found in stream:
                yield found
        return
    rows: list[ScanRow] = []
    async for record in audit_rows.walk(conn, batch=page, after=after):
        if record.id > upto:
            break
        rows.append(scan_row(record))
        if len(rows) == page:
            yield rows
            rows = []
    if rows:
        yield rows


async def id_bounds(conn: AsyncConnection) -> tuple[int, int] | None:
    """The lowest and highest id in the log (None when it is empty): two index look-ups."""
    low, high = (await conn.execute(select(func.min(AuditEntry.id), func.max(AuditEntry.id)))).one()
    return None if low is None else (int(low), int(high))


async def id_span(conn: AsyncConnection) -> int:
    """How many rows :func:`pages` will yield, estimated from the id range (exact unless a
    rolled-back append skipped an id), where ``count(*)`` would read the whole index."""
    bounds = await id_bounds(conn)
    return 0 if bounds is None else bounds[1] - bounds[0] + 1


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def _postgres_pages(
    conn: AsyncConnection, page: int, after: int, upto: int
) -> AsyncGenerator[list[ScanRow], None]:
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    fetching = asyncio.ensure_future(driver.fetch(_PG_PAGE, after, upto, page))
    try:
        while True:
            records: list[ScanRow] = await fetching
            if len(records) == page:
                # Ask for the next page now: the server reads and sends it meanwhile.
                fetching = asyncio.ensure_future(driver.fetch(_PG_PAGE, records[-1][0], upto, page))
                await asyncio.sleep(0)
            if records:
                # The driver's records as they are: indexable like a tuple, and one object
                # per row fewer to build.
                yield records
            if len(records) < page:
                return
    finally:
        # A caller that stops early (a broken link) leaves one page in flight: let it finish
        # rather than cancel it, which would abort the caller's transaction on the server.
        with contextlib.suppress(Exception):
            await fetching
