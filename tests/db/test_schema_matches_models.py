"""The tables the migrations build are the tables the models describe.

Services query through the models (``db/models.py``); the database is built only by the
migrations. A column a model has and a migration forgot fails at the first query that
touches it — on one backend only, if the migration differs per dialect. Alembic's
autogenerate comparison finds every such drift before a query does.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from authkeep.db.base import Base
from authkeep.db.engine import Database
from conftest import Backend

# Tables only the migrations know: the audit log's commit-time staging table (PostgreSQL,
# filled and emptied inside each transaction by db/audit.py's triggers).
MIGRATION_ONLY_TABLES = {"audit_pending"}


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _meaningful(diff: Any) -> bool:
    kind = diff[0] if isinstance(diff, tuple) else None
    if kind == "remove_table" and diff[1].name in MIGRATION_ONLY_TABLES:
        return False
    # SQLite reflects a foreign key added by ALTER TABLE without its name: the same key,
    # reported as removed (unnamed) and added (named). Compare what it links, not the name.
    return kind not in ("remove_fk", "add_fk")


def _fk_links(diffs: list[Any], kind: str) -> set[tuple[str, tuple[str, ...], str]]:
    return {
        (
            d[1].table.name,
            tuple(c.name for c in d[1].columns),
            d[1].elements[0].target_fullname,
        )
        for d in diffs
        if isinstance(d, tuple) and d[0] == kind
    }


async def test_the_migrated_schema_matches_the_models(backend: Backend) -> None:
    database = Database(backend.owner_url)
    try:
        async with database.engine.connect() as conn:
            diffs = await conn.run_sync(_differences)
    finally:
        await database.close()
    assert [d for d in diffs if _meaningful(d)] == []
    # A foreign key missing (or extra) on either side is still drift.
    assert _fk_links(diffs, "remove_fk") == _fk_links(diffs, "add_fk")
