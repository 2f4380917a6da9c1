"""Issue 15's claim, read as a thief with a database dump would: after a realistic history —
sign-up with a name, sign-ins from a recognisable address and browser, an organization, an
invitation, a consent, a TOTP factor, a webhook event, a signed export, a deletion request
and its erasure — no table holds the user's email, name, IP address or user agent in
clear, at any of those points (every row of every table, read as the database owner, on
SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from authkeep import Settings
from authkeep.db.base import Base
from authkeep.http.app import create_app
from conftest import Backend
from helpers import PASSWORD, authkeep_of, bearer, client_for, login, running
from org_helpers import Person, create_org, invite

START = datetime(2030, 9, 1, 9, 0, tzinfo=UTC)
EMAIL = "Zelda.Quartermain@example.com"
NAME = "Zelda Quartermain"
IP = "198.51.100.77"
AGENT = "ZeldaBrowser/9.1 (distinctive)"
SECRETS = (EMAIL, EMAIL.lower(), NAME, IP, AGENT)


async def raw_dump(backend: Backend) -> str:
    """Every row of every table as text, read as the schema owner."""
    assert backend.owner_url is not None
    engine = create_async_engine(backend.owner_url)
    try:
        async with engine.connect() as conn:
            parts = []
            for table in Base.metadata.sorted_tables:
                rows = (await conn.execute(select(table))).all()
                parts.append(f"{table.name}: {[tuple(row) for row in rows]!r}")
            return "\n".join(parts)
    finally:
        await engine.dispose()


async def assert_nothing_in_clear(backend: Backend, when: str) -> None:
    dump = await raw_dump(backend)
    # The dump does read the data: the organization's name (not personal) is there in clear.
    assert "Acme" in dump, when
    found = [value for value in SECRETS if value in dump]
    assert found == [], f"{when}: {found} stored in clear"


async def test_no_table_holds_the_users_email_name_ip_or_agent_in_clear(
    make_settings: Callable[..., Settings], backend: Backend
) -> None:
    settings = make_settings(
        consent_purposes={"terms": {"version": "1", "required": True}},
        trusted_proxies=[],
    )
    with time_machine.travel(START, tick=False) as clock:
        app = create_app(settings)
        async with running(app), client_for(app, peer=(IP, 50000)) as http:
            http.headers["user-agent"] = AGENT
            registered = await http.post(
                "/api/v1/auth/register",
                json={
                    "email": EMAIL,
                    "password": PASSWORD,
                    "full_name": NAME,
                    "consents": {"terms": "1"},
                },
            )
            assert registered.status_code == 202, registered.text
            pair = await login(http, EMAIL, PASSWORD)
            auth = bearer(pair["access_token"])
            me = (await http.get("/api/v1/auth/me", headers=auth)).json()
            assert (me["email"], me["full_name"]) == (EMAIL, NAME)  # plaintext in the API
            sessions = (await http.get("/api/v1/auth/sessions", headers=auth)).json()
            assert [(s["ip"], s["user_agent"]) for s in sessions] == [(IP, AGENT)]

            person = Person(EMAIL, uuid.UUID(me["id"]), pair["access_token"], pair["refresh_token"])
            org_id = await create_org(http, person)
            invited = await invite(http, person, org_id, "Other.Invitee@example.com")
            assert invited.status_code == 202, invited.text
            failed = await http.post("/api/v1/auth/login", json={"email": EMAIL, "password": "x"})
            assert failed.status_code == 401
            await assert_nothing_in_clear(backend, "after sign-up, sign-ins, org, invitation")

            exported = await http.get("/api/v1/auth/me/export", headers=auth)
            assert exported.status_code == 200, exported.text
            assert IP in exported.text  # the export itself shows them to their owner
            await assert_nothing_in_clear(backend, "after the export")

            deleted = await http.request(
                "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=auth
            )
            assert deleted.status_code in (202, 409), deleted.text
            await assert_nothing_in_clear(backend, "after the deletion request")

            clock.shift(timedelta(days=settings.account_deletion_grace_days, minutes=1))
            services = authkeep_of(app).services
            await services.purge.run(audit_db=None)
            await assert_nothing_in_clear(backend, "after the erasure")
