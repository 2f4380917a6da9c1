"""Erasure on SQLite and PostgreSQL: crypto-shredding makes a dump taken before the purge
useless for the erased account (and only for it), every row of the account goes (API keys
under row-level security included), and the audit chains still verify."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from authkeep import Settings
from authkeep.db import user_keys
from authkeep.db.base import Base
from authkeep.db.models import ApiKey
from authkeep.security.envelope import Envelope, SealedValueError, field_context
from authkeep.services import audit_admin
from conftest import Backend
from helpers import PASSWORD, authkeep_of
from org_helpers import create_org, sign_up
from session_helpers import started

START = datetime(2030, 7, 1, 8, 0, tzinfo=UTC)
# The values sealed with a user key: (table, column, the row's id column, its owner column).
USER_SEALED = (
    ("users", "email", "id", "id"),
    ("users", "full_name", "id", "id"),
    ("auth_sessions", "ip", "id", "user_id"),
    ("auth_sessions", "user_agent", "id", "user_id"),
    ("account_tokens", "email", "id", "user_id"),
)

Dump = dict[str, list[dict[str, Any]]]


async def dump_without_user_keys(backend: Backend) -> Dump:
    """Every table's rows as the database owner reads them, ``user_keys`` left out (what a
    backup made as docs/privacy.md advises holds)."""
    assert backend.owner_url is not None
    engine = create_async_engine(backend.owner_url)
    try:
        async with engine.connect() as conn:
            return {
                table.name: [dict(row._mapping) for row in await conn.execute(select(table))]
                for table in Base.metadata.sorted_tables
                if table.name != "user_keys"
            }
    finally:
        await engine.dispose()


async def open_with_live_keys(
    backend: Backend, envelope: Envelope, dump: Dump
) -> dict[uuid.UUID, list[str | None]]:
    """Per owner, each user-sealed value of ``dump`` opened with the key the live
    ``user_keys`` table holds for them (None: it does not open)."""
    fresh = Envelope(envelope.box)  # no unwrapped key remembered from the running service
    engine = create_async_engine(backend.database_url)
    opened: dict[uuid.UUID, list[str | None]] = {}
    try:
        async with engine.connect() as conn:
            for table, column, id_column, owner_column in USER_SEALED:
                for row in dump[table]:
                    if row[column] is None:
                        continue
                    owner = row[owner_column]
                    aead = await user_keys.cipher(conn, fresh, owner)
                    value: str | None = None
                    if aead is not None:
                        try:
                            value = Envelope.open_with(
                                aead,
                                row[column],
                                context=field_context(table, column, row[id_column]),
                            )
                        except SealedValueError:
                            value = None
                    opened.setdefault(owner, []).append(value)
    finally:
        await engine.dispose()
    return opened


async def test_a_dump_taken_before_the_purge_no_longer_yields_the_erased_users_data(
    make_settings: Callable[..., Settings], backend: Backend
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (app, http):
            ann = await sign_up(http, "ann@example.com")
            bob = await sign_up(http, "bob@example.com")
            services = authkeep_of(app).services
            before = await dump_without_user_keys(backend)
            # Both are readable from the dump while their keys exist (the test can fail).
            readable = await open_with_live_keys(backend, services.envelope, before)
            assert "ann@example.com" in readable[ann.user_id]
            assert all(value is not None for value in readable[ann.user_id])
            flat = repr(before["users"]) + repr(before["auth_sessions"])
            assert "ann@example.com" not in flat  # sealed at rest, not in clear

            deleted = await http.request(
                "DELETE",
                "/api/v1/auth/me",
                json={"password": PASSWORD},
                headers=ann.auth,
            )
            assert deleted.status_code == 202
            clock.shift(timedelta(days=14, minutes=1))
            assert (await services.purge.run(audit_db=None)).erased == 1

            after = await open_with_live_keys(backend, services.envelope, before)
            assert len(after[ann.user_id]) >= 3  # address, sessions' IP and user agent
            assert after[ann.user_id] == [None] * len(after[ann.user_id])
            assert "bob@example.com" in after[bob.user_id]
            assert all(value is not None for value in after[bob.user_id])
            verified = await audit_admin.verify(services.db)
            assert verified.ok, verified.broken


async def test_every_row_of_the_account_goes_and_nothing_of_anyone_else(
    make_settings: Callable[..., Settings], backend: Backend
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (app, http):
            ann = await sign_up(http, "ann@example.com")
            bob = await sign_up(http, "bob@example.com")
            org = await create_org(http, ann, "Ann's")
            created = await http.post("/api/v1/api-keys", json={"name": "ci"}, headers=ann.auth)
            assert created.status_code == 201, created.text
            await create_org(http, bob, "Bob's")
            services = authkeep_of(app).services

            deleted = await http.request(
                "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=ann.auth
            )
            assert deleted.status_code == 202
            clock.shift(timedelta(days=15))
            await services.purge.run(audit_db=None)

            after = await dump_without_user_keys(backend)
            for table, rows in after.items():
                if table == "audit_log":
                    continue  # never edited: rows name Ann by her (now meaningless) id
                mentions = [row for row in rows if str(ann.user_id) in repr(row)]
                mentions += [row for row in rows if ann.user_id.hex in repr(row)]
                assert mentions == [], table
            # Bob's rows are all still there (his sessions ended with time: the purge took
            # those).
            for table in ("users", "memberships"):
                bobs = [r for r in after[table] if bob.user_id in r.values()]
                assert len(bobs) == 1, table
            async with services.db.tenant_reading(org) as conn:
                keys = (await conn.execute(select(ApiKey.id))).all()
            assert keys == []  # the key went by cascade, row-level security or not
            # The organization itself stays, without its creator.
            assert [row for row in after["organizations"] if row["id"] == org]
