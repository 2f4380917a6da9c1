"""Forgot / reset password over HTTP, reading the mail from a real SMTP server and from the
file transport, on SQLite and PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import time_machine

from account_helpers import header_names, mail_app, to, token_in
from audit_helpers import app_rows
from authkeep import Settings
from helpers import PASSWORD, bearer, register
from mail_helpers import SmtpSink

FORGOT = "/api/v1/auth/password/forgot"
RESET = "/api/v1/auth/password/reset"
LOGIN = "/api/v1/auth/login"
NEW_PASSWORD = "plum tractor lantern orbit"
RESET_SUBJECT = "Reset your"


def creds(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"email": email, "password": password}


async def test_a_reset_ends_every_session_and_works_once(
    make_settings: Callable[..., Settings], smtp_server: SmtpSink
) -> None:
    async with mail_app(make_settings, smtp=smtp_server) as m:
        await register(m.http, "ann@example.com", verified=True)
        sessions = [(await m.http.post(LOGIN, json=creds("ann@example.com"))).json()]
        sessions.append((await m.http.post(LOGIN, json=creds("ann@example.com"))).json())

        asked = await m.http.post(FORGOT, json={"email": "ann@example.com"})
        assert asked.status_code == 202, asked.text
        token = token_in(await m.mail_to("ann@example.com", RESET_SUBJECT))

        # A password the policy refuses costs nothing: the link still works afterwards.
        weak = await m.http.post(RESET, json={"token": token, "new_password": "password"})
        assert weak.status_code == 422
        assert weak.json()["detail"][0]["loc"] == ["body", "new_password"]
        done = await m.http.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
        assert done.status_code == 204, done.text

        for pair in sessions:
            me = await m.http.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
            assert me.status_code == 401
            again = {"refresh_token": pair["refresh_token"]}
            assert (await m.http.post("/api/v1/auth/refresh", json=again)).status_code == 401
        assert (await m.http.post(LOGIN, json=creds("ann@example.com"))).status_code == 401
        assert (
            await m.http.post(LOGIN, json=creds("ann@example.com", NEW_PASSWORD))
        ).status_code == 200
        reused = await m.http.post(RESET, json={"token": token, "new_password": PASSWORD + "!"})
        assert reused.status_code == 400

        notice = await m.mail_to("ann@example.com", "password was changed")
        assert "forgot-password" in notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        [requested] = await app_rows(m.app, "user.password_reset_requested")
        assert requested.outcome == "success"
        [reset] = await app_rows(m.app, "user.password_reset")
        assert reset.details["sessions_ended"] == 2


async def test_forgot_answers_alike_for_known_and_unknown_addresses(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail") as m:
        await register(m.http, "bea@example.com")
        await m.mail()
        known = await m.http.post(FORGOT, json={"email": "bea@example.com"})
        unknown = await m.http.post(FORGOT, json={"email": "nobody@example.com"})
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()
        assert header_names(known) == header_names(unknown)
        resets = [x for x in await m.mail() if RESET_SUBJECT in x["Subject"]]
        assert [to(x) for x in resets] == ["bea@example.com"]
        outcomes = [
            (r.outcome, r.details.get("reason"))
            for r in await app_rows(m.app, "user.password_reset_requested")
        ]
        assert sorted(outcomes, key=str) == sorted(
            [("success", None), ("failure", "unknown_email")], key=str
        )
        bad = await m.http.post(FORGOT, json={"email": "not an email"})
        assert bad.status_code == 422


async def test_a_newer_link_voids_the_older_and_links_expire(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", password_reset_expire_minutes=60) as m:
        await register(m.http, "cid@example.com")
        await m.http.post(FORGOT, json={"email": "cid@example.com"})
        first = token_in(await m.mail_to("cid@example.com", RESET_SUBJECT))
        await m.http.post(FORGOT, json={"email": "cid@example.com"})
        second = token_in(await m.mail_to("cid@example.com", RESET_SUBJECT))
        assert first != second
        old = await m.http.post(RESET, json={"token": first, "new_password": NEW_PASSWORD})
        assert old.status_code == 400
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=61)):
            late = await m.http.post(RESET, json={"token": second, "new_password": NEW_PASSWORD})
        assert late.status_code == 400
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=59)):
            ok = await m.http.post(RESET, json={"token": second, "new_password": NEW_PASSWORD})
        assert ok.status_code == 204


async def test_two_concurrent_resets_with_one_link_one_wins(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail") as m:
        await register(m.http, "dan@example.com")
        await m.http.post(FORGOT, json={"email": "dan@example.com"})
        token = token_in(await m.mail_to("dan@example.com", RESET_SUBJECT))
        answers = await asyncio.gather(
            *(
                m.http.post(RESET, json={"token": token, "new_password": f"{NEW_PASSWORD} {i}"})
                for i in range(4)
            )
        )
        assert sorted(a.status_code for a in answers) == [204, 400, 400, 400]
        assert len(await app_rows(m.app, "user.password_reset")) == 1


async def test_a_reset_proves_the_address(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", email_verification="required") as m:
        await register(m.http, "eve@example.com")
        assert (await m.http.post(LOGIN, json=creds("eve@example.com"))).status_code == 403
        await m.http.post(FORGOT, json={"email": "eve@example.com"})
        token = token_in(await m.mail_to("eve@example.com", RESET_SUBJECT))
        await m.http.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
        login = await m.http.post(LOGIN, json=creds("eve@example.com", NEW_PASSWORD))
        assert login.status_code == 200, login.text
        assert login.json()["user"]["email_verified"] is True
