"""The authenticator app (TOTP) over HTTP: setup, confirmation, replay rejection, clock
skew, removal, recovery codes, and the secret at rest. SQLite and PostgreSQL + Redis."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pyotp
from sqlalchemy import text

from audit_helpers import app_rows
from helpers import PASSWORD, app_of, bearer, login, register
from mfa_helpers import (
    CONFIRM,
    RECOVERY,
    SETUP,
    TOTP,
    code,
    enrol,
    first_step,
    mfa_login,
    mid_step,
    second_step,
    setup_totp,
)
from session_helpers import claims_of, rows, services

ME = "/api/v1/auth/me"


async def signed_in(http: httpx.AsyncClient, email: str = "alice@example.com") -> str:
    """A new user's access token (a fresh password sign-in)."""
    await register(http, email)
    return str((await login(http, email))["access_token"])


def uid(app: Any, user_id: str) -> Any:
    """A user id as a raw query wants it (SQLite: 32 hex digits; PostgreSQL: uuid)."""
    parsed = uuid.UUID(user_id)
    return parsed if services(app).db.is_postgres else parsed.hex


async def test_setup_then_a_correct_code_turns_mfa_on(client: httpx.AsyncClient) -> None:
    access = await signed_in(client)
    setup = await client.post(SETUP, headers=bearer(access))
    assert setup.status_code == 200, setup.text
    assert setup.headers["cache-control"] == "no-store"
    body = setup.json()
    assert set(body) == {"secret", "otpauth_uri", "qr_svg"}
    assert pyotp.parse_uri(body["otpauth_uri"]).secret == body["secret"]
    assert "issuer=authkeep" in body["otpauth_uri"]
    assert body["qr_svg"].startswith("<svg")
    # Pending: nothing changed yet.
    assert (await client.get(ME, headers=bearer(access))).json()["mfa_enabled"] is False
    assert (await first_login_keys(client)) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "user",
    }

    confirmed = await client.post(
        CONFIRM, json={"code": code(body["secret"])}, headers=bearer(access)
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10
    assert all(re.fullmatch(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}", c) for c in codes)
    assert (await client.get(ME, headers=bearer(access))).json()["mfa_enabled"] is True
    [row] = await app_rows(app_of(client), "mfa.totp_enrolled")
    assert row.outcome == "success"


async def first_login_keys(http: httpx.AsyncClient) -> set[str]:
    response = await http.post(
        "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    return set(response.json())


async def test_a_wrong_code_is_refused_and_changes_nothing(client: httpx.AsyncClient) -> None:
    access = await signed_in(client)
    secret = await setup_totp(client, access)
    wrong = f"{(int(code(secret)) + 1) % 1_000_000:06d}"
    refused = await client.post(CONFIRM, json={"code": wrong}, headers=bearer(access))
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "code"]
    assert wrong not in refused.text
    assert (await client.get(ME, headers=bearer(access))).json()["mfa_enabled"] is False
    [row] = await app_rows(app_of(client), "mfa.verify")
    assert row.outcome == "failure"
    assert row.details == {"method": "totp", "purpose": "enrolment"}


async def test_the_enrolment_code_is_refused_afterwards(client: httpx.AsyncClient) -> None:
    with mid_step():
        access = await signed_in(client)
        secret, _ = await enrol(client, access)
        pending = await first_step(client)
        replayed = await second_step(client, pending["mfa_token"], code=code(secret))
        assert replayed.status_code == 401
        assert replayed.json() == {"detail": "Invalid code"}
        assert replayed.headers["www-authenticate"] == "Bearer"
        assert (await second_step(client, pending["mfa_token"], code=code(secret, 1))).is_success


async def test_the_same_code_twice_is_refused(client: httpx.AsyncClient) -> None:
    with mid_step():
        access = await signed_in(client)
        secret, _ = await enrol(client, access)
        await mfa_login(client, code=code(secret, 1))
        pending = await first_step(client)
        again = await second_step(client, pending["mfa_token"], code=code(secret, 1))
        assert again.status_code == 401


async def test_an_older_code_after_a_newer_one_is_refused(client: httpx.AsyncClient) -> None:
    with mid_step():
        access = await signed_in(client)
        secret = await setup_totp(client, access)
        # Enrolled with the previous step's code (skew), so the current step is still new.
        confirmed = await client.post(
            CONFIRM, json={"code": code(secret, -1)}, headers=bearer(access)
        )
        assert confirmed.status_code == 200
        await mfa_login(client, code=code(secret, 1))
        pending = await first_step(client)
        older = await second_step(client, pending["mfa_token"], code=code(secret))
        assert older.status_code == 401


async def test_one_step_of_clock_skew_is_accepted_two_are_not(client: httpx.AsyncClient) -> None:
    with mid_step():
        access = await signed_in(client)
        secret = await setup_totp(client, access)
        two_behind = await client.post(
            CONFIRM, json={"code": code(secret, -2)}, headers=bearer(access)
        )
        assert two_behind.status_code == 422
        one_behind = await client.post(
            CONFIRM, json={"code": code(secret, -1)}, headers=bearer(access)
        )
        assert one_behind.status_code == 200
        pending = await first_step(client)
        two_ahead = await second_step(client, pending["mfa_token"], code=code(secret, 2))
        assert two_ahead.status_code == 401
        one_ahead = await second_step(client, pending["mfa_token"], code=code(secret, 1))
        assert one_ahead.status_code == 200


async def test_setup_again_while_pending_replaces_the_secret(client: httpx.AsyncClient) -> None:
    with mid_step():
        access = await signed_in(client)
        first = await setup_totp(client, access)
        second = await setup_totp(client, access)
        assert first != second
        stale = await client.post(CONFIRM, json={"code": code(first)}, headers=bearer(access))
        assert stale.status_code == 422
        fresh = await client.post(CONFIRM, json={"code": code(second)}, headers=bearer(access))
        assert fresh.status_code == 200


async def test_confirm_needs_a_pending_setup(client: httpx.AsyncClient) -> None:
    access = await signed_in(client)
    response = await client.post(CONFIRM, json={"code": "123456"}, headers=bearer(access))
    assert response.status_code == 409


async def test_a_second_setup_is_refused_while_one_is_confirmed(
    client: httpx.AsyncClient,
) -> None:
    with mid_step():
        access = await signed_in(client)
        secret, _ = await enrol(client, access)
        # The password-only token no longer suffices: the user now has a second factor.
        weak = await client.post(SETUP, headers=bearer(access))
        assert weak.status_code == 401
        assert 'error="insufficient_user_authentication"' in weak.headers["www-authenticate"]
        strong = (await mfa_login(client, code=code(secret, 1)))["access_token"]
        again = await client.post(SETUP, headers=bearer(strong))
        assert again.status_code == 409
        assert again.json() == {"detail": "An authenticator app is already set up: remove it first"}
        confirm = await client.post(CONFIRM, json={"code": code(secret)}, headers=bearer(strong))
        assert confirm.status_code == 409


async def test_removal_needs_the_second_factor_and_turns_mfa_off(
    client: httpx.AsyncClient,
) -> None:
    app = app_of(client)
    with mid_step():
        access = await signed_in(client)
        secret, _ = await enrol(client, access)
        weak = await client.delete(TOTP, headers=bearer(access))
        assert weak.status_code == 401
        assert 'acr_values="aal2"' in weak.headers["www-authenticate"]
        strong = (await mfa_login(client, code=code(secret, 1)))["access_token"]
        removed = await client.delete(TOTP, headers=bearer(strong))
        assert removed.status_code == 204
        assert (await client.get(ME, headers=bearer(strong))).json()["mfa_enabled"] is False
        # No factor left: the recovery codes went with it, and login is one step again.
        assert await rows(app, "SELECT id FROM mfa_recovery_codes") == []
        assert "access_token" in await first_login_keys(client)
        assert (await client.delete(TOTP, headers=bearer(strong))).status_code == 404
    [row] = await app_rows(app, "mfa.totp_removed")
    assert row.details == {"was_confirmed": True, "mfa_enabled": False, "recovery_codes_voided": 10}


async def test_regenerating_recovery_codes_voids_the_old_set(client: httpx.AsyncClient) -> None:
    app = app_of(client)
    with mid_step():
        access = await signed_in(client)
        secret, old = await enrol(client, access)
        strong = (await mfa_login(client, code=code(secret, 1)))["access_token"]
        assert (await client.post(RECOVERY, headers=bearer(access))).status_code == 401
        response = await client.post(RECOVERY, headers=bearer(strong))
        assert response.status_code == 200
        new = response.json()["recovery_codes"]
        assert len(new) == 10
        assert not set(new) & set(old)
        pending = await first_step(client)
        refused = await second_step(client, pending["mfa_token"], recovery_code=old[1])
        assert refused.status_code == 401
        accepted = await second_step(client, pending["mfa_token"], recovery_code=new[0])
        assert accepted.status_code == 200
    assert len(await app_rows(app, "mfa.recovery_codes_regenerated")) == 1


async def test_recovery_codes_need_a_second_factor(client: httpx.AsyncClient) -> None:
    access = await signed_in(client)
    response = await client.post(RECOVERY, headers=bearer(access))
    assert response.status_code == 409


async def test_the_secret_is_sealed_at_rest_and_bound_to_its_row(
    client: httpx.AsyncClient,
) -> None:
    app = app_of(client)
    with mid_step():
        alice = await signed_in(client, "alice@example.com")
        alice_secret, _ = await enrol(client, alice)
        bob = await signed_in(client, "bob@example.com")
        bob_secret, _ = await enrol(client, bob)
        stored = await rows(app, "SELECT * FROM mfa_totp")
        raw = json.dumps(stored, default=str)
        for secret in (alice_secret, bob_secret):
            assert secret not in raw
            assert secret.lower() not in raw.lower()
        # A DBA (or an injection) copies Alice's sealed secret into Bob's row: it opens
        # nowhere but in Alice's row, so Bob's factor now verifies nothing at all.
        alice_id = (await client.get(ME, headers=bearer(alice))).json()["id"]
        bob_id = (await client.get(ME, headers=bearer(bob))).json()["id"]
        async with services(app).db.transaction() as conn:
            sealed = (
                await conn.execute(
                    text("SELECT secret_sealed FROM mfa_totp WHERE user_id = :u"),
                    {"u": uid(app, alice_id)},
                )
            ).scalar_one()
            await conn.execute(
                text("UPDATE mfa_totp SET secret_sealed = :s WHERE user_id = :u"),
                {"s": sealed, "u": uid(app, bob_id)},
            )
        for secret in (alice_secret, bob_secret):
            pending = await first_step(client, "bob@example.com")
            refused = await second_step(client, pending["mfa_token"], code=code(secret, 1))
            assert refused.status_code == 401
        # Alice's own factor is untouched.
        pair = await mfa_login(client, "alice@example.com", code=code(alice_secret, 1))
        assert claims_of(pair["access_token"])["amr"] == ["pwd", "otp"]
