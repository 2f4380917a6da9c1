"""Keyset batches and compare-and-set updates for jobs that walk a whole table while the
service runs (``authkeep keys rotate-data``), and the positions where they stopped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from authkeep.db.base import utcnow
from authkeep.db.models import MaintenancePosition


async def replace_many(
    conn: AsyncConnection,
    key: InstrumentedAttribute[Any],
    column: InstrumentedAttribute[Any],
    changes: Sequence[tuple[Any, Any, Any]],
) -> int:
    """Set ``column`` from ``old`` to ``new`` for many ``(key, old, new)`` rows, each only
    where it still holds ``old`` (compare-and-set: a concurrent write, which used the newest
    key already, wins), as one executemany: one round trip per batch, not per row. Returns
    the rows changed, or — where the driver cannot count an executemany — how many were
    asked."""
    if not changes:
        return 0
    stmt = (
        update(column.class_)
        .where(key == bindparam("row_key"), column == bindparam("old_value"))
        .values({column.key: bindparam("new_value")})
    )
    result = await conn.execute(
        stmt, [{"row_key": k, "old_value": old, "new_value": new} for k, old, new in changes]
    )
    return result.rowcount if result.rowcount >= 0 else len(changes)


async def count(conn: AsyncConnection, where: ColumnElement[bool]) -> int:
    """How many rows match ``where`` (the rows a phase still has to do)."""
    return int((await conn.execute(select(func.count()).where(where))).scalar_one())


async def get_position(conn: AsyncConnection, job: str) -> str | None:
    """Where ``job`` stopped, or None."""
    return (
        await conn.execute(
            select(MaintenancePosition.position).where(MaintenancePosition.job == job)
        )
    ).scalar_one_or_none()


async def set_position(conn: AsyncConnection, job: str, position: str) -> None:
    """Record that ``job`` finished everything up to ``position``."""
    changed = await conn.execute(
        update(MaintenancePosition)
        .where(MaintenancePosition.job == job)
        .values(position=position, updated_at=utcnow())
    )
    if not changed.rowcount:
        await conn.execute(
            insert(MaintenancePosition).values(job=job, position=position, updated_at=utcnow())
        )


async def clear_position(conn: AsyncConnection, job: str) -> None:
    """``job`` is complete: the next run starts from the first row."""
    await conn.execute(delete(MaintenancePosition).where(MaintenancePosition.job == job))
