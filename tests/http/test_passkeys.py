"""Passkeys over HTTP with a software authenticator (``tests/webauthn_authenticator.py``):
enrolment, usernameless sign-in, replay, expiry, origin and rp id, signature counters,
listing and removal, malformed input. Each runs on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import func, select, update

from audit_helpers import app_rows
from authkeep import Settings, create_app
from authkeep.db import users as user_rows
from authkeep.db import webauthn as webauthn_rows
from authkeep.db.models import User, WebAuthnChallenge
from authkeep.services.audit import Action
from authkeep.services.mfa import passkeys as passkeys_module
from authkeep.settings import InspectedSettings, find_problems
from helpers import (
    PASSWORD,
    app_of,
    authkeep_of,
    bearer,
    client_for,
    login,
    register,
    running,
    user_json,
)
from session_helpers import claims_of
from webauthn_authenticator import SoftAuthenticator, b64url, unb64url

BASE = "/api/v1/auth/webauthn"
ORIGIN = "http://localhost:8000"
ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"


async def signed_in(http: httpx.AsyncClient, email: str = "alice@example.com") -> str:
    """A new account's fresh access token (a password sign-in)."""
    await register(http, email)
    return str((await login(http, email))["access_token"])


async def enrol(
    http: httpx.AsyncClient,
    token: str,
    key: SoftAuthenticator,
    *,
    name: str | None = None,
    origin: str = ORIGIN,
) -> httpx.Response:
    """Ask for enrolment options and answer them with ``key``."""
    options = await http.post(f"{BASE}/register/options", headers=bearer(token))
    assert options.status_code == 200, options.text
    body: dict[str, Any] = {"credential": key.create(options.json(), origin)}
    if name is not None:
        body["name"] = name
    return await http.post(f"{BASE}/register/verify", json=body, headers=bearer(token))


async def login_options(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post(f"{BASE}/login/options")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def sign_in(http: httpx.AsyncClient, key: SoftAuthenticator, **kw: Any) -> httpx.Response:
    """A usernameless passkey sign-in with ``key`` (keywords go to ``key.get``)."""
    origin = kw.pop("origin", ORIGIN)
    assertion = key.get(await login_options(http), origin, **kw)
    return await http.post(f"{BASE}/login/verify", json={"credential": assertion})


async def mfa_enabled(app: FastAPI, user_id: str) -> bool:
    found = authkeep_of(app).services
    async with found.db.reading() as conn:
        user = await user_rows.get_by_id(conn, found.envelope, uuid.UUID(user_id))
    assert user is not None
    return user.mfa_enabled


async def test_enrolment_stores_a_passkey_and_turns_mfa_on(client: httpx.AsyncClient) -> None:
    user = await register(client)
    token = str((await login(client))["access_token"])
    options = (await client.post(f"{BASE}/register/options", headers=bearer(token))).json()
    # A discoverable credential with user verification, no attestation, the user handle the
    # account's id (not its email), the user's passkeys excluded (none yet).
    assert options["rp"] == {"id": "localhost", "name": "authkeep"}
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    assert unb64url(options["user"]["id"]) == uuid.UUID(user["id"]).bytes
    assert "alice" not in unb64url(options["user"]["id"]).decode("latin-1")
    assert options["excludeCredentials"] == []
    key = SoftAuthenticator()
    credential = key.create(options, ORIGIN)
    response = await client.post(
        f"{BASE}/register/verify",
        json={"credential": credential, "name": "Laptop"},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["name"] == "Laptop"
    assert stored["device_type"] == "single_device"
    assert stored["last_used_at"] is None
    assert await mfa_enabled(app_of(client), user["id"])
    # Listed, without the public key.
    listed = (await client.get(f"{BASE}/credentials", headers=bearer(token))).json()
    assert listed == [stored]
    assert set(stored) == {"id", "name", "created_at", "last_used_at", "device_type", "backed_up"}
    # The session is aal1 and the user now has MFA: further enrolment needs a step-up.
    refused = await client.post(f"{BASE}/register/options", headers=bearer(token))
    assert refused.status_code == 401
    assert "insufficient_user_authentication" in refused.headers["www-authenticate"]
    strong = (await sign_in(client, key)).json()["access_token"]
    # The same response again: its challenge is spent.
    again = await client.post(
        f"{BASE}/register/verify", json={"credential": credential}, headers=bearer(strong)
    )
    assert again.status_code == 400
    assert "challenge" in again.json()["detail"]
    # New options exclude the passkey the user has.
    second = await client.post(f"{BASE}/register/options", headers=bearer(strong))
    assert [entry["id"] for entry in second.json()["excludeCredentials"]] == [key.id]
    row, replay = await app_rows(app_of(client), Action.MFA_PASSKEY_REGISTERED.value)
    assert (replay.outcome, replay.details["reason"]) == ("failure", "challenge")
    assert row.outcome == "success"
    assert row.entity_id == stored["id"]
    assert row.actor_user_id == uuid.UUID(user["id"])


async def test_usernameless_sign_in_gives_aal2_tokens(client: httpx.AsyncClient) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator()
    assert (await enrol(client, token, key)).status_code == 201
    options = await login_options(client)
    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    assert options["rpId"] == "localhost"

    response = await sign_in(client, key)

    assert response.status_code == 200, response.text
    pair = response.json()
    claims = claims_of(pair["access_token"])
    assert claims["amr"] == ["hwk", "user"]
    assert claims["acr"] == "aal2"
    assert pair["user"]["email"] == "alice@example.com"
    assert (await client.get(ME, headers=bearer(pair["access_token"]))).status_code == 200
    [listed] = (await client.get(f"{BASE}/credentials", headers=bearer(token))).json()
    assert listed["last_used_at"] is not None
    [row] = await app_rows(app_of(client), Action.MFA_PASSKEY_LOGIN.value)
    assert (row.outcome, row.details["ceremony"]) == ("success", "login")


async def test_a_replayed_assertion_is_refused(client: httpx.AsyncClient) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator(synced=True)  # counter 0 always: only the challenge stops it
    await enrol(client, token, key)
    assertion = key.get(await login_options(client), ORIGIN)
    first = await client.post(f"{BASE}/login/verify", json={"credential": assertion})
    assert first.status_code == 200

    replay = await client.post(f"{BASE}/login/verify", json={"credential": assertion})

    assert replay.status_code == 401
    assert replay.json() == {"detail": "Passkey sign-in failed"}
    assert replay.headers["www-authenticate"] == "Bearer"
    reasons = [r.details.get("reason") for r in await app_rows(app_of(client), "mfa.passkey_login")]
    assert reasons == [None, "challenge"]


async def test_an_expired_challenge_is_refused(client: httpx.AsyncClient) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator()
    await enrol(client, token, key)
    options = await login_options(client)
    late = key.get(options, ORIGIN)
    later = datetime.now(UTC) + timedelta(seconds=301)
    with time_machine.travel(later):
        response = await client.post(f"{BASE}/login/verify", json={"credential": late})
        assert response.status_code == 401
        # New options sweep the expired challenges away.
        await login_options(client)
        async with authkeep_of(app_of(client)).services.db.reading() as conn:
            left = await conn.scalar(
                select(func.count()).where(WebAuthnChallenge.expires_at < later)
            )
        assert left == 0
    in_time = key.get(await login_options(client), ORIGIN)
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=290)):
        response = await client.post(f"{BASE}/login/verify", json={"credential": in_time})
    assert response.status_code == 200


async def test_a_wrong_origin_or_rp_id_is_refused(client: httpx.AsyncClient) -> None:
    token = await signed_in(client)
    phished = await enrol(client, token, SoftAuthenticator(), origin="https://evil.example")
    assert phished.status_code == 400
    assert "origin" in phished.json()["detail"]
    key = SoftAuthenticator()
    assert (await enrol(client, token, key)).status_code == 201

    # A phishing page relays the real options but runs on its own origin, or the
    # authenticator scopes the key to another rp id: neither signature is ours.
    assert (await sign_in(client, key, origin="https://evil.example")).status_code == 401
    assert (await sign_in(client, key, rp_id="evil.example")).status_code == 401
    assert (await sign_in(client, key)).status_code == 200


async def test_a_synced_passkey_with_counter_zero_signs_in_again_and_again(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator(synced=True)
    stored = (await enrol(client, token, key)).json()
    assert (stored["device_type"], stored["backed_up"]) == ("multi_device", True)
    for _ in range(3):
        assert (await sign_in(client, key)).status_code == 200
    assert key.sign_count == 0
    assert await app_rows(app_of(client), Action.MFA_PASSKEY_COUNTER_REGRESSION.value) == []


async def test_a_device_bound_counter_going_backwards_is_refused_and_audited(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator()
    stored = (await enrol(client, token, key)).json()
    assert (await sign_in(client, key)).status_code == 200  # counter 1
    assert (await sign_in(client, key)).status_code == 200  # counter 2

    backwards = await sign_in(client, key, counter=1)
    same = await sign_in(client, key, counter=2)
    zero = await sign_in(client, key, counter=0)

    for refused in (backwards, same, zero):
        assert refused.status_code == 401
        assert refused.json() == {"detail": "Passkey sign-in failed"}
    alarms = await app_rows(app_of(client), Action.MFA_PASSKEY_COUNTER_REGRESSION.value)
    assert [(r.outcome, r.entity_id) for r in alarms] == [("failure", stored["id"])] * 3
    # Only a genuine (signed) assertion raises the alarm: a forged one with a low counter
    # is an ordinary failure, so nobody without the key can fake a cloned authenticator.
    forged = key.get(await login_options(client), ORIGIN, counter=1)
    forged["response"]["signature"] = b64url(b"\x30\x06\x02\x01\x01\x02\x01\x01")
    response = await client.post(f"{BASE}/login/verify", json={"credential": forged})
    assert response.status_code == 401
    assert len(await app_rows(app_of(client), Action.MFA_PASSKEY_COUNTER_REGRESSION.value)) == 3
    assert (await sign_in(client, key, counter=3)).status_code == 200


async def test_two_racing_assertions_with_one_counter_value_have_one_winner(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator()
    await enrol(client, token, key)
    # A key and its clone, each answering its own challenge with the same counter, at once.
    original = key.get(await login_options(client), ORIGIN, counter=5)
    clone = key.get(await login_options(client), ORIGIN, counter=5)

    responses = await asyncio.gather(
        *(client.post(f"{BASE}/login/verify", json={"credential": c}) for c in (original, clone))
    )

    assert sorted(r.status_code for r in responses) == [200, 401]
    alarms = await app_rows(app_of(client), Action.MFA_PASSKEY_COUNTER_REGRESSION.value)
    assert len(alarms) == 1


async def test_list_and_remove_and_someone_elses_passkey_is_404(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client, "alice@example.com")
    alice_token = str((await login(client, "alice@example.com"))["access_token"])
    bob_token = await signed_in(client, "bob@example.com")
    key = SoftAuthenticator()
    stored = (await enrol(client, alice_token, key)).json()
    assert (await client.get(f"{BASE}/credentials", headers=bearer(bob_token))).json() == []

    not_bobs = await client.delete(f"{BASE}/credentials/{stored['id']}", headers=bearer(bob_token))
    unknown = await client.delete(f"{BASE}/credentials/{uuid.uuid4()}", headers=bearer(bob_token))
    assert (not_bobs.status_code, unknown.status_code) == (404, 404)
    assert not_bobs.json() == unknown.json()
    # Removing needs a recent sign-in with the second factor: alice's password session is
    # not enough now that she has one.
    weak = await client.delete(f"{BASE}/credentials/{stored['id']}", headers=bearer(alice_token))
    assert weak.status_code == 401
    assert 'acr_values="aal2"' in weak.headers["www-authenticate"]
    strong = (await sign_in(client, key)).json()["access_token"]

    removed = await client.delete(f"{BASE}/credentials/{stored['id']}", headers=bearer(strong))

    assert removed.status_code == 204
    assert (await client.get(f"{BASE}/credentials", headers=bearer(strong))).json() == []
    assert not await mfa_enabled(app_of(client), alice["id"])
    assert (await sign_in(client, key)).status_code == 401
    [row] = await app_rows(app_of(client), Action.MFA_PASSKEY_REMOVED.value)
    assert (row.entity_id, row.details["mfa_enabled"]) == (stored["id"], False)


async def test_someone_elses_credential_id_cannot_be_registered_again(
    client: httpx.AsyncClient,
) -> None:
    alice_token = await signed_in(client, "alice@example.com")
    bob_token = await signed_in(client, "bob@example.com")
    key = SoftAuthenticator()
    assert (await enrol(client, alice_token, key)).status_code == 201
    # Bob (or an attacker who learnt the credential id) answers with the same id and his
    # own key: refused, so a sign-in with that id keeps meaning alice's key.
    taken = await enrol(client, bob_token, key)
    assert taken.status_code == 409
    assert (await client.get(f"{BASE}/credentials", headers=bearer(bob_token))).json() == []


async def test_an_unknown_passkey_gets_the_same_401_as_a_bad_signature(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator()
    await enrol(client, token, key)
    unknown = await sign_in(client, SoftAuthenticator())
    tampered_assertion = key.get(await login_options(client), ORIGIN)
    tampered_assertion["response"]["authenticatorData"] = b64url(
        unb64url(tampered_assertion["response"]["authenticatorData"])[:-1] + b"\x7f"
    )
    tampered = await client.post(f"{BASE}/login/verify", json={"credential": tampered_assertion})
    for response in (unknown, tampered):
        assert response.status_code == 401
        assert response.json() == {"detail": "Passkey sign-in failed"}
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_usernameless_sign_in_needs_the_owners_user_handle(
    client: httpx.AsyncClient,
) -> None:
    await signed_in(client, "bob@example.com")
    bob = await user_json(app_of(client), "bob@example.com")
    token = await signed_in(client, "alice@example.com")
    key = SoftAuthenticator()
    await enrol(client, token, key)
    # The user handle is not covered by the signature: an assertion naming another account
    # (or none) must not sign anyone in.
    no_handle = await sign_in(client, key, user_handle=False)
    key.user_handle = uuid.UUID(bob["id"]).bytes
    bobs_handle = await sign_in(client, key)
    assert (no_handle.status_code, bobs_handle.status_code) == (401, 401)
    reasons = [r.details["reason"] for r in await app_rows(app_of(client), "mfa.passkey_login")]
    assert reasons == ["user_handle", "user_handle"]


async def test_the_counter_moves_only_forward_in_one_statement(client: httpx.AsyncClient) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator()
    device = (await enrol(client, token, key)).json()
    strong = (await sign_in(client, key, counter=0)).json()["access_token"]  # stored stays 0
    synced = (await enrol(client, strong, SoftAuthenticator(synced=True))).json()
    db = authkeep_of(app_of(client)).services.db
    now = datetime.now(UTC)

    async def use(passkey: dict[str, Any], count: int) -> bool:
        async with db.transaction() as conn:
            return await webauthn_rows.record_use(
                conn, uuid.UUID(passkey["id"]), sign_count=count, backed_up=False, now=now
            )

    # Two sign-ins that both read 0 and both present 7: the second finds the row moved.
    assert [await use(device, 7), await use(device, 7), await use(device, 3)] == [
        True,
        False,
        False,
    ]
    assert await use(device, 8)
    assert await use(device, 0) is False
    assert [await use(synced, 0), await use(synced, 0)] == [True, True]


async def test_an_account_has_at_most_max_passkeys(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passkeys_module, "MAX_PASSKEYS", 2)
    token = await signed_in(client)
    first = SoftAuthenticator()
    assert (await enrol(client, token, first)).status_code == 201
    strong = (await sign_in(client, first)).json()["access_token"]
    assert (await enrol(client, strong, SoftAuthenticator())).status_code == 201
    third = await enrol(client, strong, SoftAuthenticator())
    assert third.status_code == 409
    assert "2 passkeys" in third.json()["detail"]


async def test_an_inactive_account_cannot_sign_in_with_its_passkey(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client)
    token = str((await login(client))["access_token"])
    key = SoftAuthenticator()
    await enrol(client, token, key)
    async with authkeep_of(app_of(client)).services.db.transaction() as conn:
        await conn.execute(
            update(User).where(User.id == uuid.UUID(user["id"])).values(is_active=False)
        )
    response = await sign_in(client, key)
    assert response.status_code == 401
    assert response.json() == {"detail": "Passkey sign-in failed"}


async def password_step(http: httpx.AsyncClient, email: str = "alice@example.com") -> str:
    """The ``mfa_token`` of a password login of an account with a second factor."""
    response = await http.post(LOGIN, json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is True
    assert "webauthn" in body["methods"]
    assert "access_token" not in body
    return str(body["mfa_token"])


async def test_a_passkey_as_the_second_step_of_a_password_login(
    client: httpx.AsyncClient,
) -> None:
    alice_token = await signed_in(client, "alice@example.com")
    bob_token = await signed_in(client, "bob@example.com")
    key, bobs = SoftAuthenticator(), SoftAuthenticator()
    await enrol(client, alice_token, key)
    await enrol(client, bob_token, bobs)
    mfa_token = await password_step(client)

    options = await client.post(f"{BASE}/login/options", json={"mfa_token": mfa_token})

    assert options.status_code == 200
    assert [entry["id"] for entry in options.json()["allowCredentials"]] == [key.id]
    assert options.json()["userVerification"] == "preferred"
    # Bob's passkey cannot finish alice's login, nor can a usernameless challenge (not
    # bound to her login), nor an unknown mfa_token.
    bob_options = {**options.json(), "allowCredentials": []}
    wrong_key = await client.post(
        f"{BASE}/login/verify",
        json={"credential": bobs.get(bob_options, ORIGIN), "mfa_token": mfa_token},
    )
    assert wrong_key.status_code == 401
    unbound = key.get(await login_options(client), ORIGIN)
    wrong_challenge = await client.post(
        f"{BASE}/login/verify", json={"credential": unbound, "mfa_token": mfa_token}
    )
    assert wrong_challenge.status_code == 401
    bogus = await client.post(f"{BASE}/login/options", json={"mfa_token": "A" * 43})
    assert bogus.status_code == 401
    # A security key used without its PIN: the password is the other factor (aal2), and
    # the tokens do not claim user verification. (Bob's attempt spent the first options.)
    key.user_verification = False
    options = await client.post(f"{BASE}/login/options", json={"mfa_token": mfa_token})
    assertion = key.get(options.json(), ORIGIN)

    finished = await client.post(
        f"{BASE}/login/verify", json={"credential": assertion, "mfa_token": mfa_token}
    )

    assert finished.status_code == 200, finished.text
    claims = claims_of(finished.json()["access_token"])
    assert (claims["amr"], claims["acr"]) == (["pwd", "hwk"], "aal2")
    again = await client.post(
        f"{BASE}/login/verify", json={"credential": assertion, "mfa_token": mfa_token}
    )
    assert again.status_code == 401
    # With user verification, the tokens say so.
    key.user_verification = True
    mfa_token = await password_step(client)
    options = await client.post(f"{BASE}/login/options", json={"mfa_token": mfa_token})
    verified = await client.post(
        f"{BASE}/login/verify",
        json={"credential": key.get(options.json(), ORIGIN), "mfa_token": mfa_token},
    )
    assert claims_of(verified.json()["access_token"])["amr"] == ["pwd", "hwk", "user"]
    ceremonies = [
        (r.outcome, r.details["ceremony"], r.details.get("reason"))
        for r in await app_rows(app_of(client), Action.MFA_PASSKEY_LOGIN.value)
    ]
    assert ceremonies == [
        ("failure", "mfa", "unknown_credential"),
        ("failure", "mfa", "challenge"),
        ("success", "mfa", None),
        ("success", "mfa", None),
    ]


@asynccontextmanager
async def app_with(
    make_settings: Callable[..., Settings], **values: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(make_settings(**values))) as app, client_for(app) as http:
        yield http


async def test_an_unverified_address_gets_403_after_a_valid_passkey(
    make_settings: Callable[..., Settings],
) -> None:
    async with app_with(make_settings, email_verification="required") as http:
        user = await register(http, verified=True)
        token = str((await login(http))["access_token"])
        key = SoftAuthenticator()
        await enrol(http, token, key)
        async with authkeep_of(app_of(http)).services.db.transaction() as conn:
            await conn.execute(
                update(User).where(User.id == uuid.UUID(user["id"])).values(email_verified_at=None)
            )
        response = await sign_in(http, key)
        assert response.status_code == 403
        assert response.json() == {"detail": "Email not verified"}
        assert (await sign_in(http, SoftAuthenticator())).status_code == 401


async def test_enrolment_needs_a_recent_sign_in(client: httpx.AsyncClient) -> None:
    token = await signed_in(client)
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=601)):
        response = await client.post(f"{BASE}/register/options", headers=bearer(token))
    assert response.status_code == 401
    assert 'max_age="600"' in response.headers["www-authenticate"]
    anonymous = await client.post(f"{BASE}/register/options")
    assert anonymous.status_code == 401


async def test_malformed_credentials_are_a_4xx_that_says_what(client: httpx.AsyncClient) -> None:
    token = await signed_in(client)
    key = SoftAuthenticator()
    await enrol(client, token, key)
    good = key.get(await login_options(client), ORIGIN)

    def variant(**response: Any) -> dict[str, Any]:
        return {"credential": {**good, "response": {**good["response"], **response}}}

    not_json = variant(clientDataJSON=b64url(b"\xff not json"))
    short_data = variant(authenticatorData=b64url(b"short"))
    no_challenge = variant(clientDataJSON=b64url(b'{"type": "webauthn.get", "origin": "x"}'))
    for body in (not_json, short_data, no_challenge):
        response = await client.post(f"{BASE}/login/verify", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith("Malformed passkey response: ")
    for body in (
        {"credential": {**good, "type": "password"}},
        {"credential": {**good, "rawId": "not base64url!"}},
        {"credential": {k: v for k, v in good.items() if k != "response"}},
        {"credential": "a string"},
        {"credential": good, "is_superuser": True},
        variant(signature=None),
    ):
        response = await client.post(f"{BASE}/login/verify", json=body)
        assert response.status_code == 422, (body, response.text)
        assert good["response"]["signature"] not in response.text
    strong = (await sign_in(client, key)).json()["access_token"]
    options = (await client.post(f"{BASE}/register/options", headers=bearer(strong))).json()
    other = SoftAuthenticator().create(options, ORIGIN)
    other["response"]["attestationObject"] = b64url(b"\xa1\x63fmt")
    response = await client.post(
        f"{BASE}/register/verify", json={"credential": other}, headers=bearer(strong)
    )
    assert response.status_code == 400
    assert "attestationObject" in response.json()["detail"]


# -- settings -------------------------------------------------------------------------------


def production(*, strict: bool = False, **values: Any) -> Settings:
    """Sound production settings (but for ``values``); ``strict``: refuse as the service does."""
    base: dict[str, Any] = {
        "env": "production",
        "secret_key": "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA",
        "trusted_hosts": ["app.example.com"],
        "email_backend": "smtp",
        "public_url": "https://app.example.com",
        "data_keys": ["k1:" + b64url(bytes(range(32)))],
    }
    kind = Settings if strict else InspectedSettings
    return kind(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


def webauthn_problems(settings: Settings) -> list[tuple[str, str]]:
    return [(p.level, p.message) for p in find_problems(settings) if "WEBAUTHN" in p.setting]


def test_passkey_settings_follow_the_public_url() -> None:
    settings = production()
    assert settings.webauthn_rp_id == "app.example.com"
    assert settings.webauthn_origins == ["https://app.example.com"]
    assert settings.webauthn_rp_name == "authkeep"
    assert webauthn_problems(settings) == []
    local = Settings(_env_file=None, env="test")  # type: ignore[call-arg]
    assert (local.webauthn_rp_id, local.webauthn_origins) == ("localhost", [ORIGIN])


def test_production_refuses_an_http_origin_and_a_foreign_host() -> None:
    [(level, message)] = webauthn_problems(
        production(webauthn_origins='["http://app.example.com"]')
    )
    assert level == "production"
    assert "http://app.example.com" in message
    [(level, message)] = webauthn_problems(
        production(webauthn_rp_id="example.com", webauthn_origins="https://evil.example")
    )
    assert level == "refuse"
    assert "neither AUTHKEEP_WEBAUTHN_RP_ID" in message
    subdomain = production(
        webauthn_rp_id="example.com", webauthn_origins="https://App.Example.com:443/"
    )
    assert subdomain.webauthn_origins == ["https://app.example.com"]
    assert webauthn_problems(subdomain) == []
    with pytest.raises(ValidationError, match="AUTHKEEP_WEBAUTHN_ORIGINS lists http://"):
        production(strict=True, webauthn_origins="http://app.example.com")
    assert production(strict=True).webauthn_origins == ["https://app.example.com"]
    for bad in ("https://example.com", "example.com:443", "10.0.0.1", ""):
        with pytest.raises(ValidationError, match="AUTHKEEP_WEBAUTHN_RP_ID"):
            Settings(_env_file=None, env="test", webauthn_rp_id=bad)  # type: ignore[call-arg]
