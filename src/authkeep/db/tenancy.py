"""Tenant tables: an ``organization_id`` on every row, and PostgreSQL row-level security.

In a migration, one call makes a table a tenant table::

    from authkeep import enable_tenancy

    def upgrade() -> None:
        op.create_table("projects", sa.Column("id", sa.Uuid(), primary_key=True), ...)
        enable_tenancy(op, "projects")

It adds ``organization_id`` (NOT NULL, foreign key to ``organizations`` with ``ON DELETE
CASCADE``), an index on it and, on PostgreSQL, the policy::

    ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
    ALTER TABLE projects FORCE ROW LEVEL SECURITY;
    CREATE POLICY authkeep_tenant_isolation ON projects
        USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
        WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

``app.org_id`` is set per transaction by :meth:`authkeep.db.engine.Database.
tenant_transaction` from the verified caller; with no organization set the comparison is
NULL and no row is visible or writable. ``FORCE`` binds the table owner too; only a superuser
or a ``BYPASSRLS`` role is exempt, and the app role is neither (``authkeep.db.roles``).
``NULLIF`` matters: after a ``SET LOCAL`` the setting reads ``''`` (not NULL) for the rest of
the pooled connection's life, and ``''::uuid`` would be an error instead of "no rows".

On SQLite there is no row-level security: the ``WHERE organization_id = ...`` that every
query writes is the only guard.

Adding the column needs an empty table (a NOT NULL column has no value for existing rows):
call :func:`enable_tenancy` in the migration that creates the table. For an existing table,
add and backfill the column yourself, then call ``enable_tenancy(op, table,
add_column=False)`` for the index and the policy.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.audit_guard import quote_ident
from authkeep.db.engine import ORG_SETTING, Database


class Operations(Protocol):
    """The part of Alembic's ``op`` the helpers use (``alembic.op`` or an ``Operations``)."""

    def batch_alter_table(self, table_name: str) -> Any: ...

    def create_index(self, index_name: str, table_name: str, columns: list[str]) -> Any: ...

    def drop_index(self, index_name: str, table_name: str) -> Any: ...

    def execute(self, sqltext: str) -> Any: ...

    def get_bind(self) -> Connection: ...


TENANT_COLUMN = "organization_id"
POLICY_NAME = "authkeep_tenant_isolation"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _checked(name: str) -> str:
    # Identifiers cannot be bound parameters; only plain names reach the DDL below.
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def current_org_expression(setting: str = ORG_SETTING) -> str:
    """SQL for the organization bound to the current transaction (NULL when none)."""
    return f"NULLIF(current_setting('{setting}', true), '')::uuid"


def policy_statements(table: str, column: str = TENANT_COLUMN) -> list[str]:
    """The PostgreSQL statements that restrict ``table`` to the current organization."""
    what = quote_ident(_checked(table))
    check = f"{quote_ident(_checked(column))} = {current_org_expression()}"
    return [
        f"ALTER TABLE {what} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {what} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {POLICY_NAME} ON {what} AS PERMISSIVE FOR ALL TO PUBLIC "
        f"USING ({check}) WITH CHECK ({check})",
    ]


def drop_policy_statements(table: str) -> list[str]:
    """The statements that undo :func:`policy_statements`."""
    what = quote_ident(_checked(table))
    return [
        f"DROP POLICY IF EXISTS {POLICY_NAME} ON {what}",
        f"ALTER TABLE {what} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {what} DISABLE ROW LEVEL SECURITY",
    ]


def _names(table: str, column: str) -> tuple[str, str]:
    return f"fk_{table}_{column}_organizations", f"ix_{table}_{column}"


def enable_tenancy(
    op: Operations, table: str, *, add_column: bool = True, column: str = TENANT_COLUMN
) -> None:
    """Make ``table`` a tenant table (call inside an Alembic migration's ``upgrade``).

    Adds ``column`` (unless ``add_column`` is False) with its foreign key to
    ``organizations`` and its index, then, on PostgreSQL, enables and forces row-level
    security with the ``authkeep_tenant_isolation`` policy. Needs authkeep's migration
    ``0003_orgs`` (give your migration ``depends_on = "0003_orgs"``).
    """
    table, column = _checked(table), _checked(column)
    fk_name, index_name = _names(table, column)
    if add_column:
        # Batch mode: SQLite cannot add a NOT NULL column with a foreign key in place, so
        # Alembic rebuilds the table there; PostgreSQL gets plain ALTER TABLE statements.
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(column, sa.Uuid(), nullable=False))
            batch.create_foreign_key(fk_name, "organizations", [column], ["id"], ondelete="CASCADE")
    op.create_index(index_name, table, [column])
    if op.get_bind().dialect.name == "postgresql":
        for statement in policy_statements(table, column):
            op.execute(statement)


def disable_tenancy(
    op: Operations, table: str, *, drop_column: bool = True, column: str = TENANT_COLUMN
) -> None:
    """Undo :func:`enable_tenancy` (for a migration's ``downgrade``)."""
    table, column = _checked(table), _checked(column)
    fk_name, index_name = _names(table, column)
    if op.get_bind().dialect.name == "postgresql":
        for statement in drop_policy_statements(table):
            op.execute(statement)
    op.drop_index(index_name, table_name=table)
    if drop_column:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(fk_name, type_="foreignkey")
            batch.drop_column(column)


@dataclass(frozen=True, slots=True)
class TenantDatabase:
    """The database, bound to one organization: every transaction it opens sets
    ``app.org_id``, so PostgreSQL's row-level security applies. Queries should still filter
    on ``organization_id`` — that is the only guard on SQLite, and it lets indexes work."""

    db: Database
    org_id: uuid.UUID

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL (row-level security applies)."""
        return self.db.is_postgres

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction in this organization."""
        async with self.db.tenant_transaction(self.org_id) as conn:
            yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction in this organization."""
        async with self.db.tenant_reading(self.org_id) as conn:
            yield conn


def tenant_table(name: str, metadata: sa.MetaData, *columns: Any) -> sa.Table:
    """A SQLAlchemy Core table with authkeep's ``organization_id`` column, for queries in
    your code (the migration creates the real one with :func:`enable_tenancy`)."""
    return sa.Table(
        name,
        metadata,
        *columns,
        sa.Column(TENANT_COLUMN, sa.Uuid(), nullable=False, index=True),
    )
