"""``authkeep audit``: verify the hash chains (and signed checkpoints), sign checkpoints,
export rows as JSON lines, purge old rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from authkeep.db.audit import AuditFilter
from authkeep.db.engine import Database
from authkeep.logging import configure_logging
from authkeep.security.audit_signing import (
    CheckpointKeyError,
    CheckpointSigner,
    VerifyingKey,
    trusted_keys,
)
from authkeep.security.configured import build_envelope
from authkeep.services import audit_admin, audit_checkpoints
from authkeep.settings import Settings
from authkeep.tls import TLSError

audit_app = typer.Typer(
    help="The audit log: verify its chains, sign checkpoints, export it, purge old rows."
)
T = TypeVar("T")


def _settings() -> Settings:
    from authkeep.cli import load_settings

    return load_settings()


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(make())
    except TLSError as exc:
        # A wrong CA, host name or a server without TLS: one line naming the setting.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


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
def verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="Also check the signed checkpoints in this directory (detects a cut tail, "
            "a deleted chain, a re-hashed chain).",
        ),
    ] = None,
    public_key: Annotated[
        list[str] | None,
        typer.Option(
            "--public-key",
            help="A trusted checkpoint public key (base64url); repeatable. Added to "
            "AUTHKEEP_AUDIT_CHECKPOINT_PUBLIC_KEYS and the configured key's own.",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on stderr (default: when stderr is a terminal).",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            min=1,
            max=64,
            help="Processes that walk a large log on PostgreSQL (default: the cores, at most "
            "4); the result is the same with any number.",
        ),
    ] = None,
) -> None:
    """Walk every chain; report the first broken link (exit 1) or each chain's head, and
    how many rows per second were checked."""
    settings = _settings()
    keys = _trusted_keys(settings, public_key or []) if checkpoints is not None else []
    found = _read_checkpoints(checkpoints, keys) if checkpoints is not None else None
    show = sys.stderr.isatty() if progress is None else progress
    workers = jobs if jobs is not None else min(4, os.cpu_count() or 1)
    seconds = 0.0

    async def run() -> tuple[audit_admin.Verification, list[str]]:
        nonlocal seconds
        db = Database(settings.database_url, tls=settings.database_tls)
        try:
            with _verify_progress(show) as report:
                started = time.perf_counter()
                result = await audit_admin.verify(db, report, jobs=workers)
                seconds = time.perf_counter() - started
            contradictions: list[str] = []
            if found is not None and result.ok:
                contradictions = await audit_checkpoints.check(
                    db, found.checkpoints, retention_days=settings.audit_retention_days
                )
            return result, contradictions
        finally:
            await db.close()

    result, contradictions = _run_async(run)
    if result.broken is not None:
        typer.echo(
            f"BROKEN  row {result.broken.row_id} (chain {result.broken.chain}): "
            f"{result.broken.reason}"
        )
        typer.echo(f"checked {result.rows} rows before the break")
        raise typer.Exit(1)
    problems = (found.problems if found is not None else []) + contradictions
    for problem in problems:
        typer.echo(f"BROKEN  checkpoint: {problem}")
    if problems:
        raise typer.Exit(1)
    for head in result.chains:
        typer.echo(f"chain {head.chain}: {head.rows} rows, head {head.head_id} {head.head_hash}")
    typer.echo(f"ok: {result.rows} rows in {len(result.chains)} chains")
    typer.echo(
        f"checked {result.rows:,} rows in {seconds:.1f} s "
        f"({result.rows / seconds if seconds else 0:,.0f} rows/s)"
    )
    if found is not None:
        newest = max(checkpoint.at for checkpoint in found.checkpoints)
        typer.echo(
            f"ok: {len(found.checkpoints)} signed checkpoints hold "
            f"(from {found.files} files, newest {newest.isoformat()})"
        )


@contextlib.contextmanager
def _verify_progress(show: bool) -> Iterator[audit_admin.VerifyProgress | None]:
    """A progress bar on stderr for :func:`audit_admin.verify` (rows, percent, rows per
    second, time left); nothing when ``show`` is false (stdout stays the report)."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} rows/s")

    bar = Progress(
        TextColumn("verifying"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,} rows"),
        RowsPerSecond(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("verify", total=None)

    def advance(rows: int, expected: int) -> None:
        bar.update(task, completed=rows, total=expected)

    with bar:
        yield advance


def _trusted_keys(settings: Settings, extra: list[str]) -> list[VerifyingKey]:
    try:
        signer = audit_checkpoints.signer_from_settings(settings, create=False)
        keys = trusted_keys(signer, [*settings.audit_checkpoint_public_keys, *extra])
    except CheckpointKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not keys:
        typer.echo(
            "error: no key to check checkpoints with: set AUTHKEEP_AUDIT_CHECKPOINT_PUBLIC_KEYS "
            "or pass --public-key",
            err=True,
        )
        raise typer.Exit(2)
    return keys


def _read_checkpoints(
    directory: Path, keys: list[VerifyingKey]
) -> audit_checkpoints.CheckpointFiles:
    if not directory.is_dir():
        typer.echo(f"error: {directory} is not a directory", err=True)
        raise typer.Exit(2)
    found = audit_checkpoints.read_directory(directory, keys)
    if not found.checkpoints and not found.problems:
        # Fail closed: deleting the checkpoint files must not turn the check off.
        typer.echo(f"BROKEN  checkpoint: no checkpoint found in {directory}")
        raise typer.Exit(1)
    return found


@audit_app.command("checkpoint")
def checkpoint(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to append (default AUTHKEEP_AUDIT_CHECKPOINT_DIR)."),
    ] = None,
) -> None:
    """Verify every chain and sign its head now: printed, logged as audit_checkpoint and
    appended to the day's file in the checkpoint directory. A broken chain is not signed
    (exit 1)."""
    settings = _settings()
    try:
        signer = audit_checkpoints.signer_from_settings(settings)
    except CheckpointKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if signer is None:
        typer.echo(
            "error: set AUTHKEEP_AUDIT_CHECKPOINT_KEY ('authkeep audit checkpoint-key' makes one)",
            err=True,
        )
        raise typer.Exit(2)
    # The log stream carries a copy of each checkpoint, as the service's JSON lines.
    configure_logging(settings.log_level, settings.log_format)
    writer = audit_checkpoints.CheckpointWriter(directory or settings.audit_checkpoint_dir)
    previous: dict[str, audit_checkpoints.Checkpoint] = {}
    if writer.directory is not None and writer.directory.is_dir():
        # Each new checkpoint must extend this key's previous one: a chain cut or rewritten
        # since is reported, not signed again.
        found = audit_checkpoints.read_directory(writer.directory, [signer.verifying_key])
        previous = audit_checkpoints.latest_by_chain(found.checkpoints)

    async def run() -> audit_checkpoints.CheckpointRun:
        db = Database(settings.database_url, tls=settings.database_tls)
        try:
            return await audit_checkpoints.take(
                db,
                signer,
                previous=previous,
                retention_days=settings.audit_retention_days,
                only_moved=False,
            )
        finally:
            await db.close()

    result = _run_async(run)
    path = writer.write(result.signed)
    for signed in result.signed:
        typer.echo(signed.line())
    where = f" to {path}" if path is not None else " (log stream only: no directory set)"
    typer.echo(f"signed {len(result.signed)} chain heads with key {signer.kid}{where}", err=True)
    for broken in result.broken:
        typer.echo(
            f"BROKEN  row {broken.row_id} (chain {broken.chain}): {broken.reason}; not signed",
            err=True,
        )
    if result.broken:
        raise typer.Exit(1)


@audit_app.command("checkpoint-key")
def checkpoint_key(
    public: Annotated[
        bool, typer.Option("--public", help="Print the configured key's public half.")
    ] = False,
) -> None:
    """Print a new checkpoint key pair (or, with --public, the configured key's public key,
    for verifiers' AUTHKEEP_AUDIT_CHECKPOINT_PUBLIC_KEYS)."""
    if public:
        settings = _settings()
        try:
            signer = audit_checkpoints.signer_from_settings(settings, create=False)
        except CheckpointKeyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if signer is None:
            typer.echo("error: no checkpoint key is configured", err=True)
            raise typer.Exit(2)
        typer.echo(signer.public_text)
        return
    new = CheckpointSigner.generate()
    typer.echo(f"AUTHKEEP_AUDIT_CHECKPOINT_KEY={new.private_text()}")
    typer.echo(f"public key (kid {new.kid}): {new.public_text}")


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
    """Print matching rows as JSON lines, oldest first: ``ip`` in clear (null once its
    account was erased), ``ip_stored`` as stored and hashed."""
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

    # The data keys open the addresses; without them (production with no
    # AUTHKEEP_DATA_KEYS) every sealed address exports as null.
    envelope = build_envelope(settings)
    if envelope is None:
        typer.echo("warning: AUTHKEEP_DATA_KEYS is not set: IP addresses export as null", err=True)

    async def run() -> int:
        db = Database(settings.database_url, tls=settings.database_tls)
        count = 0
        try:
            async for row in audit_admin.export(db, where, envelope=envelope):
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
        db = Database(url, tls=settings.audit_purge_database_tls)
        try:
            return await audit_admin.purge(db, retention_days=settings.audit_retention_days)
        finally:
            await db.close()

    report = _run_async(run)
    typer.echo(
        f"purged {report.deleted} audit rows older than {report.cutoff.isoformat()} "
        f"(retention {report.retention_days} days)"
    )
