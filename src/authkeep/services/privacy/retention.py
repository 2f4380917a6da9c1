"""Retention: accounts nobody uses are warned, then deleted; dead single-use rows go
(docs/privacy.md, "Retention").

With ``AUTHKEEP_INACTIVE_ACCOUNT_DAYS`` set, an account unused for that many days is
emailed a warning once; if it is still unused :data:`NOTICE` later, its deletion is
scheduled exactly like its owner's own request (locked, the cancel link emailed, erased
after the grace period). Signing in, a refresh or an API key's use ends the idle spell; a
later spell is warned again.

"Unused" is read from what authkeep records anyway (``db/retention.py``): no write is added
to the login path. Platform admins, deactivated accounts and accounts already leaving are
left alone; the only admin of an organization with other members is warned but not
scheduled (the organization would be left without an admin) until that changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from authkeep.db import retention as retention_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.retention import IdleAccount
from authkeep.security.envelope import Envelope
from authkeep.services.audit import Action, AuditEvent, AuditLog
from authkeep.services.mail import Mailer
from authkeep.services.privacy.deletion import AccountDeletion, mail_date

log = structlog.get_logger("authkeep.retention")

NOTICE = timedelta(days=30)
"""Between the inactivity warning and the scheduled deletion: a month, so that someone away
for a few weeks (or whose mail was filtered) has time to sign in."""
BATCH = 500
"""Rows per query (and, for the dead-row purge, per transaction)."""


@dataclass(slots=True)
class RetentionRun:
    """What one run did: accounts warned, scheduled for deletion, held back (the only admin
    of an organization with other members), found in use through an API key."""

    warned: int = 0
    scheduled: int = 0
    held: int = 0
    in_use: int = 0
    scheduled_ids: list[uuid.UUID] = field(default_factory=list)


class Retention:
    """The inactivity policy (``inactive_days``: 0 = off) and the dead-row purge."""

    def __init__(
        self,
        db: Database,
        envelope: Envelope,
        audit: AuditLog,
        mailer: Mailer,
        deletion: AccountDeletion,
        *,
        inactive_days: int,
        notice: timedelta = NOTICE,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._audit = audit
        self._mailer = mailer
        self._deletion = deletion
        self._inactive_days = inactive_days
        self._notice = notice

    @property
    def enabled(self) -> bool:
        """Whether inactive accounts are deleted."""
        return self._inactive_days > 0

    def _cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self._inactive_days)

    async def fold_activity(self) -> int:
        """Copy the sessions' newest use into ``users.last_active_at`` (before the session
        purge deletes them); returns how many accounts moved."""
        moved = 0
        after: uuid.UUID | None = None
        while True:
            async with self._db.transaction() as conn:
                done, after = await retention_rows.fold_session_activity(
                    conn, limit=BATCH, after=after
                )
            moved += done
            if after is None:
                return moved

    async def run(self, now: datetime | None = None) -> RetentionRun:
        """Warn the idle accounts not warned yet, and schedule the deletion of those warned
        at least :data:`NOTICE` ago and still idle. Nothing when the policy is off."""
        run = RetentionRun()
        if not self.enabled:
            return run
        now = now or utcnow()
        cutoff = self._cutoff(now)

        async def warn(account: IdleAccount) -> None:
            if await self._warn(account, now):
                run.warned += 1

        async def schedule(account: IdleAccount) -> None:
            if await self._deletion.schedule_inactive(account.user_id, self._inactive_days):
                run.scheduled += 1
                run.scheduled_ids.append(account.user_id)
            else:
                run.held += 1

        async def warn_page(after: uuid.UUID | None) -> list[IdleAccount]:
            async with self._db.reading() as conn:
                return await retention_rows.to_warn(conn, cutoff, after=after, limit=BATCH)

        async def schedule_page(after: uuid.UUID | None) -> list[IdleAccount]:
            async with self._db.reading() as conn:
                return await retention_rows.to_schedule(
                    conn, cutoff, now - self._notice, after=after, limit=BATCH
                )

        def back_since_warning(account: IdleAccount) -> datetime:
            # A use after the warning ends the idle spell that the warning was about.
            warned = account.warned_at or cutoff
            return min(warned, cutoff)

        # Schedule first: an account warned in this very run must wait its notice period.
        await self._each(schedule_page, schedule, run, used_after=back_since_warning)
        await self._each(warn_page, warn, run, used_after=lambda _account: cutoff)
        return run

    async def _each(
        self,
        page: Callable[[uuid.UUID | None], Awaitable[list[IdleAccount]]],
        act: Callable[[IdleAccount], Awaitable[None]],
        run: RetentionRun,
        *,
        used_after: Callable[[IdleAccount], datetime],
    ) -> None:
        after: uuid.UUID | None = None
        while True:
            accounts = await page(after)
            for account in accounts:
                if await self._used_through_api_key(account, used_after(account)):
                    run.in_use += 1
                else:
                    await act(account)
            if len(accounts) < BATCH:
                return
            after = accounts[-1].user_id

    async def _used_through_api_key(self, account: IdleAccount, threshold: datetime) -> bool:
        """Whether a key the account made was used after ``threshold`` (which ends its idle
        spell). Keys are read per organization (row-level security), so only for the few
        idle candidates, never for every account; a newer use found is recorded like any
        other, so it is not looked up again."""
        async with self._db.transaction() as conn:
            used = await retention_rows.api_key_last_use(conn, account.user_id)
            if used is None or used <= account.last_active:
                return False
            await retention_rows.touch(conn, account.user_id, used)
        return used > threshold

    async def _warn(self, account: IdleAccount, now: datetime) -> bool:
        scheduled_at = now + self._notice
        async with self._db.transaction() as conn:
            if not await retention_rows.mark_warned(conn, account.user_id, now):
                return False
            user = await user_rows.get_by_id(conn, self._envelope, account.user_id)
            emailed = user is not None and bool(user.email)
            if user is not None and user.email:
                await self._mailer.enqueue(
                    conn,
                    "inactivity_warning",
                    user.email,
                    {
                        "last_active_date": account.last_active.strftime("%Y-%m-%d"),
                        "inactive_days": self._inactive_days,
                        "scheduled_date": mail_date(scheduled_at),
                    },
                )
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.USER_INACTIVITY_WARNED,
                    entity_type="user",
                    entity_id=account.user_id,
                    details={
                        "last_active": account.last_active.isoformat(),
                        "scheduled_after": scheduled_at.isoformat(),
                        "emailed": emailed,
                    },
                ),
            )
        log.info("user_inactivity_warned", user_id=str(account.user_id))
        return True

    async def preview(self, now: datetime | None = None) -> tuple[int, int]:
        """(to warn, to schedule) at ``now``, before API-key use is looked at (``authkeep
        purge --dry-run``); (0, 0) when the policy is off."""
        if not self.enabled:
            return 0, 0
        now = now or utcnow()
        async with self._db.reading() as conn:
            warn, schedule = await retention_rows.count_idle(
                conn, self._cutoff(now), now - self._notice
            )
        return int(warn), int(schedule)

    async def purge_dead_rows(self, now: datetime | None = None) -> dict[str, int]:
        """Delete expired or finished MFA login challenges and WebAuthn challenges, and
        spent, voided or expired emailed links, in batches; the count per table."""
        now = now or utcnow()
        counts: dict[str, int] = {}
        for table in retention_rows.DEAD_ROW_TABLES:
            counts[table] = 0
            while True:
                async with self._db.transaction() as conn:
                    done = await retention_rows.delete_dead_rows(conn, table, now, limit=BATCH)
                counts[table] += done
                if done < BATCH:
                    break
        return counts

    async def count_dead_rows(self, now: datetime | None = None) -> dict[str, int]:
        """What :meth:`purge_dead_rows` would delete at ``now``."""
        async with self._db.reading() as conn:
            return await retention_rows.count_dead_rows(conn, now or utcnow())
