"""Run Alembic migrations programmatically, from the CLI or from tests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from authkeep.db import roles
from authkeep.db.engine import Database
from authkeep.security.configured import build_envelope, has_data_keys
from authkeep.security.envelope import Envelope
from authkeep.settings import Settings

# The advisory-lock key of migrations: any constant nothing else locks on (the package name
# read as a number, halved to fit PostgreSQL's signed bigint).
MIGRATION_LOCK = int.from_bytes(b"authkeep", "big") >> 1

ENVELOPE = "envelope"
"""The key of the :class:`~authkeep.security.envelope.Envelope` in Alembic's
``config.attributes``: migrations that encrypt existing personal data (0013) seal with it."""


class DataKeysRequired(RuntimeError):
    """A migration must encrypt (or decrypt) existing personal data, and was given no data
    keys: the message says what to do, in one line."""


def alembic_config(version_locations: Sequence[str | Path] = ()) -> Config:
    """Alembic configuration pointing at the migrations shipped inside the package, plus
    the ``versions`` directories of an application's own migrations (``version_locations``;
    each such migration names ``depends_on = "0003_orgs"`` or later, on a branch of its own)."""
    config = Config()
    config.set_main_option("script_location", "authkeep:migrations")
    if version_locations:
        ours = Path(__file__).resolve().parent.parent / "migrations" / "versions"
        locations = [str(ours), *(str(Path(p).resolve()) for p in version_locations)]
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", os.pathsep.join(locations))
    return config


def _upgrade(
    connection: Connection,
    revision: str,
    role_config: roles.RoleConfig,
    version_locations: Sequence[str | Path] = (),
    envelope: Envelope | None = None,
) -> None:
    config = alembic_config(version_locations)
    config.attributes["connection"] = connection
    config.attributes[roles.ATTRIBUTE] = role_config
    config.attributes[ENVELOPE] = envelope
    command.upgrade(config, revision)
    # Also when nothing was upgraded: a role configured after the schema was created gets
    # its grants, and a changed retention reaches the policy row.
    roles.apply(connection, role_config)


async def upgrade(
    database: Database,
    revision: str = "heads",
    *,
    role_config: roles.RoleConfig | None = None,
    version_locations: Sequence[str | Path] = (),
    envelope: Envelope | None = None,
) -> None:
    """Bring the schema of ``database`` to ``revision`` (default: the newest of every
    branch), then apply ``role_config`` (grants to the app and purge roles, audit retention
    policy). Run it as the role that owns the schema. ``version_locations`` adds an
    application's own migration directories (see :func:`alembic_config`).

    ``envelope``: the data keys that migration 0013 encrypts existing personal data with
    (the running service's, ``AUTHKEEP_DATA_KEYS``). An empty database needs none; one with
    accounts and none given stops with :class:`DataKeysRequired`."""
    # Services that start together on a fresh database (replicas, hosts) would each create
    # the tables, and all but one would crash. The migration is one transaction that first
    # takes a lock: on PostgreSQL a transaction-scoped advisory lock, on SQLite the write
    # lock (BEGIN IMMEDIATE). The next in line then finds the schema at head.
    async with database.schema_transaction() as conn:
        if database.is_postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(
            _upgrade,
            revision,
            role_config or roles.RoleConfig(),
            tuple(version_locations),
            envelope,
        )


def role_config(settings: Settings) -> roles.RoleConfig:
    """The database roles and audit policy that ``settings`` configure."""
    return roles.RoleConfig(
        app_role=settings.database_app_role,
        purge_role=settings.audit_purge_role,
        audit_retention_days=settings.audit_retention_days,
    )


async def run_migrations(
    settings: Settings, *, version_locations: Sequence[str | Path] = ()
) -> None:
    """What ``authkeep migrate`` does — authkeep's migrations to head, run as the schema
    owner (``AUTHKEEP_MIGRATION_DATABASE_URL``), then the grants to
    ``AUTHKEEP_DATABASE_APP_ROLE`` — plus an application's own migration directories.

    Give those migrations ``depends_on = "0003_orgs"`` and a ``branch_labels`` of their own.
    Once a database holds revisions of your directories, migrate it with this function
    (or ``authkeep migrate`` would not know those revisions and refuse).
    """
    # The keys the service will read with (production without AUTHKEEP_DATA_KEYS has none:
    # an empty database migrates, one with accounts stops with DataKeysRequired).
    envelope = build_envelope(settings) if has_data_keys(settings) else None
    db = Database(settings.migrations_url, tls=settings.migration_database_tls)
    try:
        await upgrade(
            db,
            role_config=role_config(settings),
            version_locations=version_locations,
            envelope=envelope,
        )
    finally:
        await db.close()
