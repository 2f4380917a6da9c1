"""Callbacks that run once a write transaction has committed (not before, not on rollback).

SQLAlchemy's Core ``commit`` event fires *before* the database commits, so a worker woken
from it could look for the new row before it is visible and go back to sleep. Callbacks
registered here run after :meth:`authkeep.db.engine.Database.transaction` has committed; a
transaction that rolls back (or fails to commit) drops them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

log = structlog.get_logger("authkeep.db")

_pending: weakref.WeakKeyDictionary[AsyncConnection, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the transaction open on ``conn`` has committed."""
    _pending.setdefault(conn, []).append(callback)


def discard(conn: AsyncConnection) -> None:
    """Forget the callbacks of ``conn``'s transaction (it rolled back)."""
    _pending.pop(conn, None)


def run(conn: AsyncConnection) -> None:
    """Run the callbacks of ``conn``'s committed transaction; one that fails is logged and
    does not stop the others (the change is committed whatever they do)."""
    for callback in _pending.pop(conn, ()):
        try:
            callback()
        except Exception:  # the commit stands; a failed notification must not undo it
            log.warning("after_commit_callback_failed", exc_info=True)
