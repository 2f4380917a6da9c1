"""Email change over HTTP: the password to ask, a link to the new address, a notice to the
old one, nothing changed until the link is opened — on SQLite and PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import time_machine

from account_helpers import header_names, mail_app, token_in
from audit_helpers import app_rows
from authkeep import Settings
from helpers import PASSWORD, bearer, login, register
from mail_helpers import SmtpSink, text_of

CHANGE = "/api/v1/auth/email/change"
CONFIRM = "/api/v1/auth/email/confirm"
CONFIRM_SUBJECT = "Confirm your new email"
NOTICE_SUBJECT = "is about to change"


async def test_an_email_change_happens_only_when_the_new_address_confirms(
    make_settings: Callable[..., Settings], smtp_server: SmtpSink
) -> None:
    async with mail_app(make_settings, smtp=smtp_server) as m:
        await register(m.http, "old@example.com", verified=True)
        auth = bearer((await login(m.http, "old@example.com"))["access_token"])

        wrong = await m.http.post(
            CHANGE, json={"new_email": "new@example.com", "password": "nope"}, headers=auth
        )
        assert wrong.status_code == 422
        assert wrong.json()["detail"][0]["loc"] == ["body", "password"]
        asked = await m.http.post(
            CHANGE, json={"new_email": "new@example.com", "password": PASSWORD}, headers=auth
        )
        assert asked.status_code == 202, asked.text

        notice = await m.mail_to("old@example.com", NOTICE_SUBJECT)
        assert "new@example.com" in text_of(notice)
        assert "/forgot-password" in text_of(notice)
        token = token_in(await m.mail_to("new@example.com", CONFIRM_SUBJECT))
        # Nothing changed yet.
        assert (await m.http.get("/api/v1/auth/me", headers=auth)).json()["email"] == (
            "old@example.com"
        )
        await login(m.http, "old@example.com")

        confirmed = await m.http.post(CONFIRM, json={"token": token})
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["email"] == "new@example.com"
        assert confirmed.json()["email_verified"] is True
        assert (await m.http.post(CONFIRM, json={"token": token})).status_code == 400
        assert (await m.http.get("/api/v1/auth/me", headers=auth)).json()["email"] == (
            "new@example.com"
        )
        await login(m.http, "new@example.com")
        old = await m.http.post(
            "/api/v1/auth/login", json={"email": "old@example.com", "password": PASSWORD}
        )
        assert old.status_code == 401
        assert [r.outcome for r in await app_rows(m.app, "user.email_change_requested")] == [
            "failure",
            "success",
        ]
        assert len(await app_rows(m.app, "user.email_changed")) == 1


async def test_a_taken_new_address_is_not_revealed_to_the_requester(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail") as m:
        await register(m.http, "kim@example.com")
        await register(m.http, "lee@example.com")
        auth = bearer((await login(m.http, "kim@example.com"))["access_token"])
        free = await m.http.post(
            CHANGE, json={"new_email": "free@example.com", "password": PASSWORD}, headers=auth
        )
        taken = await m.http.post(
            CHANGE, json={"new_email": "LEE@example.com", "password": PASSWORD}, headers=auth
        )
        assert free.status_code == taken.status_code == 202
        assert free.json() == taken.json()
        assert header_names(free) == header_names(taken)
        # Only the holder of the taken mailbox can learn it is taken, by opening the link.
        token = token_in(await m.mail_to("LEE@example.com", CONFIRM_SUBJECT))
        conflict = await m.http.post(CONFIRM, json={"token": token})
        assert conflict.status_code == 409
        me = await m.http.get("/api/v1/auth/me", headers=auth)
        assert me.json()["email"] == "kim@example.com"


async def test_a_password_reset_cancels_a_pending_change_and_links_expire(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", email_change_expire_hours=24) as m:
        await register(m.http, "max@example.com")
        auth = bearer((await login(m.http, "max@example.com"))["access_token"])
        change = {"new_email": "thief@example.com", "password": PASSWORD}
        await m.http.post(CHANGE, json=change, headers=auth)
        stolen = token_in(await m.mail_to("thief@example.com", CONFIRM_SUBJECT))
        # The owner follows the notice's advice: a reset.
        await m.http.post("/api/v1/auth/password/forgot", json={"email": "max@example.com"})
        reset = token_in(await m.mail_to("max@example.com", "Reset your"))
        new_password = "quiet violet harbor engine"
        reply = await m.http.post(
            "/api/v1/auth/password/reset", json={"token": reset, "new_password": new_password}
        )
        assert reply.status_code == 204
        assert (await m.http.post(CONFIRM, json={"token": stolen})).status_code == 400

        auth = bearer((await login(m.http, "max@example.com", new_password))["access_token"])
        change = {"new_email": "max2@example.com", "password": new_password}
        await m.http.post(CHANGE, json=change, headers=auth)
        token = token_in(await m.mail_to("max2@example.com", CONFIRM_SUBJECT))
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=24, minutes=1)):
            late = await m.http.post(CONFIRM, json={"token": token})
        assert late.status_code == 400


async def test_an_email_change_needs_a_real_new_address(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail") as m:
        await register(m.http, "ned@example.com")
        auth = bearer((await login(m.http, "ned@example.com"))["access_token"])
        for new in ("NED@example.com", "not an address"):
            response = await m.http.post(
                CHANGE, json={"new_email": new, "password": PASSWORD}, headers=auth
            )
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["body", "new_email"]
        anonymous = await m.http.post(
            CHANGE, json={"new_email": "x@example.com", "password": PASSWORD}
        )
        assert anonymous.status_code == 401
