"""A platform admin resets a user's MFA (issue 14): ``POST /admin/users/{id}/mfa/reset``
``{reason}`` removes the TOTP factor, recovery codes, passkeys and pending MFA sign-ins, ends
the user's sessions at once, emails them through the outbox and audits the reason — all in one
transaction; only a platform admin with a recent sign-in may."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import time_machine
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from account_helpers import mail_app
from audit_helpers import app_rows
from authkeep import Settings
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.models import (
    MfaLoginChallenge,
    RecoveryCode,
    TotpFactor,
    WebAuthnCredential,
)
from helpers import PASSWORD, authkeep_of, bearer, login, register
from session_helpers import refresh
from step_up_helpers import MAX_AGE, START, challenge, enrol_totp, make_superuser

USERS = "/api/v1/admin/users"
REASON = "Lost her phone and her recovery codes; identity checked by video call"


Factor = type[TotpFactor] | type[RecoveryCode] | type[WebAuthnCredential] | type[MfaLoginChallenge]


async def count_rows(app: FastAPI, model: Factor, user_id: uuid.UUID) -> int:
    """How many rows of ``model`` belong to ``user_id``."""
    statement = select(func.count()).select_from(model).where(model.user_id == user_id)
    async with authkeep_of(app).services.db.reading() as conn:
        return int((await conn.execute(statement)).scalar_one())


async def test_reset_removes_every_factor_ends_sessions_emails_and_audits(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path / "mail") as served:
            app, http = served.app, served.http
            root = await make_superuser(app, http)
            alice = await register(http, verified=True)
            alice_id = uuid.UUID(alice["id"])
            pair = await login(http)
            await enrol_totp(http, pair["access_token"], START)
            async with authkeep_of(app).services.db.transaction() as conn:
                await conn.execute(
                    insert(WebAuthnCredential).values(
                        id=uuid.uuid4(),
                        user_id=alice_id,
                        credential_id="cred-" + uuid.uuid4().hex,
                        public_key=b"\x01",
                        sign_count=0,
                        device_type="multi_device",
                        backed_up=True,
                        name="Phone",
                        created_at=utcnow(),
                    )
                )
            # A sign-in waiting for its second step: its mfa_token must die with the reset.
            pending = await http.post(
                "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
            )
            assert pending.json()["mfa_required"] is True
            for model in (TotpFactor, RecoveryCode, WebAuthnCredential, MfaLoginChallenge):
                assert await count_rows(app, model, alice_id) > 0, model

            reset = await http.post(
                f"{USERS}/{alice_id}/mfa/reset",
                json={"reason": REASON},
                headers=bearer(root["access_token"]),
            )
            assert reset.status_code == 204, reset.text

            for model in (TotpFactor, RecoveryCode, WebAuthnCredential, MfaLoginChallenge):
                assert await count_rows(app, model, alice_id) == 0, model
            async with authkeep_of(app).services.db.reading() as conn:
                user = await user_rows.get_by_id(conn, authkeep_of(app).services.envelope, alice_id)
            assert user is not None
            assert user.mfa_enabled is False
            # Every session ended at once: the access token and the refresh token.
            me = await http.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
            assert me.status_code == 401
            assert (await refresh(http, pair["refresh_token"])).status_code == 401
            dead = await http.post(
                "/api/v1/auth/mfa/verify",
                json={"mfa_token": pending.json()["mfa_token"], "code": "123456"},
            )
            assert dead.status_code == 401

            [row] = await app_rows(app, "user.mfa_reset")
            assert row.actor_user_id == uuid.UUID(root["user"]["id"])
            assert row.entity_id == str(alice_id)
            assert row.details["reason"] == REASON
            assert row.details["removed"] == {
                "totp": 1,
                "recovery_codes": 10,
                "webauthn": 1,
                "challenges": 1,
            }
            assert row.details["sessions_ended"] == 1

            notice = await served.mail_to("alice@example.com", "Two-factor authentication")
            assert (
                "removed the two-factor authentication" in notice.get_body(("plain",)).get_content()
            )

            # The password alone signs in again, with nothing left to ask for.
            clock.shift(timedelta(seconds=30))
            again = await login(http)
            assert "access_token" in again


async def test_only_a_platform_admin_with_a_recent_sign_in_may_reset(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with mail_app(make_settings, tmp_path / "mail") as served:
            app, http = served.app, served.http
            root = bearer((await make_superuser(app, http))["access_token"])
            alice = await register(http)
            url = f"{USERS}/{alice['id']}/mfa/reset"
            user = bearer((await login(http))["access_token"])

            assert (await http.post(url, json={"reason": "x"})).status_code == 401
            assert (await http.post(url, json={"reason": "x"}, headers=user)).status_code == 403
            assert (await http.post(url, json={}, headers=root)).status_code == 422
            assert (await http.post(url, json={"reason": ""}, headers=root)).status_code == 422
            unknown = await http.post(
                f"{USERS}/{uuid.uuid4()}/mfa/reset", json={"reason": "x"}, headers=root
            )
            assert unknown.status_code == 404

            clock.shift(timedelta(seconds=MAX_AGE + 1))
            stale = await http.post(url, json={"reason": "x"}, headers=root)
            assert stale.status_code == 401
            assert stale.headers["www-authenticate"] == challenge()
            assert await app_rows(app, "user.mfa_reset") == []
