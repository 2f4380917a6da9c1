"""``authkeep keys rotate-data``: move every stored secret and personal value onto the
newest data key, in batches, while the service runs.

Once a new key is first in ``AUTHKEEP_DATA_KEYS`` on every worker (old keys after it), new
values are sealed with it; what was stored before still opens with the old keys. This job
brings the rest over, phase by phase (docs/data-keys.md):

* ``user_keys``: each account's user key is unwrapped and wrapped again with the newest
  master key. The personal values sealed *with* a user key do not change: re-wrapping one
  32-byte key per account is the whole cost of rotating them.
* values sealed with the master ring directly (MFA secrets, webhook signing secrets,
  invitation addresses...): opened and sealed again.
* blind indexes (``users.email_key``...): recomputed with the newest key, so that a look-up
  needs only the newest index once the old key is gone.

Every batch is one short transaction that also records how far the phase got (the
``maintenance_positions`` table): an interrupted run goes on from there. Each row is changed
only if it still holds what the batch read (compare-and-set), so a concurrent write — which
uses the newest key already — always wins. The audit log is append-only and is never
rewritten: IP addresses sealed with an old master key stay readable as long as that key is
in the ring (:meth:`DataRotation.audit_rows_on_old_keys` says how many remain).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from authkeep.db import outbox as outbox_rows
from authkeep.db import rotation as rotation_rows
from authkeep.db import webhooks as webhook_rows
from authkeep.db.engine import Database
from authkeep.db.models import (
    AuditEntry,
    Invitation,
    OutboxMessage,
    TotpFactor,
    User,
    UserKey,
    WebhookDelivery,
    WebhookEndpoint,
)
from authkeep.security.emails import email_key
from authkeep.security.envelope import (
    USER_SEALED_PREFIX,
    Envelope,
    SealedValueError,
    field_context,
)
from authkeep.services.mfa.totp import sealing_context as totp_context
from authkeep.services.webhooks.signing import sealing_context as webhook_context

__all__ = ["DataRotation", "PhaseReport", "Progress", "RotationReport"]

JOB_PREFIX = "rotate-data:"

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"

Progress = Callable[[str, int, int], None]
"""Called after each batch with the phase's name, rows done so far and rows to do."""


@dataclass(frozen=True, slots=True)
class Change:
    """One compare-and-set: ``column`` of row ``key_value`` from ``old`` to ``new``."""

    column: InstrumentedAttribute[Any]
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Phase:
    """One walk over a table: which rows are stale, how to read and redo them."""

    name: str
    key: InstrumentedAttribute[Any]
    parse_key: Callable[[str], Any]
    stale: Callable[[], ColumnElement[bool]]
    query: Callable[[], AnySelect]
    redo: Callable[[Any], Sequence[Change]]


@dataclass(frozen=True, slots=True)
class PhaseReport:
    """What a phase did: rows changed, rows it could not open (left as they are), seconds."""

    name: str
    changed: int
    unreadable: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Throughput of the phase."""
        return self.changed / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RotationReport:
    """Every phase's report, and the audit rows still sealed with an older master key."""

    phases: tuple[PhaseReport, ...]
    audit_rows_on_old_keys: int

    @property
    def changed(self) -> int:
        """Rows changed in all."""
        return sum(phase.changed for phase in self.phases)


class DataRotation:
    """Re-wrap user keys, re-seal master-sealed values and re-index emails under the newest
    data key. Run it with a database connection that sees every organization's rows (the
    schema owner's, as ``authkeep migrate``: row-level security hides other tenants' rows
    from the app role)."""

    def __init__(self, db: Database, envelope: Envelope, *, batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._db = db
        self._envelope = envelope
        self._batch = batch_size
        self._kid = envelope.box.ring.newest.kid
        self._phases = self._build_phases()

    # -- phases ----------------------------------------------------------------------------

    def _not_newest(
        self, column: ColumnElement[Any] | InstrumentedAttribute[Any]
    ) -> ColumnElement[bool]:
        return and_(column.is_not(None), ~column.startswith(self._kid + ".", autoescape=True))

    def _sealed_column(
        self,
        name: str,
        key: InstrumentedAttribute[Any],
        column: InstrumentedAttribute[Any],
        context: Callable[[Any], bytes],
    ) -> Phase:
        box = self._envelope.box

        def redo(row: Any) -> Sequence[Change]:
            row_key, old = row
            plain = box.open(old, context=context(row_key))
            return [Change(column, old, box.seal(plain, context=context(row_key)))]

        return Phase(
            name=name,
            key=key,
            parse_key=uuid.UUID,
            stale=lambda: self._not_newest(column),
            query=lambda: select(key, column),
            redo=redo,
        )

    def _sealed_payload(
        self, table: str, key: InstrumentedAttribute[Any], column: InstrumentedAttribute[Any]
    ) -> Phase:
        """A JSON column holding ``{"sealed": "<kid>.<…>"}`` (outbox_rows.seal_payload);
        plain payloads written before encryption are left as they are."""
        envelope = self._envelope

        def redo(row: Any) -> Sequence[Change]:
            row_id, stored = row
            if not outbox_rows.is_sealed(stored or {}) or not envelope.box.needs_resealing(
                str(stored[outbox_rows.SEALED])
            ):
                return []
            opened = outbox_rows.open_payload(envelope, row_id, stored, table=table)
            return [
                Change(
                    column, stored, outbox_rows.seal_payload(envelope, row_id, opened, table=table)
                )
            ]

        return Phase(
            name=f"{table}.payload",
            key=key,
            parse_key=uuid.UUID,
            stale=lambda: self._not_newest(column[outbox_rows.SEALED].as_string()),
            query=lambda: select(key, column),
            redo=redo,
        )

    def _build_phases(self) -> tuple[Phase, ...]:
        envelope = self._envelope

        def rewrap(row: Any) -> Sequence[Change]:
            user_id, old = row
            new = envelope.wrap(user_id, envelope.unwrap(user_id, old))
            return [Change(UserKey.wrapped_key, old, new)]

        def reindex_user(row: Any) -> Sequence[Change]:
            user_id, sealed_email, old_index, wrapped = row
            aead = envelope.cipher_for(user_id, wrapped)
            email = envelope.open_with(
                aead, sealed_email, context=field_context("users", "email", user_id)
            )
            return [Change(User.email_key, old_index, envelope.blind_index(email_key(email)))]

        def reindex_invitation(row: Any) -> Sequence[Change]:
            # Its address is sealed with the master ring (the invitee may have no account).
            invitation_id, sealed_email, old_index = row
            email = envelope.open(
                sealed_email, context=field_context("invitations", "email", invitation_id)
            )
            return [Change(Invitation.email_key, old_index, envelope.blind_index(email_key(email)))]

        index_prefix = f"bi.{self._kid}."
        return (
            Phase(
                name="user_keys",
                key=UserKey.user_id,
                parse_key=uuid.UUID,
                stale=lambda: self._not_newest(UserKey.wrapped_key),
                query=lambda: select(UserKey.user_id, UserKey.wrapped_key),
                redo=rewrap,
            ),
            self._sealed_column(
                "mfa_totp.secret_sealed", TotpFactor.id, TotpFactor.secret_sealed, totp_context
            ),
            self._sealed_column(
                "webhook_endpoints.secret_sealed",
                WebhookEndpoint.id,
                WebhookEndpoint.secret_sealed,
                lambda row_id: webhook_context("secret", row_id),
            ),
            self._sealed_column(
                "webhook_endpoints.previous_secret_sealed",
                WebhookEndpoint.id,
                WebhookEndpoint.previous_secret_sealed,
                lambda row_id: webhook_context("previous_secret", row_id),
            ),
            self._sealed_column(
                "invitations.email",
                Invitation.id,
                Invitation.email,
                lambda row_id: field_context("invitations", "email", row_id),
            ),
            self._sealed_payload("outbox", OutboxMessage.id, OutboxMessage.payload),
            self._sealed_payload(
                webhook_rows.DELIVERY_TABLE, WebhookDelivery.id, WebhookDelivery.payload
            ),
            Phase(
                name="users.email_key",
                key=User.id,
                parse_key=uuid.UUID,
                stale=lambda: ~User.email_key.startswith(index_prefix, autoescape=True),
                query=lambda: select(User.id, User.email, User.email_key, UserKey.wrapped_key).join(
                    UserKey, UserKey.user_id == User.id
                ),
                redo=reindex_user,
            ),
            Phase(
                name="invitations.email_key",
                key=Invitation.id,
                parse_key=uuid.UUID,
                stale=lambda: ~Invitation.email_key.startswith(index_prefix, autoescape=True),
                query=lambda: select(Invitation.id, Invitation.email, Invitation.email_key),
                redo=reindex_invitation,
            ),
        )

    @property
    def phase_names(self) -> tuple[str, ...]:
        """The phases, in the order they run."""
        return tuple(phase.name for phase in self._phases)

    # -- running ---------------------------------------------------------------------------

    async def pending(self) -> dict[str, int]:
        """Rows each phase still has to do (what ``--dry-run`` prints)."""
        async with self._db.transaction() as conn:
            return {
                phase.name: await _count(conn, phase.query(), phase.stale())
                for phase in self._phases
            }

    async def audit_rows_on_old_keys(self) -> int:
        """Audit rows whose IP address is sealed with an older master key: the old key
        must stay in the ring until the audit retention purge has removed them."""
        # A master-sealed value is "<kid>.<base64url>": one dot, no colon. Addresses stored
        # in clear before encryption (IPv4: three dots; IPv6: colons) need no key.
        stale = and_(
            AuditEntry.ip.like("%.%"),
            ~AuditEntry.ip.like("%.%.%"),
            ~AuditEntry.ip.contains(":", autoescape=True),
            ~AuditEntry.ip.startswith(USER_SEALED_PREFIX, autoescape=True),
            ~AuditEntry.ip.startswith(self._kid + ".", autoescape=True),
        )
        async with self._db.transaction() as conn:
            return await rotation_rows.count(conn, stale)

    async def run(self, progress: Progress | None = None) -> RotationReport:
        """Run every phase to the end; ``progress`` hears about each batch."""
        reports = []
        for phase in self._phases:
            reports.append(await self._run_phase(phase, progress))
        return RotationReport(tuple(reports), await self.audit_rows_on_old_keys())

    async def _run_phase(self, phase: Phase, progress: Progress | None) -> PhaseReport:
        job = JOB_PREFIX + phase.name
        async with self._db.transaction() as conn:
            stored = await rotation_rows.get_position(conn, job)
            total = await _count(conn, phase.query(), phase.stale())
        after = None if stored is None else phase.parse_key(stored)
        changed = unreadable = done = 0
        started = time.perf_counter()
        while True:
            async with self._db.transaction() as conn:
                stmt = phase.query().where(phase.stale()).order_by(phase.key).limit(self._batch)
                if after is not None:
                    stmt = stmt.where(phase.key > after)
                rows = (await conn.execute(stmt)).all()
                if not rows:
                    await rotation_rows.clear_position(conn, job)
                    break
                by_column: dict[str, tuple[Any, list[tuple[Any, Any, Any]]]] = {}
                for row in rows:
                    try:
                        changes = phase.redo(row)
                    except SealedValueError:
                        # A value no key of the ring opens (an erased account's, a damaged
                        # row): nothing to move; counted and left as it is.
                        unreadable += 1
                        continue
                    for change in changes:
                        entry = by_column.setdefault(change.column.key, (change.column, []))
                        entry[1].append((row[0], change.old, change.new))
                for column, batch in by_column.values():
                    changed += await rotation_rows.replace_many(conn, phase.key, column, batch)
                after = rows[-1][0]
                await rotation_rows.set_position(conn, job, str(after))
            done += len(rows)
            if progress is not None:
                progress(phase.name, min(done, total), total)
        return PhaseReport(phase.name, changed, unreadable, time.perf_counter() - started)


async def _count(conn: AsyncConnection, query: AnySelect, stale: ColumnElement[bool]) -> int:
    subquery = query.where(stale).subquery()
    return int((await conn.execute(select(func.count()).select_from(subquery))).scalar_one())
