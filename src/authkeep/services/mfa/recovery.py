"""Recovery codes: issued at TOTP confirmation, regenerated on request, each spent once.

* A set is shown once, when it is made: only keyed hashes are stored
  (:mod:`authkeep.security.recovery_codes`).
* Making a set voids the previous one, used codes and unused alike, in the same
  transaction: a printed sheet the user lost stops working the moment they replace it.
* Spending a code is one atomic conditional update (:func:`authkeep.db.mfa.
  use_recovery_code`), so a code works once however many requests race for it; the use is
  audited and the user is emailed (through the outbox, in the same transaction): a stolen
  sheet used by someone else does not go unnoticed.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import mfa as mfa_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import Conflict
from authkeep.security.envelope import Envelope
from authkeep.security.key_ring import SecretRing
from authkeep.security.recovery_codes import CODE_COUNT, code_hash, code_hashes, new_codes
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.mail.mailer import Mailer

__all__ = ["NO_SECOND_FACTOR", "RECOVERY_CODE_KEY_PURPOSE", "RecoveryCodes"]

log = structlog.get_logger("authkeep.mfa")

RECOVERY_CODE_KEY_PURPOSE = b"authkeep/mfa-recovery-code-hash/v1"
NO_SECOND_FACTOR = (
    "Set up a second factor first: recovery codes stand in for one, they are not one alone"
)


class RecoveryCodes:
    """Issue, regenerate and spend a user's recovery codes."""

    def __init__(
        self,
        db: Database,
        ring: SecretRing,
        audit: AuditLog,
        mailer: Mailer,
        *,
        envelope: Envelope,
    ) -> None:
        """``ring``: the keys the codes are hashed with (newest writes, all read);
        ``envelope`` opens the user's personal data."""
        self._db = db
        self._envelope = envelope
        self._ring = ring
        self._audit = audit
        self._mailer = mailer

    async def issue(self, conn: AsyncConnection, user: UserRecord, now: datetime) -> list[str]:
        """A new set for ``user`` in the caller's transaction, replacing any previous one;
        the codes in clear, to show once."""
        codes = new_codes(CODE_COUNT)
        hashes = [code_hash(self._ring, user.id, code) for code in codes]
        await mfa_rows.replace_recovery_codes(conn, user.id, hashes, now)
        return codes

    async def regenerate(self, user: UserRecord, info: RequestInfo | None = None) -> list[str]:
        """A new set, the old one void (audited). Conflict (409) when the user has no
        second factor."""
        now = utcnow()
        async with self._db.transaction() as conn:
            # Read here, not from the caller's cached record: the factor may be gone.
            current = await user_rows.get_by_id(conn, self._envelope, user.id)
            if current is None or not current.mfa_enabled:
                raise Conflict(NO_SECOND_FACTOR)
            codes = await self.issue(conn, current, now)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.MFA_RECOVERY_CODES_REGENERATED,
                    actor=Actor(user.id),
                    entity_type="user",
                    entity_id=user.id,
                    details={"count": len(codes)},
                ),
                info,
            )
        log.info("mfa_recovery_codes_regenerated", user_id=str(user.id))
        return codes

    async def use(
        self,
        conn: AsyncConnection,
        user: UserRecord,
        code: str,
        info: RequestInfo | None,
        now: datetime,
    ) -> bool:
        """Spend ``code`` of ``user`` in the caller's transaction: True when it was an unused
        code of theirs (then the use is audited and the user emailed, in that transaction),
        else False and nothing changes."""
        if not await mfa_rows.use_recovery_code(
            conn, user.id, code_hashes(self._ring, user.id, code), now
        ):
            return False
        remaining = await mfa_rows.count_unused_codes(conn, user.id)
        await self._mailer.enqueue(conn, "recovery_code_used", user.email, {"remaining": remaining})
        await self._audit.record(
            conn,
            AuditEvent(
                Action.MFA_RECOVERY_CODE_USED,
                actor=Actor(user.id),
                entity_type="user",
                entity_id=user.id,
                details={"remaining": remaining},
            ),
            info,
        )
        log.info("mfa_recovery_code_used", user_id=str(user.id), remaining=remaining)
        return True
