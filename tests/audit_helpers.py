"""Helpers for the audit tests (importable as ``audit_helpers``): read rows, and tamper with
them the way a DBA with full rights could."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any, cast

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from authkeep import Authkeep
from authkeep.db import audit as audit_rows
from authkeep.db import audit_ips
from authkeep.db.audit import AuditFilter, EntryRecord
from authkeep.db.engine import Database
from authkeep.wiring import Services

STARTUP_ACTIONS = frozenset({"config.problem"})


def services(app: FastAPI) -> Services:
    """The running services of ``app``."""
    return cast(Authkeep, app.state.authkeep).services


async def rows(db: Database, action: str | None = None) -> list[EntryRecord]:
    """Every audit row (or those of ``action``), oldest first, start-up rows left out."""
    async with db.reading() as conn:
        found = [row async for row in audit_rows.walk(conn, AuditFilter(action=action))]
    return [row for row in found if action is not None or row.action not in STARTUP_ACTIONS]


async def app_rows(app: FastAPI, action: str | None = None) -> list[EntryRecord]:
    """:func:`rows` of a running app's database, their IP addresses opened as the readers
    show them (the stored, sealed values: :func:`rows`; such a row's hash no longer
    matches it)."""
    found = await rows(services(app).db, action)
    async with services(app).db.reading() as conn:
        ips = await audit_ips.reveal(conn, services(app).envelope, found)
    return [replace(row, ip=ip) for row, ip in zip(found, ips, strict=True)]


def _sqlite_path(url: str) -> str:
    database = make_url(url).database
    assert database
    return database


async def dba_execute(backend: Any, *statements: str) -> None:
    """Run SQL as the database's all-powerful operator, with the audit guard out of the way
    (SQLite: the triggers dropped and put back; PostgreSQL: the superuser in replica mode,
    which skips triggers)."""
    if backend.is_postgres:
        import asyncpg

        url = make_url(backend.owner_url).set(drivername="postgresql")
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            await conn.execute("SET session_replication_role = replica")
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
        return
    from authkeep.db import audit_guard

    raw = sqlite3.connect(_sqlite_path(backend.database_url))
    try:
        with raw:
            for drop in audit_guard.SQLITE_DROP:
                raw.execute(drop)
            for statement in statements:
                raw.execute(statement)
            for create in audit_guard.SQLITE_CREATE:
                raw.execute(create)
    finally:
        raw.close()
