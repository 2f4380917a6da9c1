"""Register without an enumeration oracle, email verification, the login gate of
``AUTHKEEP_EMAIL_VERIFICATION`` and the mail limits — over HTTP, reading the mail the app
really sent (file transport, and a real SMTP server), on SQLite and PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import time_machine

from account_helpers import drained, header_names, mail_app, to, token_in
from audit_helpers import app_rows
from authkeep import Settings
from helpers import PASSWORD, bearer, client_for
from mail_helpers import SmtpSink

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
VERIFY = "/api/v1/auth/verify-email"
RESEND = "/api/v1/auth/verify-email/resend"
VERIFY_SUBJECT = "Confirm your email address"
ATTEMPT_SUBJECT = "Someone tried to sign up"


def body(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"email": email, "password": password}


async def test_register_answers_alike_for_a_new_and_a_taken_email(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail") as m:
        new = await m.http.post(REGISTER, json=body("alice@example.com"))
        # Another letter case and another password: still the same account's address.
        taken = await m.http.post(REGISTER, json=body("ALICE@example.com", PASSWORD + "!"))
        assert new.status_code == taken.status_code == 202, (new.text, taken.text)
        assert new.json() == taken.json()
        assert "Email already registered" not in taken.text
        assert header_names(new) == header_names(taken)
        mail = await m.mail(2)
        assert [(to(x), VERIFY_SUBJECT in x["Subject"]) for x in mail] == [
            ("alice@example.com", True),
            ("alice@example.com", False),
        ]
        assert ATTEMPT_SUBJECT in mail[1]["Subject"]
        # The taken address's password did not change, and only one account exists.
        assert (await m.http.post(LOGIN, json=body("alice@example.com"))).status_code == 200
        rows = await app_rows(m.app, "user.registered")
        assert len(rows) == 1
        attempts = await app_rows(m.app, "user.signup_existing_email")
        assert [(r.outcome, r.details) for r in attempts] == [
            ("failure", {"reason": "email_taken"})
        ]


async def test_the_verification_link_verifies_once_and_tokens_carry_it(
    make_settings: Callable[..., Settings], smtp_server: SmtpSink
) -> None:
    async with mail_app(make_settings, smtp=smtp_server) as m:
        assert (await m.http.post(REGISTER, json=body("bob@example.com"))).status_code == 202
        before = (await m.http.post(LOGIN, json=body("bob@example.com"))).json()
        assert before["user"]["email_verified"] is False
        claims = jwt.decode(before["access_token"], options={"verify_signature": False})
        assert claims["email_verified"] is False

        token = token_in(await m.mail_to("bob@example.com", VERIFY_SUBJECT))
        verified = await m.http.post(VERIFY, json={"token": token})
        assert verified.status_code == 200, verified.text
        assert verified.json()["email_verified"] is True
        again = await m.http.post(VERIFY, json={"token": token})
        assert again.status_code == 400
        assert "expired" in again.json()["detail"]

        # The session's user view changes at once; a new token carries the claim.
        me = await m.http.get("/api/v1/auth/me", headers=bearer(before["access_token"]))
        assert me.json()["email_verified"] is True
        after = (await m.http.post(LOGIN, json=body("bob@example.com"))).json()
        claims = jwt.decode(after["access_token"], options={"verify_signature": False})
        assert claims["email_verified"] is True
        assert [r.outcome for r in await app_rows(m.app, "user.email_verified")] == ["success"]
        assert len(await app_rows(m.app, "user.email_verification_sent")) == 1


async def test_required_verification_refuses_login_only_after_a_correct_password(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", email_verification="required") as m:
        await m.http.post(REGISTER, json=body("carol@example.com"))
        wrong = await m.http.post(LOGIN, json=body("carol@example.com", "not the password"))
        assert wrong.status_code == 401
        refused = await m.http.post(LOGIN, json=body("carol@example.com"))
        assert refused.status_code == 403
        assert refused.json() == {"detail": "Email not verified"}
        form = {"grant_type": "password", "username": "carol@example.com", "password": PASSWORD}
        oauth = await m.http.post("/api/v1/auth/token", data=form)
        # The OAuth2 token endpoint says it in RFC 6749's words (tests/http/test_oauth2_token.py).
        assert oauth.status_code == 400
        assert oauth.json() == {"error": "invalid_grant", "error_description": "Email not verified"}
        # Each refusal queued a fresh link (the newest voids the older ones).
        links = [x for x in await m.mail() if VERIFY_SUBJECT in x["Subject"]]
        assert len(links) == 3
        assert (await m.http.post(VERIFY, json={"token": token_in(links[0])})).status_code == 400
        assert (await m.http.post(VERIFY, json={"token": token_in(links[-1])})).status_code == 200
        assert (await m.http.post(LOGIN, json=body("carol@example.com"))).status_code == 200
        reasons = [r.details.get("reason") for r in await app_rows(m.app, "auth.login")]
        assert reasons.count("email_not_verified") == 2


async def test_resend_answers_alike_and_only_the_newest_link_works(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail") as m:
        await m.http.post(REGISTER, json=body("dave@example.com"))
        known = await m.http.post(RESEND, json={"email": "dave@example.com"})
        unknown = await m.http.post(RESEND, json={"email": "nobody@example.com"})
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()
        assert header_names(known) == header_names(unknown)
        mail = await m.mail(2)
        assert {to(x) for x in mail} == {"dave@example.com"}
        first, second = (token_in(x) for x in mail)
        assert (await m.http.post(VERIFY, json={"token": first})).status_code == 400
        assert (await m.http.post(VERIFY, json={"token": second})).status_code == 200
        # Verified: a resend sends nothing more.
        await m.http.post(RESEND, json={"email": "dave@example.com"})
        await m.mail(2)


async def test_a_verification_link_expires(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", email_verification_expire_hours=48) as m:
        await m.http.post(REGISTER, json=body("erin@example.com"))
        token = token_in(await m.mail_to("erin@example.com"))
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=48, minutes=1)):
            late = await m.http.post(VERIFY, json={"token": token})
        assert late.status_code == 400
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=47)):
            in_time = await m.http.post(VERIFY, json={"token": token})
        assert in_time.status_code == 200


async def test_bad_tokens_are_a_400_that_echoes_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail") as m:
        for token in ("zz?not-a-token", "A" * 43, "é" * 43, "' OR 1=1 --", "a" * 256):
            response = await m.http.post(VERIFY, json={"token": token})
            assert response.status_code == 400, (token, response.text)
            assert token not in response.text
        assert (await m.http.post(VERIFY, json={"token": "a" * 257})).status_code == 422


async def test_verification_off_sends_no_link_but_resend_still_verifies(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", email_verification="off") as m:
        await m.http.post(REGISTER, json=body("fay@example.com"))
        await m.mail(0)
        assert (await m.http.post(LOGIN, json=body("fay@example.com"))).status_code == 200
        await m.http.post(RESEND, json={"email": "fay@example.com"})
        link = await m.mail_to("fay@example.com", VERIFY_SUBJECT)
        assert (await m.http.post(VERIFY, json={"token": token_in(link)})).status_code == 200


async def test_mails_to_one_recipient_are_limited_silently(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", mail_recipient_rate_limit="2/hour") as m:
        answers = [await m.http.post(REGISTER, json=body("gus@example.com")) for _ in range(5)]
        assert {a.status_code for a in answers} == {202}
        assert len({a.text for a in answers}) == 1
        # The verification link and one "someone tried" notice; the rest were skipped.
        assert [to(x) for x in await m.mail()] == ["gus@example.com"] * 2


async def test_the_client_mail_limit_is_the_same_429_for_known_and_unknown_addresses(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with mail_app(make_settings, tmp_path / "mail", mail_ip_rate_limit="2/hour") as m:
        await m.http.post(REGISTER, json=body("hal@example.com"))  # spends one: IP A
        other = client_for(m.app, ("198.51.100.9", 5000))
        async with other:
            known = [
                (await m.http.post(RESEND, json={"email": "hal@example.com"})) for _ in range(2)
            ]
            unknown = [
                (await other.post(RESEND, json={"email": f"x{i}@example.com"})) for i in range(3)
            ]
        assert [r.status_code for r in known] == [202, 429]
        assert [r.status_code for r in unknown] == [202, 202, 429]
        assert known[1].json() == unknown[2].json()
        assert known[1].headers["retry-after"]
        assert unknown[2].headers["retry-after"]
        assert header_names(known[1]) == header_names(unknown[2])
        await drained(m.app)
