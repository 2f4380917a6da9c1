"""``authkeep audit``: verify the hash chains, export rows as JSON lines, purge old rows."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from authkeep.db.audit import AuditFilter
from authkeep.db.engine import Database
from authkeep.services import audit_admin
from authkeep.settings import Settings

audit_app = typer.Typer(help="The audit log: verify its chains, export it, purge old rows.")
T = TypeVar("T")


def _settings() -> Settings:
    from authkeep.cli import load_settings

    return load_settings()


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(make())


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"error: {option} must be an ISO 8601 date or time", err=True)
        raise typer.Exit(2) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@audit_app.command("verify")
def verify() -> None:
    """Walk every chain; report the first broken link (exit 1) or each chain's head."""
    settings = _settings()

    async def run() -> audit_admin.Verification:
        db = Database(settings.database_url)
        try:
            return await audit_admin.verify(db)
        finally:
            await db.close()

    result = _run_async(run)
    if result.broken is not None:
        typer.echo(
            f"BROKEN  row {result.broken.row_id} (chain {result.broken.chain}): "
            f"{result.broken.reason}"
        )
        typer.echo(f"checked {result.rows} rows before the break")
        raise typer.Exit(1)
    for head in result.chains:
        typer.echo(f"chain {head.chain}: {head.rows} rows, head {head.head_id} {head.head_hash}")
    typer.echo(f"ok: {result.rows} rows in {len(result.chains)} chains")


@audit_app.command("export")
def export(
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor user id.")] = None,
    entity_type: Annotated[str | None, typer.Option(help="Only this entity type.")] = None,
    entity_id: Annotated[str | None, typer.Option(help="Only this entity id.")] = None,
    outcome: Annotated[str | None, typer.Option(help="success or failure.")] = None,
    org: Annotated[str | None, typer.Option(help="One organization id, or 'platform'.")] = None,
    since: Annotated[str | None, typer.Option(help="From (ISO 8601, inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Until (ISO 8601, exclusive).")] = None,
) -> None:
    """Print matching rows as JSON lines, oldest first."""
    settings = _settings()
    try:
        actor_id = uuid.UUID(actor) if actor else None
        org_ids = None if org is None else [] if org == "platform" else [uuid.UUID(org)]
    except ValueError:
        typer.echo("error: --actor and --org take a UUID ('platform' for --org)", err=True)
        raise typer.Exit(2) from None
    if outcome not in (None, "success", "failure"):
        typer.echo("error: --outcome is success or failure", err=True)
        raise typer.Exit(2)
    where = AuditFilter(
        org_ids=org_ids,
        platform=org == "platform",
        actor_user_id=actor_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        outcome=outcome,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
    )

    async def run() -> int:
        db = Database(settings.database_url)
        count = 0
        try:
            async for row in audit_admin.export(db, where):
                typer.echo(json.dumps(row.as_json(), sort_keys=True, separators=(",", ":")))
                count += 1
        finally:
            await db.close()
        return count

    _run_async(run)


@audit_app.command("purge")
def purge() -> None:
    """Delete rows older than AUTHKEEP_AUDIT_RETENTION_DAYS (the only deletion allowed).

    On PostgreSQL this connects with AUTHKEEP_AUDIT_PURGE_DATABASE_URL, a member of the purge
    role; the database refuses everyone else. On SQLite it uses AUTHKEEP_DATABASE_URL and
    lifts the delete trigger for the length of its transaction.
    """
    settings = _settings()
    url = settings.audit_purge_database_url
    if url is None:
        if settings.database_url.startswith("postgresql"):
            typer.echo(
                "error: set AUTHKEEP_AUDIT_PURGE_DATABASE_URL to a login of the purge role "
                f"({settings.audit_purge_role}); the app's own role cannot delete audit rows",
                err=True,
            )
            raise typer.Exit(2)
        url = settings.database_url

    async def run() -> audit_admin.PurgeReport:
        db = Database(url)
        try:
            return await audit_admin.purge(db, retention_days=settings.audit_retention_days)
        finally:
            await db.close()

    report = _run_async(run)
    typer.echo(
        f"purged {report.deleted} audit rows older than {report.cutoff.isoformat()} "
        f"(retention {report.retention_days} days)"
    )
