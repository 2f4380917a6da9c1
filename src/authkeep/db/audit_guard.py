"""The database-level guard that makes ``audit_log`` append-only.

Used by migration ``0002_audit`` (which creates it) and by the SQLite purge (which drops and
recreates one trigger inside its own transaction). Changing a statement here changes no
existing database: ship it in a new migration.

PostgreSQL: one trigger function rejects every UPDATE, every TRUNCATE and every DELETE, except
a DELETE by a member of the purge role (``audit_policy.purge_role``; a superuser must
``SET ROLE`` to it deliberately) of a row older than ``audit_policy.retention_days``.

SQLite has no roles: two triggers reject UPDATE and DELETE for every connection, and
``authkeep audit purge`` lifts the DELETE one for the length of one transaction. Anyone who can
write the file can do the same, so on SQLite the guard stops mistakes and a compromised app
using authkeep's own code paths, not a hostile operator (the hash chain still shows them).
"""

from __future__ import annotations

UPDATE_REFUSED = "audit_log is append-only: rows are never updated"
# No quote characters in these two: they are spliced into SQL string literals.
DELETE_REFUSED = "audit_log is append-only: rows are deleted only by the retention purge"

SQLITE_NO_UPDATE = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    f"BEGIN SELECT RAISE(ABORT, '{UPDATE_REFUSED}'); END"
)
SQLITE_NO_DELETE = (
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    f"BEGIN SELECT RAISE(ABORT, '{DELETE_REFUSED}'); END"
)
SQLITE_CREATE = (SQLITE_NO_UPDATE, SQLITE_NO_DELETE)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS audit_log_no_update",
    "DROP TRIGGER IF EXISTS audit_log_no_delete",
)


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def postgres_create(schema: str) -> list[str]:
    """The guard function and its triggers, for tables in ``schema``."""
    policy = f"{quote_ident(schema)}.audit_policy"
    # search_path is pinned (pg_temp last) and the policy table schema-qualified: otherwise
    # the purge role could create a TEMP table named audit_policy, which the function would
    # read first, and declare a retention of zero days.
    function = f"""
CREATE OR REPLACE FUNCTION {quote_ident(schema)}.authkeep_audit_log_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $guard$
DECLARE
    policy record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT p.retention_days, p.purge_role INTO policy FROM {policy} AS p WHERE p.id = 1;
        IF policy.purge_role IS NOT NULL
           AND EXISTS (
               SELECT 1 FROM pg_roles AS r
               WHERE r.rolname = policy.purge_role
                 AND pg_has_role(current_user, r.oid, 'MEMBER'))
           AND NOT (SELECT r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user)
           AND OLD.at < now() - make_interval(days => policy.retention_days)
        THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '{DELETE_REFUSED}' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION '{UPDATE_REFUSED} (%)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$guard$
"""  # noqa: S608  (schema is a quoted identifier read from the server, not input)
    guard = f"{quote_ident(schema)}.authkeep_audit_log_guard()"
    table = f"{quote_ident(schema)}.audit_log"
    return [
        function,
        f"CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {guard}",
        f"CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {guard}",
    ]


def postgres_drop(schema: str) -> list[str]:
    """Undo :func:`postgres_create`."""
    table = f"{quote_ident(schema)}.audit_log"
    return [
        f"DROP TRIGGER IF EXISTS audit_log_no_truncate ON {table}",
        f"DROP TRIGGER IF EXISTS audit_log_append_only ON {table}",
        f"DROP FUNCTION IF EXISTS {quote_ident(schema)}.authkeep_audit_log_guard()",
    ]
