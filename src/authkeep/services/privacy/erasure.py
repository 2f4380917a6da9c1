"""Erasure: the end of an account whose deletion is due (docs/privacy.md, "Deletion").

One transaction per account, after the account's row lock:

1. **crypto-shredding** — the account's user key is deleted (``db/user_keys.destroy``):
   every value sealed with it (address, name, sessions' IP addresses and user agents, the
   IP addresses of audit rows it acted in) is unreadable wherever a copy of it lives, a
   backup or dump of the data tables included;
2. the account's rows go: sessions and refresh tokens, memberships, API keys (by cascade),
   second factors and pending challenges, consents, emailed links, invitations to its
   address, and the ``users`` row itself;
3. ``user.erased`` is audited (the webhook event ``user.deleted`` comes from it).

The audit log is never edited: its rows keep the account's UUID, which nothing maps back
to a person any more (a pseudonym), and its hash chains still verify (they hash what is
stored, ciphertext included).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog

from authkeep.db import deletion as deletion_rows
from authkeep.db import sessions as session_rows
from authkeep.db import user_keys
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.security.emails import email_key
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role
from authkeep.services.audit import SYSTEM, Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.erasure")

ERASE_BATCH = 100
"""Accounts looked up per query of :meth:`Erasure.erase_due` (each is its own transaction)."""


@dataclass(frozen=True, slots=True)
class Erased:
    """One erased account: the rows removed per table (API keys, removed by cascade, are not
    counted) and the organizations it leaves without an admin."""

    user_id: uuid.UUID
    removed: dict[str, int]
    orgs_left_without_admin: list[uuid.UUID]


@dataclass(frozen=True, slots=True)
class ErasureRun:
    """What :meth:`Erasure.erase_due` did: the accounts erased, and those that failed."""

    erased: list[Erased]
    failed: list[uuid.UUID]


class Erasure:
    """Erases accounts whose deletion is due. ``publish`` and ``users_changed`` tell every
    worker (the account's sessions were revoked when the deletion was asked; this repeats
    it for any the account could still have)."""

    def __init__(
        self,
        db: Database,
        envelope: Envelope,
        audit: AuditLog,
        *,
        publish: Publish,
        users_changed: Publish,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._audit = audit
        self._publish = publish
        self._users_changed = users_changed

    async def erase(
        self,
        user_id: uuid.UUID,
        *,
        now: datetime | None = None,
        actor: Actor = SYSTEM,
        info: RequestInfo | None = None,
    ) -> Erased | None:
        """Erase ``user_id`` if its deletion is due at ``now``; None when it is not (never
        scheduled, cancelled, or erased by a concurrent run: exactly one run erases it)."""
        now = now or utcnow()
        async with self._db.transaction() as conn:
            state = await deletion_rows.lock_due(conn, user_id, now)
            if state is None:
                return None
            user = await user_rows.get_by_id(conn, self._envelope, user_id)
            # Invitations name the address by its stored index: the one in the users row,
            # and (read while the key still opens the address) those of older ring keys.
            indexes = {state.email_key}
            if user is not None and user.email:
                indexes.update(self._envelope.blind_indexes(email_key(user.email)))
            admin_of = [
                org
                for org, role in await deletion_rows.memberships(conn, user_id)
                if role == Role.ADMIN.value
            ]
            ended = await session_rows.revoke_sessions(
                conn, user_id=user_id, now=now, reason="erased"
            )
            await user_keys.destroy(conn, self._envelope, user_id)
            removed = await deletion_rows.remove_account(
                conn, user_id, email_indexes=sorted(indexes)
            )
            orphaned = await deletion_rows.orgs_without_admin(conn, admin_of)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.USER_ERASED,
                    actor=actor,
                    entity_type="user",
                    entity_id=user_id,
                    details={
                        "requested_at": state.deleted_at.isoformat() if state.deleted_at else None,
                        "key_destroyed": True,
                        # A list, not a mapping: table names such as "account_tokens" would
                        # read as secrets to the redaction of audit details.
                        "removed": [{"table": t, "rows": n} for t, n in sorted(removed.items())],
                        "orgs_left_without_admin": [str(org) for org in orphaned],
                    },
                ),
                info,
            )
        await self._users_changed([user_id])
        await self._publish(ended)
        log.info(
            "user_erased",
            user_id=str(user_id),
            rows=sum(removed.values()),
            orgs_left_without_admin=len(orphaned),
        )
        return Erased(user_id, removed, orphaned)

    async def erase_due(
        self, now: datetime | None = None, *, batch: int = ERASE_BATCH
    ) -> ErasureRun:
        """Erase every account whose deletion is due at ``now``, one transaction each: an
        account that fails (logged, and reported in :attr:`ErasureRun.failed`) costs its own
        erasure, not the run's; the next run tries it again."""
        now = now or utcnow()
        run = ErasureRun([], [])
        seen: set[uuid.UUID] = set()
        while True:
            async with self._db.reading() as conn:
                ids = [i for i in await deletion_rows.due(conn, now, limit=batch) if i not in seen]
            if not ids:
                return run
            for user_id in ids:
                seen.add(user_id)
                try:
                    done = await self.erase(user_id, now=now)
                except Exception as exc:  # one account's failure must not stop the others
                    log.error("user_erasure_failed", user_id=str(user_id), error=type(exc).__name__)
                    run.failed.append(user_id)
                    continue
                if done is not None:
                    run.erased.append(done)

    async def count_due(self, now: datetime | None = None) -> int:
        """How many erasures are due at ``now`` (``authkeep purge --dry-run``)."""
        async with self._db.reading() as conn:
            return await deletion_rows.count_due(conn, now or utcnow())
