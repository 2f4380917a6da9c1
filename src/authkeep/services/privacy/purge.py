"""``authkeep purge``: every time-based clean-up in one job, safe to run while serving (each
step works in small transactions), with a dry run that changes nothing.

In order:

1. fold the sessions' newest use into ``users.last_active_at`` (before 2 deletes them);
2. ended sessions and expired refresh tokens (:meth:`Sessions.purge`);
3. due erasures (:class:`~authkeep.services.privacy.erasure.Erasure`);
4. inactivity warnings and deletions (:class:`~authkeep.services.privacy.retention.Retention`);
5. dead single-use rows: MFA login challenges, WebAuthn challenges, emailed links;
6. audit rows past ``AUTHKEEP_AUDIT_RETENTION_DAYS`` — with the audit purge role's own
   connection (the app's role cannot delete audit rows), so the command line passes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.base import Base, utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry, AuditPolicy, AuthSession, RefreshToken
from authkeep.services import audit_admin
from authkeep.services.privacy.erasure import Erasure
from authkeep.services.privacy.retention import Retention, RetentionRun
from authkeep.services.sessions import Sessions
from authkeep.settings import Settings


def audit_purge_url(settings: Settings) -> str | None:
    """Where the audit purge connects: ``AUTHKEEP_AUDIT_PURGE_DATABASE_URL`` (a login of
    the purge role); on SQLite the database itself. None: PostgreSQL without that login."""
    if settings.audit_purge_database_url is not None:
        return settings.audit_purge_database_url
    if settings.database_url.startswith("sqlite"):
        return settings.database_url
    return None


@dataclass(slots=True)
class PurgeReport:
    """What a purge did (or, for a dry run, would do)."""

    dry_run: bool
    activity_folded: int = 0
    sessions: int = 0
    refresh_tokens: int = 0
    erased: int = 0
    erasure_failures: int = 0
    retention: RetentionRun = field(default_factory=RetentionRun)
    retention_enabled: bool = False
    dead_rows: dict[str, int] = field(default_factory=dict)
    audit_rows: int | None = None
    """None: the audit purge did not run (no purge-role login on PostgreSQL)."""
    audit_cutoff: datetime | None = None

    def lines(self) -> list[str]:
        """The report as the command prints it (one line per step)."""
        would = "would purge" if self.dry_run else "purged"
        lines = [f"{would} {self.sessions} sessions and {self.refresh_tokens} refresh tokens"]
        if not self.dry_run:
            lines.append(f"recorded the last use of {self.activity_folded} accounts")
        erased = f"{'would erase' if self.dry_run else 'erased'} {self.erased} accounts"
        if self.erasure_failures:
            erased += f" ({self.erasure_failures} failed: see the log, retried next run)"
        lines.append(erased + " whose deletion was due")
        if not self.retention_enabled:
            lines.append("inactive accounts: off (AUTHKEEP_INACTIVE_ACCOUNT_DAYS=0)")
        elif self.dry_run:
            lines.append(
                f"inactive accounts: would warn {self.retention.warned}, would schedule "
                f"{self.retention.scheduled} for deletion (before counting API-key use)"
            )
        else:
            lines.append(
                f"inactive accounts: warned {self.retention.warned}, scheduled "
                f"{self.retention.scheduled} for deletion, {self.retention.held} held (only "
                f"admin of an organization with members), {self.retention.in_use} in use "
                "through an API key"
            )
        dead = ", ".join(f"{count} {table}" for table, count in self.dead_rows.items())
        lines.append(f"{would} dead single-use rows: {dead}")
        if self.audit_rows is None:
            lines.append(
                "audit rows: skipped (set AUTHKEEP_AUDIT_PURGE_DATABASE_URL to a login of the "
                "audit purge role to include them)"
            )
        else:
            upto = "up to " if self.dry_run else ""
            cutoff = self.audit_cutoff.isoformat() if self.audit_cutoff else "?"
            lines.append(f"{would} {upto}{self.audit_rows} audit rows older than {cutoff}")
        return lines

    @property
    def failed(self) -> bool:
        """Whether a step failed in part (the command exits non-zero)."""
        return self.erasure_failures > 0


class Purge:
    """The job behind ``authkeep purge``. ``ended_grace`` is how long an ended session is
    kept (the longest access-token life: its revocation must still be known)."""

    def __init__(
        self,
        db: Database,
        sessions: Sessions,
        erasure: Erasure,
        retention: Retention,
        *,
        ended_grace: timedelta,
        audit_retention_days: int,
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._erasure = erasure
        self._retention = retention
        self._ended_grace = ended_grace
        self._audit_retention_days = audit_retention_days

    async def run(self, *, audit_db: Database | None) -> PurgeReport:
        """Do every step; the audit rows with ``audit_db`` (the purge role's connection),
        skipped without it."""
        report = PurgeReport(dry_run=False, retention_enabled=self._retention.enabled)
        report.activity_folded = await self._retention.fold_activity()
        report.sessions, report.refresh_tokens = await self._sessions.purge()
        erasures = await self._erasure.erase_due()
        report.erased, report.erasure_failures = len(erasures.erased), len(erasures.failed)
        report.retention = await self._retention.run()
        report.dead_rows = await self._retention.purge_dead_rows()
        if audit_db is not None:
            done = await audit_admin.purge(audit_db, retention_days=self._audit_retention_days)
            report.audit_rows, report.audit_cutoff = done.deleted, done.cutoff
        return report

    async def preview(self, *, audit_db: Database | None) -> PurgeReport:
        """What :meth:`run` would do now, changing nothing; the audit rows counted through
        ``audit_db`` (the purge role's connection: the app's role may not read the
        database's retention policy), skipped without it."""
        now = utcnow()
        report = PurgeReport(dry_run=True, retention_enabled=self._retention.enabled)
        ended_before = now - self._ended_grace
        async with self._db.reading() as conn:
            report.refresh_tokens = await _count(conn, RefreshToken, RefreshToken.expires_at <= now)
            report.sessions = await _count(
                conn,
                AuthSession,
                or_(AuthSession.expires_at <= ended_before, AuthSession.revoked_at < ended_before),
            )
        if audit_db is not None:
            async with audit_db.reading() as conn:
                policy = (
                    await conn.execute(
                        select(AuditPolicy.retention_days).where(AuditPolicy.id == 1)
                    )
                ).scalar_one_or_none()
                days = max(self._audit_retention_days, policy or 0)
                # The clock the audit purge and its guard use (PostgreSQL's on PostgreSQL).
                clock = (
                    (await conn.execute(text("SELECT now()"))).scalar_one()
                    if audit_db.is_postgres
                    else now
                )
                report.audit_cutoff = clock - timedelta(days=days)
                report.audit_rows = await _count(
                    conn, AuditEntry, AuditEntry.at < report.audit_cutoff
                )
        report.erased = await self._erasure.count_due(now)
        report.retention.warned, report.retention.scheduled = await self._retention.preview(now)
        report.dead_rows = await self._retention.count_dead_rows(now)
        return report


async def _count(conn: AsyncConnection, model: type[Base], condition: ColumnElement[bool]) -> int:
    found = await conn.execute(select(func.count()).select_from(model).where(condition))
    return int(found.scalar_one())
