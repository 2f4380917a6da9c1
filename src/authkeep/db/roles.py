"""PostgreSQL roles: what the app may do to each table, granted by the migrations.

authkeep expects three roles (creating them is the DBA's job: ``CREATE ROLE`` needs a
privilege the schema owner should not have; ``docs/audit.md`` has the statements):

* the **owner** — owns the tables, triggers and policies; runs ``authkeep migrate`` through
  ``AUTHKEEP_MIGRATION_DATABASE_URL``;
* the **app role** (``AUTHKEEP_DATABASE_APP_ROLE``) — what ``AUTHKEEP_DATABASE_URL`` logs in
  as: ``LOGIN NOSUPERUSER NOBYPASSRLS``. It may read and write normal tables, only read and
  append to append-only tables (:data:`APPEND_ONLY_TABLES`), use sequences, and nothing else;
  a compromised app can therefore neither erase the audit log nor switch off its triggers or
  row-level security (which only the owner can);
* the **audit purge role** (``AUTHKEEP_AUDIT_PURGE_ROLE``) — used only by
  ``authkeep audit purge`` (``AUTHKEEP_AUDIT_PURGE_DATABASE_URL``): read, append and delete
  on ``audit_log``, where the guard trigger still refuses rows younger than the retention.

Every migration that creates a table ends with :func:`apply_in_migration`; ``authkeep
migrate`` also calls :func:`apply` after upgrading, so that a role configured later gets its
grants on the next ``migrate``. Both are idempotent and do nothing on SQLite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.audit_guard import quote_ident

APPEND_ONLY_TABLES = frozenset({"audit_log"})
"""The app may SELECT and INSERT these, never UPDATE, DELETE or TRUNCATE."""
OWNER_ONLY_TABLES = frozenset({"alembic_version", "audit_policy"})
"""The app gets no privilege at all on these."""

DEFAULT_PURGE_ROLE = "authkeep_audit_purger"
DEFAULT_RETENTION_DAYS = 730
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
ATTRIBUTE = "authkeep_roles"
"""Key of the :class:`RoleConfig` in Alembic's ``config.attributes``."""


class RoleError(RuntimeError):
    """A configured role is missing or unusable."""


@dataclass(frozen=True, slots=True)
class RoleConfig:
    """The role names and audit policy a migration run applies."""

    app_role: str | None = None
    purge_role: str = DEFAULT_PURGE_ROLE
    audit_retention_days: int = DEFAULT_RETENTION_DAYS

    def __post_init__(self) -> None:
        for name in (self.app_role, self.purge_role):
            # Identifiers cannot be bound parameters; refuse anything but a plain name so
            # a setting cannot smuggle SQL into a GRANT.
            if name is not None and not _IDENTIFIER.fullmatch(name):
                raise RoleError(f"invalid role name {name!r}")
        if self.audit_retention_days < 1:
            raise RoleError("audit retention must be at least one day")


def from_migration_context() -> RoleConfig:
    """The :class:`RoleConfig` of the running migration (defaults when none was given)."""
    from alembic import op

    config = op.get_context().config
    found = config.attributes.get(ATTRIBUTE) if config is not None else None
    return found if isinstance(found, RoleConfig) else RoleConfig()


def apply_in_migration() -> None:
    """Grant the configured roles their privileges on every table; call it at the end of
    each migration that creates tables."""
    from alembic import op

    apply(op.get_bind(), from_migration_context())


def _role_exists(conn: Connection, role: str) -> bool:
    return (
        conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        is not None
    )


def _tables(conn: Connection) -> list[str]:
    rows = conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    ).scalars()
    return sorted(str(name) for name in rows)


def app_grants(tables: list[str], role: str, schema: str) -> list[str]:
    """The statements that give the app role exactly its privileges on ``tables``."""
    who = quote_ident(role)
    statements = []
    for table in tables:
        what = quote_ident(table)
        # REVOKE first: a grant made by hand or by an older authkeep must not linger.
        statements.append(f"REVOKE ALL ON TABLE {what} FROM {who}")
        if table in OWNER_ONLY_TABLES:
            continue
        if table in APPEND_ONLY_TABLES:
            statements.append(f"GRANT SELECT, INSERT ON TABLE {what} TO {who}")
        else:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {what} TO {who}")
    statements.append(
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quote_ident(schema)} TO {who}"
    )
    return statements


def purge_grants(tables: list[str], role: str, schema: str) -> list[str]:
    """The statements that give the purge role its privileges."""
    who = quote_ident(role)
    statements = []
    if "audit_log" in tables:
        statements.append(f"GRANT SELECT, INSERT, DELETE ON TABLE audit_log TO {who}")
    if "audit_policy" in tables:
        statements.append(f"GRANT SELECT ON TABLE audit_policy TO {who}")
    statements.append(
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quote_ident(schema)} TO {who}"
    )
    return statements


def _check_app_role(conn: Connection, role: str) -> None:
    row = conn.execute(
        text(
            "SELECT rolsuper, rolbypassrls, rolname = current_user FROM pg_roles WHERE rolname = :r"
        ),
        {"r": role},
    ).first()
    if row is None:
        raise RoleError(
            f"database role {role!r} (AUTHKEEP_DATABASE_APP_ROLE) does not exist; create it "
            "first (docs/audit.md, 'Database roles')"
        )
    if row[0] or row[1]:
        raise RoleError(
            f"database role {role!r} is a superuser or bypasses row-level security; the app "
            "role must be NOSUPERUSER NOBYPASSRLS"
        )
    if row[2]:
        raise RoleError(
            f"database role {role!r} runs the migrations: the app role must not own the schema"
        )


def apply(conn: Connection, config: RoleConfig) -> None:
    """Write the audit policy and, on PostgreSQL, grant the configured roles their
    privileges on every table of the current schema. Idempotent."""
    tables = (
        _tables(conn)
        if conn.dialect.name == "postgresql"
        else list(
            conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars()
        )
    )
    if "audit_policy" in tables:
        conn.execute(
            text("UPDATE audit_policy SET retention_days = :days, purge_role = :role WHERE id = 1"),
            {"days": config.audit_retention_days, "role": config.purge_role},
        )
    if conn.dialect.name != "postgresql":
        return
    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    statements: list[str] = []
    if config.app_role is not None:
        _check_app_role(conn, config.app_role)
        statements += app_grants(tables, config.app_role, schema)
    if _role_exists(conn, config.purge_role):
        statements += purge_grants(tables, config.purge_role, schema)
    for statement in statements:
        conn.execute(text(statement))


async def connection_problems(conn: AsyncConnection) -> list[str]:
    """What is wrong with the role ``conn`` logs in as, for serving (PostgreSQL; empty on
    SQLite): a superuser, a role that bypasses row-level security, or one that could erase
    the audit log."""
    if conn.dialect.name != "postgresql":
        return []
    row = (
        await conn.execute(
            text(
                "SELECT r.rolname, r.rolsuper, r.rolbypassrls, "
                "CASE WHEN to_regclass('audit_log') IS NULL THEN false ELSE "
                "has_table_privilege(current_user, 'audit_log', 'UPDATE, DELETE, TRUNCATE') "
                "OR pg_has_role(current_user, "
                "(SELECT relowner FROM pg_class WHERE oid = to_regclass('audit_log')), 'MEMBER') "
                "END "
                "FROM pg_roles AS r WHERE r.rolname = current_user"
            )
        )
    ).one()
    name, superuser, bypass_rls, can_erase = row
    problems = []
    if superuser:
        problems.append(
            f"the app connects to PostgreSQL as {name!r}, a superuser: it ignores every "
            "grant, trigger and row-level security policy; connect as a restricted role "
            "(AUTHKEEP_DATABASE_APP_ROLE, docs/audit.md)"
        )
    elif bypass_rls:
        problems.append(
            f"the app's database role {name!r} has BYPASSRLS: row-level security does not "
            "apply to it; use a NOBYPASSRLS role"
        )
    if can_erase and not superuser:
        problems.append(
            f"the app's database role {name!r} may update, delete or truncate audit_log (or "
            "owns it); connect as the restricted app role that migrations grant to"
        )
    return problems
