"""``audit_log.ip`` encrypted at rest: sealing an entry's address, opening stored ones.

Which key (docs/privacy.md, "Audit log"):

* an entry with an actor user: that account's user key (``uk1.`` values). Erasing the
  account destroys the key, and its addresses become unreadable without a single edit of
  the append-only, hash-chained log;
* an entry without one (an anonymous failed sign-in, an API key, the system): the master
  data-key ring;
* an actor user without a key (an erased account, whose key is gone): no address is kept.
  Nothing new about an erased account is written, and the event itself is not lost.

**Context.** A sealed value is bound to where it lives (GCM associated data), normally its
row id; an audit row has none before its append (taken under the chain's lock, at COMMIT
on PostgreSQL). The address is bound instead to what the row says before the append and
still says when read: its chain, both actors, request id, action and entity. A ciphertext
copied into a row that differs in any of these does not open; rows that agree on all of
them come from the same request (same request id) and so carry the same address anyway.
The chain hashes the ciphertext: ``authkeep audit verify`` needs no key, and a row edited
to swap its address breaks its hash.

**Reading.** :func:`reveal` gives each row's address in clear; None when there is none,
when the account's key was destroyed, or when the value does not open (logged). Rows
written before encryption (migration 0013) keep their clear address — rewriting them would
break the chain — until the retention purge removes them: a stored value that is not shaped
like a sealed one is such an address and is returned as it is.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace

import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import user_keys
from authkeep.db.audit import EntryRecord, NewEntry
from authkeep.db.models import UserKey
from authkeep.security.envelope import Envelope, SealedValueError, field_context

__all__ = ["ip_context", "looks_sealed", "reveal", "seal"]

log = structlog.get_logger("authkeep.db")

# ``<kid>.<base64url(nonce 12 | ciphertext >= 1 | tag 16)>``: at least 29 bytes, 39
# characters. A clear address never has this shape (IPv4 has three dots, IPv6 colons).
_MASTER_SEALED = re.compile(r"[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]{39,}")
_KEY_QUERY_CHUNK = 500


def looks_sealed(stored: str) -> bool:
    """Whether ``stored`` is a sealed value (user key or master ring), not a clear address
    left from before encryption."""
    return Envelope.is_user_sealed(stored) or _MASTER_SEALED.fullmatch(stored) is not None


def ip_context(
    *,
    org_id: uuid.UUID | None,
    actor_user_id: uuid.UUID | None,
    actor_api_key_id: uuid.UUID | None,
    request_id: str | None,
    action: str,
    entity_type: str | None,
    entity_id: str | None,
) -> bytes:
    """The associated data of a row's sealed address (see the module docstring)."""
    # JSON, so that no value can pass for two fields ("a|b" + "c" vs "a" + "b|c").
    fields = [
        None if org_id is None else str(org_id),
        None if actor_user_id is None else str(actor_user_id),
        None if actor_api_key_id is None else str(actor_api_key_id),
        request_id,
        action,
        entity_type,
        entity_id,
    ]
    return field_context("audit_log", "ip", json.dumps(fields, separators=(",", ":")))


def _context_of(row: NewEntry | EntryRecord) -> bytes:
    return ip_context(
        org_id=row.org_id,
        actor_user_id=row.actor_user_id,
        actor_api_key_id=row.actor_api_key_id,
        request_id=row.request_id,
        action=row.action,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
    )


async def seal(conn: AsyncConnection, envelope: Envelope | None, entry: NewEntry) -> NewEntry:
    """``entry`` with its address sealed, as it will be stored and hashed.

    The actor's key is usually remembered (the request read the account already); else it
    costs one query on ``conn``. Without an envelope (a tool or test that built the audit
    log without data keys) no address is kept: it is never stored in clear.
    """
    if entry.ip is None:
        return entry
    if envelope is None:
        return replace(entry, ip=None)
    context = _context_of(entry)
    if entry.actor_user_id is None:
        return replace(entry, ip=envelope.seal(entry.ip, context=context))
    try:
        aead = await user_keys.cipher(conn, envelope, entry.actor_user_id)
    except SealedValueError:
        log.error("sealed_value_unreadable", table="user_keys", row_id=str(entry.actor_user_id))
        aead = None
    if aead is None:
        return replace(entry, ip=None)
    return replace(entry, ip=Envelope.seal_with(aead, entry.ip, context=context))


async def _ciphers(
    conn: AsyncConnection, envelope: Envelope, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, AESGCM]:
    # The key rows in one query per chunk, not one per row, even for remembered keys: a key
    # erased by another worker process may still be remembered here, and only its row's
    # absence says it is gone (cipher_for takes a remembered key without unwrapping again).
    found: dict[uuid.UUID, AESGCM] = {}
    wanted = list(set(user_ids))
    for start in range(0, len(wanted), _KEY_QUERY_CHUNK):
        chunk = wanted[start : start + _KEY_QUERY_CHUNK]
        rows = await conn.execute(
            select(UserKey.user_id, UserKey.wrapped_key).where(UserKey.user_id.in_(chunk))
        )
        for user_id, wrapped in rows:
            try:
                found[user_id] = envelope.cipher_for(user_id, wrapped)
            except SealedValueError:
                log.error("sealed_value_unreadable", table="user_keys", row_id=str(user_id))
    return found


async def reveal(
    conn: AsyncConnection, envelope: Envelope | None, rows: Sequence[EntryRecord]
) -> list[str | None]:
    """The address of each of ``rows`` in clear (None: none stored, the key was destroyed,
    or the value does not open). Without an envelope only clear legacy addresses show."""
    actors = [
        row.actor_user_id
        for row in rows
        if row.ip is not None and row.actor_user_id is not None and Envelope.is_user_sealed(row.ip)
    ]
    ciphers = await _ciphers(conn, envelope, actors) if envelope is not None and actors else {}
    return [_open(envelope, ciphers, row) for row in rows]


def _open(
    envelope: Envelope | None, ciphers: dict[uuid.UUID, AESGCM], row: EntryRecord
) -> str | None:
    stored = row.ip
    if stored is None:
        return None
    if not looks_sealed(stored):
        return stored  # written before encryption
    if envelope is None:
        return None
    try:
        if Envelope.is_user_sealed(stored):
            aead = None if row.actor_user_id is None else ciphers.get(row.actor_user_id)
            if aead is None:
                return None  # the account was erased: its key is gone, by design
            return Envelope.open_with(aead, stored, context=_context_of(row))
        return envelope.open(stored, context=_context_of(row))
    except SealedValueError:
        log.error("sealed_value_unreadable", table="audit_log", column="ip", row_id=row.id)
        return None
