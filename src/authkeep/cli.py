"""The ``authkeep`` command line (typer)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from authkeep.audit_cli import audit_app
from authkeep.config_report import describe_load_error, problem_lines, setting_lines, verdict
from authkeep.db import migrate as migrations
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.errors import AuthkeepError, Conflict
from authkeep.key_report import key_report_lines
from authkeep.security.data_keys import new_data_key_entry
from authkeep.security.emails import email_key_of
from authkeep.security.keys import KeyConfigError, generate_key
from authkeep.settings import InspectedSettings, Settings, find_problems
from authkeep.tls import TLSError

if TYPE_CHECKING:
    from authkeep.services.privacy.purge import PurgeReport

app = typer.Typer(help="authkeep: authentication and authorization for FastAPI backends.")
keys_app = typer.Typer(help="Keys: token signing key pairs (EdDSA/RS256) and data keys.")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")

T = TypeVar("T")

DEMO_PASSWORD = "demo-only Pa55phrase, never in production"
DEMO_USERS = ("admin@demo.example.com", "editor@demo.example.com", "viewer@demo.example.com")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 with one line per setting to fix."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        raise _fail(f"configuration refused: {'; '.join(describe_load_error(exc))}", 2) from None


def _show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"authkeep {package_version('authkeep')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """authkeep: authentication and authorization for FastAPI backends."""


def _run(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except (TLSError, migrations.DataKeysRequired) as exc:
        # A wrong CA, host name or a server without TLS (serve and migrate meet it first),
        # or data to encrypt without the data keys: one line naming the setting to fix, not
        # a traceback.
        raise _fail(str(exc)) from None


async def _migrate(settings: Settings) -> None:
    # As the schema owner (AUTHKEEP_MIGRATION_DATABASE_URL), granting the app role only
    # what it needs: the app itself cannot alter tables or drop the audit log's triggers.
    await migrations.run_migrations(settings)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Migrate the database to head, then serve the API."""
    import uvicorn

    from authkeep.http.server_protocol import MAX_HEADER_BYTES

    settings = load_settings()
    if workers > 1 and settings.redis_url is None:
        if settings.is_production:
            raise _fail(
                "several workers need AUTHKEEP_REDIS_URL: without it, rate limits and "
                "revocations are per process",
                2,
            )
        typer.echo(
            "warning: several workers without AUTHKEEP_REDIS_URL: rate limits and "
            "revocations are per process",
            err=True,
        )
    _run(lambda: _migrate(settings))
    created_metrics_dir = prepare_metrics_dir(workers)
    try:
        uvicorn.run(
            "authkeep.http.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,  # authkeep logs each request itself, without the query string
            proxy_headers=False,  # X-Forwarded-For is honoured only from AUTHKEEP_TRUSTED_PROXIES
            server_header=False,
            log_config=None,
            # 431 for an oversized header and a lingering close after it, not a reset.
            http="authkeep.http.server_protocol:LingeringH11Protocol",
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
    finally:
        if created_metrics_dir is not None:
            shutil.rmtree(created_metrics_dir, ignore_errors=True)


def prepare_metrics_dir(workers: int) -> Path | None:
    """Set up Prometheus' multiprocess directory for this run; return it if created here.

    Several workers each count their own requests; prometheus-client sums them at scrape
    time from files in ``PROMETHEUS_MULTIPROC_DIR``. A directory given by the environment
    is emptied (files of a previous run would be added to this one's counts); otherwise,
    with several workers, a private temporary one is created (and removed on exit). Workers
    are spawned fresh, so they see the variable before importing prometheus-client.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return None
    if workers <= 1:
        return None
    created = Path(tempfile.mkdtemp(prefix="authkeep-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(created)
    return created


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the newest revision."""
    settings = load_settings()
    _run(lambda: _migrate(settings))
    typer.echo("database is at head")


def _admin_password() -> str:
    from_env = os.environ.get("AUTHKEEP_ADMIN_PASSWORD")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise _fail("set AUTHKEEP_ADMIN_PASSWORD or run in a terminal to be prompted")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


async def _create_admin(settings: Settings, email: str) -> str:
    from authkeep.wiring import running

    async with running(settings) as services:
        async with services.db.transaction() as conn:
            found = await user_rows.get_credentials(conn, services.envelope, email_key_of(email))
            if found is not None:
                # The operator vouches for the address: an admin must be able to sign in
                # with AUTHKEEP_EMAIL_VERIFICATION=required.
                user = found[0]
                verified_at = user.email_verified_at or utcnow()
                await user_rows.update_user(
                    conn, user.id, is_superuser=True, email_verified_at=verified_at
                )
                return f"promoted {user.email} to platform admin"
        user = await services.accounts.register(
            email=email, password=_admin_password(), is_superuser=True, email_verified=True
        )
        return f"created platform admin {user.email}"


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="Email of the admin to create or promote.")],
) -> None:
    """Create (or promote) a platform admin. Password: AUTHKEEP_ADMIN_PASSWORD or a prompt."""
    settings = load_settings()
    _run(lambda: _migrate(settings))
    try:
        typer.echo(_run(lambda: _create_admin(settings, email)))
    except AuthkeepError as exc:
        raise _fail(_describe(exc)) from None


def _describe(exc: AuthkeepError) -> str:
    detail = getattr(exc, "field", None)
    return f"{detail}: {exc.detail}" if detail else exc.detail


@app.command("seed-demo")
def seed_demo() -> None:
    """Create demo users. Refuses unless AUTHKEEP_DEMO_MODE=true, and always in production."""
    settings = load_settings()
    if settings.is_production:
        raise _fail("seed-demo never runs in production")
    if not settings.demo_mode:
        raise _fail(
            "seed-demo needs AUTHKEEP_DEMO_MODE=true (demo accounts have a public password)"
        )
    _run(lambda: _migrate(settings))

    async def seed() -> list[str]:
        from authkeep.wiring import running

        created = []
        async with running(settings) as services:
            for email in DEMO_USERS:
                try:
                    await services.accounts.register(
                        email=email,
                        password=DEMO_PASSWORD,
                        full_name=email.split("@")[0].title(),
                        email_verified=True,
                    )
                    created.append(email)
                except Conflict:
                    pass
        return created

    created = _run(seed)
    typer.echo(f"demo users ({len(created)} new), password {DEMO_PASSWORD!r}:")
    for email in DEMO_USERS:
        typer.echo(f"  {email}")


@app.command("check-config")
def check_config(
    production: Annotated[
        bool, typer.Option("--production", help="Judge the configuration as production would.")
    ] = False,
) -> None:
    """Print every setting (secrets hidden) and each problem with its reason and fix; exit 1
    on a problem that the configured environment (or, with --production, production) would
    refuse."""
    try:
        settings = InspectedSettings()
    except (ValidationError, SettingsError) as exc:
        for line in describe_load_error(exc):
            typer.echo(f"REFUSE  {line}")
        raise typer.Exit(1) from None
    for line in setting_lines(settings):
        typer.echo(line)
    typer.echo("")
    for line in key_report_lines(settings):  # each key's id and age, never the key
        typer.echo(line)
    problems = find_problems(settings)
    typer.echo("")
    for line in problem_lines(problems):
        typer.echo(line)
    closing, refused = verdict(problems, "production" if production else settings.env)
    for line in closing:
        typer.echo(line)
    if refused:
        raise typer.Exit(1)


@app.command()
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")
    ] = False,
) -> None:
    """Run every time-based clean-up (daily, e.g. from cron); safe while serving.

    Ended sessions and expired refresh tokens; erasure of the accounts whose deletion is
    due (AUTHKEEP_ACCOUNT_DELETION_GRACE_DAYS); warnings to, then deletion of, accounts
    unused for AUTHKEEP_INACTIVE_ACCOUNT_DAYS; expired MFA and WebAuthn challenges and spent
    emailed links; audit rows older than AUTHKEEP_AUDIT_RETENTION_DAYS (on PostgreSQL only
    with AUTHKEEP_AUDIT_PURGE_DATABASE_URL). Exit 1 when an account's erasure failed (it is
    retried next run). See docs/privacy.md.
    """
    settings = load_settings()

    async def run() -> PurgeReport:
        from authkeep.db.engine import Database
        from authkeep.services.privacy.purge import audit_purge_url
        from authkeep.wiring import running

        audit_url = audit_purge_url(settings)
        async with running(settings) as services:
            # The audit rows are the purge role's to delete (docs/audit.md): its own login.
            audit_db = (
                Database(audit_url, tls=settings.audit_purge_database_tls)
                if audit_url is not None
                else None
            )
            try:
                if dry_run:
                    return await services.purge.preview(audit_db=audit_db)
                return await services.purge.run(audit_db=audit_db)
            finally:
                if audit_db is not None:
                    await audit_db.close()

    report = _run(run)
    for line in report.lines():
        typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def worker() -> None:
    """Deliver the outbox (emails, webhooks) until SIGTERM or SIGINT, finishing the message
    in flight. Run any number beside `serve` (then set AUTHKEEP_OUTBOX_IN_PROCESS=false)."""
    settings = load_settings()
    _run(lambda: _deliver_outbox(settings))


async def _deliver_outbox(settings: Settings) -> None:
    import signal

    from authkeep.db.engine import Database
    from authkeep.logging import configure_logging
    from authkeep.services.delivery import build_delivery
    from authkeep.wiring import build_data_box

    configure_logging(settings.log_level, settings.log_format)
    db = Database(
        settings.database_url, pool_size=settings.database_pool_size, tls=settings.database_tls
    )
    # The data keys open the webhook signing secrets: without them no webhook is sent.
    data_box = build_data_box(settings)
    delivery = build_delivery(settings, db, data_box=data_box)
    loop = asyncio.get_running_loop()
    stops = (signal.SIGTERM, signal.SIGINT)
    for stop in stops:
        loop.add_signal_handler(stop, delivery.request_stop)
    try:
        await delivery.run()
    finally:
        for stop in stops:
            loop.remove_signal_handler(stop)
        await delivery.close()
        await db.close()


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[
        Path, typer.Option("--dir", help="Key directory (AUTHKEEP_JWT_KEYS_DIR).")
    ] = Path(".authkeep-keys"),
    algorithm: Annotated[
        str, typer.Option("--alg", help="EdDSA (Ed25519) or RS256 (RSA 3072).")
    ] = "EdDSA",
) -> None:
    """Create a new key pair; it signs new tokens, older keys keep verifying."""
    if algorithm not in ("EdDSA", "RS256"):
        raise _fail("--alg must be EdDSA or RS256")
    alg: Literal["EdDSA", "RS256"] = "EdDSA" if algorithm == "EdDSA" else "RS256"
    try:
        path = generate_key(directory, alg)
    except (OSError, KeyConfigError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"created {path} (kid {path.stem}); set AUTHKEEP_JWT_KEYS_DIR={directory}")


@keys_app.command("data-key")
def keys_data_key(
    key_id: Annotated[
        str | None, typer.Option("--id", help="The key's id (default: a random dk-…).")
    ] = None,
) -> None:
    """Print a new AUTHKEEP_DATA_KEYS entry. Put it first in the list; keep the old ones
    after it until every stored value is re-sealed (docs/data-keys.md)."""
    try:
        typer.echo(new_data_key_entry(key_id))
    except ValueError as exc:
        raise _fail(str(exc)) from None


@keys_app.command("rotate-data")
def keys_rotate_data(
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Rows per transaction.")
    ] = 500,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would change; change nothing.")
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)."),
    ] = None,
) -> None:
    """Re-encrypt stored personal data and secrets under the newest AUTHKEEP_DATA_KEYS entry,
    in batches, while the service runs; an interrupted run goes on where it stopped. Put the
    new key first on every worker before running it (docs/data-keys.md)."""
    settings = load_settings()
    _run(lambda: _rotate_data(settings, batch_size, dry_run=dry_run, progress=progress))


async def _rotate_data(
    settings: Settings, batch_size: int, *, dry_run: bool, progress: bool | None
) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TimeRemainingColumn,
    )

    from authkeep.db.engine import Database
    from authkeep.security.envelope import Envelope
    from authkeep.services.privacy.rotation import DataRotation
    from authkeep.wiring import build_data_box

    envelope = Envelope(build_data_box(settings))
    # The schema owner: row-level security would hide other organizations' rows.
    db = Database(settings.migrations_url, tls=settings.migration_database_tls)
    try:
        rotation = DataRotation(db, envelope, batch_size=batch_size)
        if dry_run:
            for name, rows in (await rotation.pending()).items():
                typer.echo(f"{name}: {rows} rows to re-encrypt")
            typer.echo(f"audit rows on older keys: {await rotation.audit_rows_on_old_keys()}")
            return
        show = sys.stderr.isatty() if progress is None else progress
        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not show,
        )
        tasks: dict[str, TaskID] = {}

        def advance(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        with bar:
            report = await rotation.run(advance)
    finally:
        await db.close()
    for done in report.phases:
        typer.echo(
            f"{done.name}: {done.changed} re-encrypted, {done.unreadable} unreadable, "
            f"{done.rows_per_second:,.0f} rows/s"
        )
    typer.echo(
        f"audit rows still sealed with an older key: {report.audit_rows_on_old_keys} "
        "(keep that key in AUTHKEEP_DATA_KEYS until the audit retention purge removes them)"
    )


@keys_app.command("rotate")
def keys_rotate(
    force: Annotated[
        bool, typer.Option("--force", help="Make a successor now, whatever the key's age.")
    ] = False,
) -> None:
    """Run the rotation schedule on AUTHKEEP_JWT_KEYS_DIR (daily, e.g. from cron): make a
    successor published AUTHKEEP_JWT_KEY_PREPUBLISH_HOURS before it signs, once the signing
    key nears AUTHKEEP_KEY_MAX_AGE_DAYS; delete keys no unexpired token can need."""
    from datetime import timedelta

    from authkeep.security.key_schedule import rotate

    settings = load_settings()
    if settings.jwt_keys_dir is None:
        raise _fail(
            "AUTHKEEP_JWT_KEYS_DIR is not set; HS256 secrets rotate through "
            "AUTHKEEP_PREVIOUS_SECRET_KEYS (docs/key-rotation.md)"
        )
    longest = max(
        timedelta(minutes=settings.access_token_expire_minutes), settings.session_lifetime
    )
    try:
        result = rotate(
            settings.jwt_keys_dir,
            max_age=timedelta(days=settings.key_max_age_days),
            prepublish=timedelta(hours=settings.jwt_key_prepublish_hours),
            retire_after=longest + timedelta(seconds=settings.jwt_leeway_seconds),
            force=force,
        )
    except (OSError, KeyConfigError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"signing: {result.signing}")
    if result.generated is not None and result.active_from is not None:
        typer.echo(
            f"generated: {result.generated}, published now, signs from "
            f"{result.active_from.isoformat()}; restart every worker before then"
        )
    for kid in result.retired:
        typer.echo(f"retired: {kid}")
    if result.generated is None and not result.retired:
        typer.echo("nothing due")


def main() -> None:
    """Entry point of the ``authkeep`` console script."""
    try:
        app()
    except (ValidationError, SettingsError) as exc:
        # A command that read its settings some other way than load_settings: still one
        # line per setting, not a traceback that may hold the value.
        typer.echo(f"error: configuration refused: {'; '.join(describe_load_error(exc))}", err=True)
        raise SystemExit(2) from None
