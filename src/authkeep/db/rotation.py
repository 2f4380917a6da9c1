"""Keyset batches and compare-and-set updates for jobs that walk a whole table while the
service runs (``authkeep keys rotate-data``), and the positions where they stopped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from authkeep.db.base import utcnow
from authkeep.db.models import MaintenancePosition


async def batch(
    conn: AsyncConnection,
    key: InstrumentedAttribute[Any],
    columns: Sequence[Any],
    *,
    after: Any | None,
    limit: int,
    where: ColumnElement[bool] | None = None,
) -> Sequence[Row[Any]]:
    """The next ``limit`` rows by ``key`` after ``after`` (None: from the first), as
    ``(key, *columns)`` tuples. The primary-key order makes the walk resumable."""
    stmt = select(key, *columns).order_by(key).limit(limit)
    if after is not None:
        stmt = stmt.where(key > after)
    if where is not None:
        stmt = stmt.where(where)
    return (await conn.execute(stmt)).all()


async def replace(
    conn: AsyncConnection,
    key: InstrumentedAttribute[Any],
    key_value: Any,
    column: InstrumentedAttribute[Any],
    old: Any,
    new: Any,
) -> bool:
    """Set ``column`` to ``new`` where it is still ``old`` (a concurrent write wins: the
    value it wrote is current already). Returns whether the row was changed."""
    result = await conn.execute(
        update(column.class_).where(key == key_value, column == old).values({column.key: new})
    )
    return bool(result.rowcount)


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
