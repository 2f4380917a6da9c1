"""Deleting an account over HTTP (docs/privacy.md, "Deletion"), on SQLite and on PostgreSQL
+ Redis: the owner's ``DELETE /api/v1/auth/me`` locks the account at once (every token and
API key 401, signing in refused like a wrong password), the emailed link cancels it during
the grace period, the purge erases it after; a grace of 0 erases at once; the only admin of
an organization with members gets 409; a platform admin's deletion needs a reason and erases
at once; races end with one winner; after the erasure the audit chains still verify."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import time_machine
from fastapi import FastAPI
from sqlalchemy import select

from account_helpers import mail_app, to, token_in
from audit_helpers import app_rows
from authkeep import Settings
from authkeep.db.models import User, UserKey
from authkeep.services import audit_admin
from authkeep.services.audit import Action
from helpers import PASSWORD, authkeep_of, bearer, login, register
from org_helpers import Person, add_member, create_org, sign_up
from step_up_helpers import challenge

ME = "/api/v1/auth/me"
CANCEL = "/api/v1/auth/me/deletion/cancel"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ADMIN_USERS = "/api/v1/admin/users"
SCHEDULED_SUBJECT = "will be deleted on"
START = datetime(2030, 5, 6, 9, 0, tzinfo=UTC)
WRONG_PASSWORD = [
    {"loc": ["body", "password"], "msg": "Password is incorrect", "type": "value_error"}
]


async def delete_me(
    http: httpx.AsyncClient, access: str, password: str = PASSWORD
) -> httpx.Response:
    return await http.request("DELETE", ME, json={"password": password}, headers=bearer(access))


async def account_row(app: FastAPI, user_id: uuid.UUID) -> Any:
    """The account's deletion columns and whether its user key exists (None: no row)."""
    async with authkeep_of(app).services.db.reading() as conn:
        row = (
            await conn.execute(select(User.deleted_at, User.deletion_at).where(User.id == user_id))
        ).first()
        key = (
            await conn.execute(select(UserKey.user_id).where(UserKey.user_id == user_id))
        ).first()
    return None if row is None else (row.deleted_at, row.deletion_at, key is not None)


async def new_key(http: httpx.AsyncClient, person: Person) -> str:
    created = await http.post("/api/v1/api-keys", json={"name": "ci"}, headers=person.auth)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


async def refused_like_a_wrong_password(http: httpx.AsyncClient, email: str) -> None:
    locked = await http.post(LOGIN, json={"email": email, "password": PASSWORD})
    wrong = await http.post(LOGIN, json={"email": email, "password": PASSWORD + "?"})
    assert locked.status_code == wrong.status_code == 401
    assert locked.json() == wrong.json() == {"detail": "Incorrect email or password"}


async def test_deleting_my_account_locks_it_at_once_and_mails_a_cancel_link(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False):
        async with mail_app(make_settings, tmp_path) as m:
            ann = await sign_up(m.http, "ann@example.com")
            await create_org(m.http, ann, "Ann's")  # admin of an org without other members
            key = await new_key(m.http, ann)
            other = await login(m.http, "ann@example.com")
            assert (await m.http.get(ME, headers={"X-API-Key": key})).status_code == 403

            response = await delete_me(m.http, ann.access)

            assert response.status_code == 202, response.text
            due = datetime.fromisoformat(response.json()["deletion_at"])
            assert due == START + timedelta(days=14)
            # Every session and the API key, at once.
            for access in (ann.access, other["access_token"]):
                assert (await m.http.get(ME, headers=bearer(access))).status_code == 401
            for refresh in (ann.refresh, other["refresh_token"]):
                again = await m.http.post(REFRESH, json={"refresh_token": refresh})
                assert again.status_code == 401
            assert (await m.http.get(ME, headers={"X-API-Key": key})).status_code == 401
            await refused_like_a_wrong_password(m.http, "ann@example.com")
            deleted_at, deletion_at, has_key = await account_row(m.app, ann.user_id)
            assert (deleted_at, deletion_at, has_key) == (START, due, True)

            mail = await m.mail_to("ann@example.com", SCHEDULED_SUBJECT)
            assert "2030-05-20 09:00 UTC" in mail["Subject"]
            assert token_in(mail)
            [row] = await app_rows(m.app, Action.USER_DELETION_REQUESTED)
            assert (row.outcome, str(row.actor_user_id), row.entity_id) == (
                "success",
                str(ann.user_id),
                str(ann.user_id),
            )
            assert row.details["origin"] == "self"
            assert row.details["sessions_ended"] == 2
            assert row.details["keys_revoked"] == 1


async def test_a_wrong_password_is_refused_like_elsewhere_and_audited(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    pair = await login(client)

    response = await delete_me(client, pair["access_token"], "not the password")

    assert response.status_code == 422
    assert response.json() == {"detail": WRONG_PASSWORD}
    # The same answer as the email change's wrong password.
    changed = await client.post(
        "/api/v1/auth/email/change",
        json={"new_email": "new@example.com", "password": "not the password"},
        headers=bearer(pair["access_token"]),
    )
    assert changed.json() == response.json()
    assert (await client.get(ME, headers=bearer(pair["access_token"]))).status_code == 200
    [failed] = await app_rows(app, Action.USER_DELETION_REQUESTED)
    assert (failed.outcome, failed.details) == ("failure", {"reason": "bad_password"})
    for body in ({}, {"password": PASSWORD, "extra": 1}):
        refused = await client.request(
            "DELETE", ME, json=body, headers=bearer(pair["access_token"])
        )
        assert refused.status_code == 422


async def test_deleting_needs_a_recent_sign_in_and_a_session(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path) as m:
            ann = await sign_up(m.http, "ann@example.com")
            await create_org(m.http, ann)
            key = await new_key(m.http, ann)
            by_key = await m.http.request(
                "DELETE", ME, json={"password": PASSWORD}, headers={"X-API-Key": key}
            )
            assert by_key.status_code == 403

            clock.shift(timedelta(seconds=601))
            refreshed = await m.http.post(REFRESH, json={"refresh_token": ann.refresh})
            stale = await delete_me(m.http, refreshed.json()["access_token"])

            assert stale.status_code == 401
            assert stale.headers["www-authenticate"] == challenge()
            assert (await account_row(m.app, ann.user_id))[:2] == (None, None)


async def test_the_link_cancels_once_and_no_session_comes_back(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path) as m:
            ann = await sign_up(m.http, "ann@example.com")
            await create_org(m.http, ann)
            key = await new_key(m.http, ann)
            assert (await delete_me(m.http, ann.access)).status_code == 202
            token = token_in(await m.mail_to("ann@example.com", SCHEDULED_SUBJECT))

            clock.shift(timedelta(days=13, hours=23))
            cancelled = await m.http.post(CANCEL, json={"token": token})

            assert cancelled.status_code == 204, cancelled.text
            assert (await account_row(m.app, ann.user_id))[:2] == (None, None)
            # Unlocked, but nothing issued before comes back.
            assert (await m.http.get(ME, headers=bearer(ann.access))).status_code == 401
            again = await m.http.post(REFRESH, json={"refresh_token": ann.refresh})
            assert again.status_code == 401
            assert (
                await m.http.get("/api/v1/api-keys", headers={"X-API-Key": key})
            ).status_code == 401
            fresh = await login(m.http, "ann@example.com")
            assert (await m.http.get(ME, headers=bearer(fresh["access_token"]))).status_code == 200
            # Single use, and junk is the same 400.
            for replay in (token, "x" * 43, "short"):
                refused = await m.http.post(CANCEL, json={"token": replay})
                assert refused.status_code == 400
                assert refused.json() == {"detail": "Invalid or expired link: request a new one"}
            [row] = await app_rows(m.app, Action.USER_DELETION_CANCELLED)
            assert (str(row.actor_user_id), row.entity_id) == (str(ann.user_id), str(ann.user_id))
            # Still leaving nothing behind: the purge erases no one.
            clock.shift(timedelta(days=2))
            assert (await authkeep_of(m.app).services.purge.run(audit_db=None)).erased == 0


async def test_after_the_grace_the_link_is_dead_and_the_purge_erases(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path) as m:
            ann = await sign_up(m.http, "ann@example.com")
            bob = await sign_up(m.http, "bob@example.com")
            assert (await delete_me(m.http, ann.access)).status_code == 202
            token = token_in(await m.mail_to("ann@example.com", SCHEDULED_SUBJECT))
            services = authkeep_of(m.app).services

            clock.shift(timedelta(days=13, hours=23))
            assert (await services.purge.run(audit_db=None)).erased == 0
            clock.shift(timedelta(hours=1))
            assert (await m.http.post(CANCEL, json={"token": token})).status_code == 400
            report = await services.purge.run(audit_db=None)

            assert report.erased == 1
            assert await account_row(m.app, ann.user_id) is None
            assert await account_row(m.app, bob.user_id) is not None
            await refused_like_a_wrong_password(m.http, "ann@example.com")
            [erased] = await app_rows(m.app, Action.USER_ERASED)
            assert (erased.entity_id, erased.actor_user_id) == (str(ann.user_id), None)
            assert erased.details["key_destroyed"] is True
            assert {"table": "users", "rows": 1} in erased.details["removed"]
            # The audit log was not edited: the rows about Ann stay (with her id, now a
            # pseudonym), and every chain still verifies.
            assert await app_rows(m.app, Action.USER_DELETION_REQUESTED)
            verified = await audit_admin.verify(services.db)
            assert verified.ok, verified.broken
            # The address is free again.
            await register(m.http, "ann@example.com")


async def test_a_grace_of_zero_erases_in_the_request(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False):
        async with mail_app(make_settings, tmp_path, account_deletion_grace_days=0) as m:
            ann = await sign_up(m.http, "ann@example.com")

            response = await delete_me(m.http, ann.access)

            assert response.status_code == 202
            assert datetime.fromisoformat(response.json()["deletion_at"]) == START
            assert await account_row(m.app, ann.user_id) is None
            assert (await m.http.get(ME, headers=bearer(ann.access))).status_code == 401
            # Nothing to cancel, so no link.
            assert not [
                msg
                for msg in await m.mail()
                if to(msg) == "ann@example.com" and SCHEDULED_SUBJECT in msg["Subject"]
            ]
            assert len(await app_rows(m.app, Action.USER_ERASED)) == 1
            assert (await audit_admin.verify(authkeep_of(m.app).services.db)).ok


async def test_the_only_admin_of_an_organization_with_members_gets_409(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path) as m:
        ann = await sign_up(m.http, "ann@example.com")
        bob = await sign_up(m.http, "bob@example.com")
        cat = await sign_up(m.http, "cat@example.com")
        acme = await create_org(m.http, ann, "Acme")
        await create_org(m.http, ann, "Alone")  # no other member: no obstacle
        await add_member(m.http, ann, acme, bob, "viewer")

        refused = await delete_me(m.http, ann.access)

        assert refused.status_code == 409
        assert refused.json()["organizations"] == [{"id": str(acme), "name": "Acme"}]
        assert (await m.http.get(ME, headers=bearer(ann.access))).status_code == 200
        assert await app_rows(m.app, Action.USER_DELETION_REQUESTED) == []

        promoted = await m.http.patch(
            f"/api/v1/orgs/{acme}/members/{bob.user_id}", json={"role": "admin"}, headers=ann.auth
        )
        assert promoted.status_code == 200, promoted.text
        await add_member(m.http, bob, acme, cat, "viewer")
        assert (await delete_me(m.http, ann.access)).status_code == 202
        # Ann is leaving, so she counts neither as an admin nor as a member: Bob is now the
        # only admin of an organization with a member (Cat).
        bob_refused = await delete_me(m.http, bob.access)
        assert bob_refused.status_code == 409
        assert bob_refused.json()["organizations"] == [{"id": str(acme), "name": "Acme"}]


async def test_two_deletions_at_once_schedule_one(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path) as m:
        ann = await sign_up(m.http, "ann@example.com")

        answers = await asyncio.gather(*(delete_me(m.http, ann.access) for _ in range(2)))

        assert [a.status_code for a in answers] == [202, 202]
        assert answers[0].json() == answers[1].json()
        assert len(await app_rows(m.app, Action.USER_DELETION_REQUESTED)) == 1
        mails = [msg for msg in await m.mail() if SCHEDULED_SUBJECT in msg["Subject"]]
        assert len(mails) == 1


async def test_a_cancel_racing_the_erasure_has_one_winner(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path) as m:
        services = authkeep_of(m.app).services
        outcomes = set()
        for email in ("ann@example.com", "bea@example.com", "cat@example.com"):
            person = await sign_up(m.http, email)
            due = datetime.fromisoformat(
                (await delete_me(m.http, person.access)).json()["deletion_at"]
            )
            token = token_in(await m.mail_to(email, SCHEDULED_SUBJECT))

            # The link is still good by the request's clock, the erasure is due by the
            # purge's: both may act, one of them must lose.
            cancel, erased = await asyncio.gather(
                m.http.post(CANCEL, json={"token": token}),
                services.deletion.erasure.erase(person.user_id, now=due + timedelta(seconds=1)),
            )

            row = await account_row(m.app, person.user_id)
            if cancel.status_code == 204:
                assert erased is None
                assert row is not None
                assert row == (None, None, True)
            else:
                assert cancel.status_code == 400
                assert erased is not None
                assert row is None
            outcomes.add(cancel.status_code)
        assert outcomes <= {204, 400}


async def test_a_platform_admin_deletes_with_a_reason_and_erases_at_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path) as m:
        services = authkeep_of(m.app).services
        await services.accounts.register(
            email="root@example.com", password=PASSWORD, is_superuser=True
        )
        root = bearer((await login(m.http, "root@example.com"))["access_token"])
        ann = await sign_up(m.http, "ann@example.com")
        target = f"{ADMIN_USERS}/{ann.user_id}"

        for body in (None, {}, {"reason": ""}, {"reason": "x" * 501}):
            refused = await m.http.request("DELETE", target, json=body, headers=root)
            assert refused.status_code == 422, body
        assert (await m.http.get(ME, headers=ann.auth)).status_code == 200

        done = await m.http.request(
            "DELETE", target, json={"reason": "support ticket 4711"}, headers=root
        )

        assert done.status_code == 204, done.text
        assert await account_row(m.app, ann.user_id) is None
        assert (await m.http.get(ME, headers=ann.auth)).status_code == 401
        [deleted] = await app_rows(m.app, Action.USER_DELETED)
        assert deleted.details["reason"] == "support ticket 4711"
        [erased] = await app_rows(m.app, Action.USER_ERASED)
        assert erased.actor_user_id == deleted.actor_user_id
        notice = await m.mail_to("ann@example.com", "was deleted")
        assert "erased" in notice.get_body(("plain",)).get_content()
        again = await m.http.request("DELETE", target, json={"reason": "again"}, headers=root)
        assert again.status_code == 404
        assert (await audit_admin.verify(services.db)).ok
