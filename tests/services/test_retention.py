"""Retention through the purge job (docs/privacy.md, "Retention"), on SQLite and on
PostgreSQL + Redis, with a frozen clock: an unused account is warned once, deleted like a
self-service deletion after the notice, and erased after the grace; any use (a sign-in, a
refresh, an API key) ends the idle spell, even once the session that recorded it is purged;
platform admins are left alone, the only admin of an organization with members is held; a
dry run changes nothing; dead single-use rows go."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from fastapi import FastAPI
from sqlalchemy import select

from account_helpers import MailApp, mail_app, to
from audit_helpers import app_rows
from authkeep import Settings
from authkeep.db.engine import Database
from authkeep.db.models import User
from authkeep.services.audit import Action
from conftest import Backend
from helpers import PASSWORD, authkeep_of, login
from org_helpers import add_member, create_org, sign_up
from session_helpers import rows
from step_up_helpers import enrol_totp, make_superuser

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DAYS = 90
WARNING = "will be deleted unless you sign in"
SCHEDULED = "will be deleted on"


async def run(m: MailApp) -> tuple[int, int, int, int]:
    """One purge: (warned, scheduled, held, erased)."""
    report = await authkeep_of(m.app).services.purge.run(audit_db=None)
    retention = report.retention
    return retention.warned, retention.scheduled, retention.held, report.erased


async def subjects(m: MailApp, address: str) -> list[str]:
    return [str(msg["Subject"]) for msg in await m.mail() if to(msg) == address]


async def state(app: FastAPI, user_id: uuid.UUID) -> tuple[datetime | None, ...] | None:
    async with authkeep_of(app).services.db.reading() as conn:
        row = (
            await conn.execute(
                select(User.inactivity_warned_at, User.deleted_at, User.deletion_at).where(
                    User.id == user_id
                )
            )
        ).first()
    return None if row is None else tuple(row)


async def test_an_unused_account_is_warned_once_then_deleted_then_erased(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path, inactive_account_days=DAYS) as m:
            idle = await sign_up(m.http, "idle@example.com")
            busy = await sign_up(m.http, "busy@example.com")
            await make_superuser(m.app, m.http)  # idle too, but never deleted for it
            clock.shift(timedelta(days=60))
            await login(m.http, "busy@example.com")

            clock.shift(timedelta(days=31))  # day 91
            assert await run(m) == (1, 0, 0, 0)
            assert any(WARNING in s for s in await subjects(m, "idle@example.com"))
            [warned] = await app_rows(m.app, Action.USER_INACTIVITY_WARNED)
            assert warned.entity_id == str(idle.user_id)
            assert await run(m) == (0, 0, 0, 0)  # once per idle spell

            clock.shift(timedelta(days=29, hours=23))  # the notice is not over
            assert await run(m) == (0, 0, 0, 0)
            clock.shift(timedelta(hours=1))  # day 121: 30 days after the warning
            assert await run(m) == (0, 1, 0, 0)
            _, deleted_at, deletion_at = await state(m.app, idle.user_id) or (None,) * 3
            assert deleted_at == START + timedelta(days=121)
            assert deletion_at == START + timedelta(days=135)
            refused = await m.http.post(
                "/api/v1/auth/login", json={"email": "idle@example.com", "password": PASSWORD}
            )
            assert refused.status_code == 401
            mail = await m.mail_to("idle@example.com", SCHEDULED)
            assert f"not used for {DAYS} days" in mail.get_body(("plain",)).get_content()
            [requested] = await app_rows(m.app, Action.USER_DELETION_REQUESTED)
            assert (requested.actor_user_id, requested.details["origin"]) == (None, "inactivity")

            clock.shift(timedelta(days=14))  # day 135
            assert await run(m) == (0, 0, 0, 1)
            assert await state(m.app, idle.user_id) is None
            # Busy signed in on day 60: its session ended and was purged long ago, but the
            # use it recorded was kept first.
            assert await state(m.app, busy.user_id) == (None, None, None)
            assert await rows(m.app, "SELECT id FROM auth_sessions") == []
            clock.shift(timedelta(days=16))  # day 151: 91 days after its last use
            assert await run(m) == (1, 0, 0, 0)
            assert any(WARNING in s for s in await subjects(m, "busy@example.com"))


async def test_a_sign_in_after_the_warning_ends_the_idle_spell(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path, inactive_account_days=DAYS) as m:
            ann = await sign_up(m.http, "ann@example.com")
            clock.shift(timedelta(days=91))
            assert await run(m) == (1, 0, 0, 0)
            clock.shift(timedelta(days=10))  # day 101
            pair = await login(m.http, "ann@example.com")
            clock.shift(timedelta(days=2))  # day 103: a refresh is a use too
            refreshed = await m.http.post(
                "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
            )
            assert refreshed.status_code == 200, refreshed.text
            clock.shift(timedelta(days=19))  # day 122: the notice is over, but Ann is back
            assert await run(m) == (0, 0, 0, 0)
            assert (await state(m.app, ann.user_id) or ())[1:] == (None, None)
            clock.shift(timedelta(days=70))  # day 192: 89 days after the refresh
            assert await run(m) == (0, 0, 0, 0)
            clock.shift(timedelta(days=2))  # a new idle spell: warned again
            assert await run(m) == (1, 0, 0, 0)


async def test_an_api_key_in_use_keeps_its_creator(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path, inactive_account_days=DAYS) as m:
            bot = await sign_up(m.http, "bot@example.com")
            await create_org(m.http, bot, "Bots")
            created = await m.http.post("/api/v1/api-keys", json={"name": "ci"}, headers=bot.auth)
            assert created.status_code == 201, created.text
            clock.shift(timedelta(days=85))
            used = await m.http.get(
                "/api/v1/api-keys", headers={"X-API-Key": created.json()["key"]}
            )
            assert used.status_code == 403  # authenticated (and its use recorded), then refused

            clock.shift(timedelta(days=6))
            report = await authkeep_of(m.app).services.purge.run(audit_db=None)

            assert (report.retention.warned, report.retention.in_use) == (0, 1)
            assert await app_rows(m.app, Action.USER_INACTIVITY_WARNED) == []
            assert await run(m) == (0, 0, 0, 0)  # the use was recorded: not looked up again


async def test_the_only_admin_of_an_organization_with_members_is_held(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path, inactive_account_days=DAYS) as m:
            boss = await sign_up(m.http, "boss@example.com")
            staff = await sign_up(m.http, "staff@example.com")
            org = await create_org(m.http, boss, "Shop")
            await add_member(m.http, boss, org, staff, "editor")
            clock.shift(timedelta(days=91))
            await login(m.http, "staff@example.com")
            assert await run(m) == (1, 0, 0, 0)
            clock.shift(timedelta(days=30))
            assert await run(m) == (0, 0, 1, 0)
            assert (await state(m.app, boss.user_id) or ())[1:] == (None, None)


async def test_a_dry_run_counts_and_changes_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path, backend: Backend
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path, inactive_account_days=DAYS) as m:
            ann = await sign_up(m.http, "ann@example.com")
            bob = await sign_up(m.http, "bob@example.com")
            deleted = await m.http.request(
                "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=bob.auth
            )
            assert deleted.status_code == 202
            clock.shift(timedelta(days=91))
            services = authkeep_of(m.app).services
            before = await rows(m.app, "SELECT count(*) AS n FROM auth_sessions")

            audit_db = Database(backend.purge_url or backend.database_url)
            try:
                preview = await services.purge.preview(audit_db=audit_db)
            finally:
                await audit_db.close()

            assert (preview.erased, preview.retention.warned, preview.sessions) == (1, 1, 2)
            assert preview.audit_rows == 0
            assert await rows(m.app, "SELECT count(*) AS n FROM auth_sessions") == before
            assert await state(m.app, ann.user_id) == (None, None, None)
            assert await state(m.app, bob.user_id) is not None
            assert await app_rows(m.app, Action.USER_INACTIVITY_WARNED) == []
            assert any("would erase 1 accounts" in line for line in preview.lines())


async def test_dead_single_use_rows_are_purged(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path) as m:
            ann = await sign_up(m.http, "ann@example.com")  # a verification link
            await enrol_totp(m.http, ann.access, START)
            pending = await m.http.post(
                "/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
            )
            assert pending.json()["mfa_required"] is True
            options = await m.http.post("/api/v1/auth/webauthn/login/options")
            assert options.status_code == 200, options.text
            tables = ("mfa_login_challenges", "webauthn_challenges", "account_tokens")
            counts = {t: len(await rows(m.app, f"SELECT id FROM {t}")) for t in tables}
            assert all(counts.values()), counts
            services = authkeep_of(m.app).services

            clock.shift(timedelta(minutes=1))
            assert set((await services.purge.run(audit_db=None)).dead_rows.values()) == {0}
            clock.shift(timedelta(days=3))  # every one of them expired
            report = await services.purge.run(audit_db=None)

            assert report.dead_rows == counts
            for table in tables:
                assert await rows(m.app, f"SELECT id FROM {table}") == []


async def test_the_last_use_of_every_account_is_folded_across_batches(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Batches of two over five accounts: the keyset must reach every one of them once.
    from authkeep.services.privacy import retention

    monkeypatch.setattr(retention, "BATCH", 2)
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path, inactive_account_days=DAYS) as m:
            people = [await sign_up(m.http, f"user{n}@example.com") for n in range(5)]
            clock.shift(timedelta(days=3))
            for person in people:
                await login(m.http, person.email, PASSWORD)
            services = authkeep_of(m.app).services
            assert await services.retention.fold_activity() == 5
            assert await services.retention.fold_activity() == 0  # nothing newer: no writes
            async with services.db.reading() as conn:
                seen = (await conn.execute(select(User.last_active_at))).scalars().all()
            assert len(seen) == 5
            assert {at.replace(tzinfo=UTC) if at.tzinfo is None else at for at in seen} == {
                START + timedelta(days=3)
            }
