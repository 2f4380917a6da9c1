"""``GET /api/v1/auth/me/export``: everything held about the caller, as one signed document.

After a realistic history (two sign-ins from two addresses, an organization, an API key,
consents, an authenticator app, a passkey, an invitation, an audit row someone else wrote) the
document has every section with the right data and nothing of another user's; it verifies
with the service's keys, with PyJWKClient against the JWKS when they are asymmetric, and not
once altered; it is never an access token (nor the reverse); it needs a recent sign-in; it is
rate-limited per user and audited. On SQLite and PostgreSQL (+ Redis) where a database is
involved; the signature tests run on SQLite alone (keys are not a database matter).
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
import pytest
import time_machine

from audit_helpers import app_rows
from authkeep import Settings
from authkeep.errors import InvalidToken
from authkeep.security.keys import generate_key
from authkeep.security.signed_documents import (
    EXPORT_TYPE,
    InvalidSignedDocument,
    document_digest,
    sign_document,
    verify_document,
)
from authkeep.security.tokens import MAX_TOKEN_BYTES
from authkeep.services.audit import Action, Actor, AuditEvent
from authkeep.services.context import RequestInfo
from authkeep.services.privacy import export as export_module
from conftest import TEST_SECRET
from helpers import PASSWORD, PEER, app_of, bearer, client_for, login, mark_verified, register
from mfa_helpers import first_step, second_step
from org_helpers import Person, create_org, invite, join, switch
from org_helpers import sign_up as org_sign_up
from session_helpers import services, started
from step_up_helpers import MAX_AGE, START, challenge, code_at, enrol_totp, step_up
from webauthn_authenticator import SoftAuthenticator

EXPORT = "/api/v1/auth/me/export"
REGISTER = "/api/v1/auth/register"
CONSENTS = "/api/v1/auth/me/consents"
KEYS = "/api/v1/api-keys"
PASSKEYS = "/api/v1/auth/webauthn"
ORIGIN = "http://localhost:8000"
PURPOSES: dict[str, Any] = {
    "terms": {"version": "2026-11", "required": True},
    "marketing": {"version": "1"},
}
ALICE, BOB = "alice@example.com", "bob@example.com"
LAPTOP_IP, PHONE_IP, BOB_IP, ADMIN_IP = PEER[0], "198.51.100.20", "192.0.2.99", "192.0.2.250"
LAPTOP_UA, PHONE_UA, BOB_UA = "AliceLaptop/1.0", "AlicePhone/2.0", "BobBrowser/9.9"
Alg = Literal["EdDSA", "RS256"]


async def export(http: httpx.AsyncClient, access: str) -> httpx.Response:
    return await http.get(EXPORT, headers=bearer(access))


async def sign_up(
    http: httpx.AsyncClient, email: str, full_name: str, agent: str, **consents: str
) -> dict[str, Any]:
    """Register (with ``consents``), verify the address, sign in: the token pair."""
    response = await http.post(
        REGISTER,
        json={"email": email, "password": PASSWORD, "full_name": full_name, "consents": consents},
        headers={"User-Agent": agent},
    )
    assert response.status_code == 202, response.text
    await mark_verified(app_of(http), email)
    signed_in = await http.post(
        "/api/v1/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"User-Agent": agent},
    )
    assert signed_in.status_code == 200, signed_in.text
    return dict(signed_in.json())


async def new_key(http: httpx.AsyncClient, person: Person, name: str) -> dict[str, Any]:
    created = await http.post(KEYS, json={"name": name, "role": "viewer"}, headers=person.auth)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def enrol_passkey(http: httpx.AsyncClient, access: str, name: str) -> dict[str, Any]:
    options = await http.post(f"{PASSKEYS}/register/options", headers=bearer(access))
    assert options.status_code == 200, options.text
    credential = SoftAuthenticator().create(options.json(), ORIGIN)
    stored = await http.post(
        f"{PASSKEYS}/register/verify",
        json={"credential": credential, "name": name},
        headers=bearer(access),
    )
    assert stored.status_code == 201, stored.text
    return dict(stored.json())


def payload_of(token: str) -> bytes:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def with_payload(token: str, payload: bytes) -> str:
    header, _, signature = token.split(".")
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{header}.{body}.{signature}"


async def test_the_export_holds_every_section_and_nothing_of_anyone_else(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        settings = make_settings(consent_purposes=PURPOSES)
        async with started(settings) as (app, laptop), client_for(app, (PHONE_IP, 41000)) as phone:
            async with client_for(app, (BOB_IP, 42000)) as bobs:
                # Bob: another user with an organization, a key and a session of his own.
                bob_pair = await sign_up(bobs, BOB, "Bob Builder", BOB_UA, terms="2026-11")
                bob = Person(BOB, uuid.UUID(bob_pair["user"]["id"]), bob_pair["access_token"], "")
                bob_org = await create_org(bobs, bob, "Bob Co")
                bob_key = await new_key(bobs, bob, "bob-key")
                bob_sessions = [
                    str(s["id"])
                    for s in (await bobs.get("/api/v1/auth/sessions", headers=bob.auth)).json()
                ]

                # Alice: the caller.
                pair = await sign_up(
                    laptop, ALICE, "Alice Liddell", LAPTOP_UA, terms="2026-11", marketing="1"
                )
                alice = Person(ALICE, uuid.UUID(pair["user"]["id"]), pair["access_token"], "")
                org = await create_org(laptop, alice, "Wonderland")
                key = await new_key(laptop, alice, "deploy-bot")
                withdrawn = await laptop.put(
                    f"{CONSENTS}/marketing",
                    json={"granted": False, "version": "1"},
                    headers=alice.auth,
                )
                assert withdrawn.status_code == 200, withdrawn.text
                invited = await invite(bobs, bob, bob_org, ALICE, "editor")
                assert invited.status_code == 202, invited.text
                secret = await enrol_totp(laptop, alice.access, START)
                clock.shift(timedelta(seconds=30))
                stepped = await step_up(
                    laptop, alice.access, code=code_at(secret, START + timedelta(seconds=30))
                )
                assert stepped.status_code == 200, stepped.text
                passkey = await enrol_passkey(laptop, stepped.json()["access_token"], "Yubi")
                # A row someone else (a platform admin, say) wrote about Alice.
                await services(app).audit.record_alone(
                    AuditEvent(
                        Action.USER_ACTIVATED,
                        actor=Actor(bob.user_id),
                        entity_type="user",
                        entity_id=alice.user_id,
                    ),
                    RequestInfo(ip=ADMIN_IP, request_id="request-of-someone-else"),
                )

                # A second session, on the phone: both factors.
                clock.shift(timedelta(seconds=30))
                phone.headers["User-Agent"] = PHONE_UA
                pending = await first_step(phone, ALICE)
                on_phone = await second_step(
                    phone,
                    pending["mfa_token"],
                    code=code_at(secret, START + timedelta(seconds=60)),
                )
                assert on_phone.status_code == 200, on_phone.text
                response = await export(phone, on_phone.json()["access_token"])

            assert response.status_code == 200, response.text
            assert response.headers["cache-control"] == "no-store"
            body = response.json()
            document = body["document"]
            keys = app.state.authkeep.keys
            assert verify_document(body["jws"], keys, typ=EXPORT_TYPE) == document

            assert document["format"] == "authkeep-export/1"
            assert document["issuer"] == settings.jwt_issuer
            assert document["subject"] == str(alice.user_id)
            assert document["exported_at"] == (START + timedelta(seconds=60)).isoformat().replace(
                "+00:00", "Z"
            )
            profile = document["profile"]
            assert (profile["id"], profile["email"], profile["full_name"]) == (
                str(alice.user_id),
                ALICE,
                "Alice Liddell",
            )
            assert profile["mfa_enabled"] is True
            assert profile["is_platform_admin"] is False
            assert profile["email_verified_at"] is not None

            assert document["memberships"] == [
                {
                    "org_id": str(org),
                    "org_name": "Wonderland",
                    "role": "admin",
                    "org_requires_mfa": False,
                }
            ]
            [invitation] = document["invitations"]
            assert (invitation["org_id"], invitation["org_name"], invitation["role"]) == (
                str(bob_org),
                "Bob Co",
                "editor",
            )

            sessions = document["sessions"]
            assert sessions["truncated"] is False
            seen = {(s["ip"], s["user_agent"], s["current"]) for s in sessions["items"]}
            assert seen == {(LAPTOP_IP, LAPTOP_UA, False), (PHONE_IP, PHONE_UA, True)}
            for item in sessions["items"]:
                # The laptop's session stepped up with the code; the phone signed in with both.
                assert item["amr"] == ["pwd", "otp"]
                assert item["revoked_at"] is None
                assert item["created_at"] is not None
                assert item["last_used_at"] is not None

            [api_key] = document["api_keys"]
            assert (api_key["id"], api_key["name"], api_key["org_id"], api_key["prefix"]) == (
                key["id"],
                "deploy-bot",
                str(org),
                key["prefix"],
            )
            assert set(api_key) == {
                "id",
                "org_id",
                "name",
                "prefix",
                "role",
                "created_at",
                "expires_at",
                "last_used_at",
                "revoked_at",
            }

            consents = {c["purpose"]: c for c in document["consents"]}
            assert consents["terms"] == {
                "purpose": "terms",
                "granted": True,
                "version": "2026-11",
                "at": consents["terms"]["at"],
                "current_version": "2026-11",
                "required": True,
                "outstanding": False,
            }
            assert (consents["marketing"]["granted"], consents["marketing"]["version"]) == (
                False,
                "1",
            )

            mfa = document["mfa"]
            assert mfa["totp"]["confirmed_at"] is not None
            assert mfa["recovery_codes_left"] == 10
            [stored_passkey] = mfa["passkeys"]
            assert (stored_passkey["id"], stored_passkey["name"]) == (passkey["id"], "Yubi")

            audit = document["audit"]
            assert audit["truncated"] is False
            actions = {event["action"] for event in audit["events"]}
            assert {
                "user.registered",
                "consent.granted",
                "consent.withdrawn",
                "auth.login",
                "org.created",
                "api_key.created",
                "mfa.totp_enrolled",
                "auth.step_up",
                "mfa.passkey_registered",
                "user.activated",
            } <= actions
            logins = [e for e in audit["events"] if e["action"] == "auth.login"]
            assert {e["ip"] for e in logins} == {LAPTOP_IP, PHONE_IP}
            assert all(e["actor"] == "you" for e in logins)
            [by_other] = [e for e in audit["events"] if e["action"] == "user.activated"]
            assert by_other["actor"] == "someone_else"
            assert (by_other["ip"], by_other["request_id"]) == (None, None)
            assert by_other["entity_id"] == str(alice.user_id)
            # The chains' heads at export time: each at or after every event of its chain,
            # and the hash of that row.
            stored = {row.id: row for row in await app_rows(app)}
            heads = {chain["chain"]: chain for chain in audit["chains"]}
            assert set(heads) == {"platform", str(org)}
            for event in audit["events"]:
                assert stored[event["seq"]].hash == event["hash"]
                assert heads[event["chain"]]["seq"] >= event["seq"]
            for head in heads.values():
                assert stored[head["seq"]].hash == head["hash"]

            # Nothing of Bob's, no secret of Alice's.
            text = json.dumps(document) + payload_of(body["jws"]).decode()
            for foreign in (
                BOB,
                "Bob Builder",
                str(bob.user_id),
                BOB_IP,
                BOB_UA,
                ADMIN_IP,
                "request-of-someone-else",
                bob_key["id"],
                "bob-key",
                *bob_sessions,
            ):
                assert foreign not in text, foreign
            for secret_value in (PASSWORD, secret, key["key"]):
                assert secret_value not in response.text

            # Audited, with the digest of exactly what was signed.
            [row] = await app_rows(app, "user.exported")
            assert row.actor_user_id == alice.user_id
            assert row.details["sha256"] == document_digest(document)
            assert row.details["export_id"] == document["export_id"]


async def test_keys_made_in_an_organization_since_left_are_still_exported(
    make_settings: Callable[..., Settings],
) -> None:
    async with started(make_settings()) as (_app, http):
        bob = await org_sign_up(http, BOB)
        org = await create_org(http, bob, "Bob Co")
        alice = await org_sign_up(http, ALICE)
        await join(http, bob.auth, org, alice, "admin")
        await switch(http, alice, org)
        key = await new_key(http, alice, "left-behind")
        removed = await http.delete(f"/api/v1/orgs/{org}/members/{alice.user_id}", headers=bob.auth)
        assert removed.status_code == 204, removed.text

        document = (await export(http, alice.access)).json()["document"]
    assert document["memberships"] == []
    # The key's row lives in Bob's organization (row-level security on PostgreSQL): found
    # through the audit chain that recorded its creation.
    [exported] = document["api_keys"]
    assert (exported["id"], exported["org_id"]) == (key["id"], str(org))


async def test_a_recent_sign_in_is_required(make_settings: Callable[..., Settings]) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (app, http):
            await register(http)
            pair = await login(http)
            assert (await http.get(EXPORT)).status_code == 401

            clock.shift(timedelta(seconds=MAX_AGE + 1))
            stale = await export(http, pair["access_token"])
            assert stale.status_code == 401
            assert stale.headers["www-authenticate"] == challenge()
            assert await app_rows(app, "user.exported") == []

            stepped = await step_up(http, pair["access_token"], password=PASSWORD)
            assert (await export(http, stepped.json()["access_token"])).status_code == 200


async def test_an_api_key_gets_403(make_settings: Callable[..., Settings]) -> None:
    async with started(make_settings()) as (_app, http):
        await register(http)
        pair = await login(http)
        person = Person(ALICE, uuid.UUID(pair["user"]["id"]), pair["access_token"], "")
        await create_org(http, person)
        key = await new_key(http, person, "robot")
        refused = await http.get(EXPORT, headers={"X-API-Key": key["key"]})
        assert refused.status_code == 403


async def test_429_with_retry_after_past_the_limit_and_refusals_spend_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings(export_rate_limit="2 per hour")) as (app, http):
            await register(http)
            pair = await login(http)
            assert (await export(http, pair["access_token"])).status_code == 200
            clock.shift(timedelta(seconds=MAX_AGE + 1))
            for _ in range(3):  # not recent: refused before the limit counts
                assert (await export(http, pair["access_token"])).status_code == 401
            fresh = (await step_up(http, pair["access_token"], password=PASSWORD)).json()
            assert (await export(http, fresh["access_token"])).status_code == 200

            limited = await export(http, fresh["access_token"])
            assert limited.status_code == 429
            assert limited.json() == {"detail": "Too many exports, try again later"}
            assert 0 < int(limited.headers["retry-after"]) <= 3600
            assert len(await app_rows(app, "user.exported")) == 2

            # Per user: another account still exports.
            await register(http, "carol@example.com")
            carol = await login(http, "carol@example.com")
            assert (await export(http, carol["access_token"])).status_code == 200


async def test_long_histories_are_cut_and_say_so(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "AUDIT_EVENTS_LIMIT", 3)
    monkeypatch.setattr(export_module, "SESSIONS_LIMIT", 2)
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (_app, http):
            await register(http)
            for _ in range(3):
                clock.shift(timedelta(seconds=1))
                pair = await login(http)
            document = (await export(http, pair["access_token"])).json()["document"]
    sessions, audit = document["sessions"], document["audit"]
    assert (sessions["truncated"], sessions["limit"], len(sessions["items"])) == (True, 2, 2)
    # Newest first: the exporting session is the newest.
    assert sessions["items"][0]["current"] is True
    assert (audit["truncated"], audit["limit"], len(audit["events"])) == (True, 3, 3)
    seqs = [event["seq"] for event in audit["events"]]
    assert seqs == sorted(seqs, reverse=True)


# -- the signature (keys are not a database matter: SQLite only) ---------------------------


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_template: Path) -> Callable[..., Settings]:
    """Settings on a fresh copy of the migrated SQLite database."""
    path = tmp_path / "authkeep.db"
    shutil.copy(sqlite_template, path)

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "secret_key": TEST_SECRET,
            "database_url": f"sqlite+aiosqlite:///{path}",
            "hash_workers": 1,
            "rate_limit_enabled": False,
            **overrides,
        }
        return Settings(**values)

    return build


@contextmanager
def published(jwks: bytes) -> Iterator[str]:
    """Serve ``jwks`` (the service's answer to ``/.well-known/jwks.json``) over real HTTP
    on a loopback port, for PyJWKClient: the URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def signed_export(settings: Settings) -> tuple[dict[str, Any], bytes, str]:
    """A new user's export body, the service's JWKS answer and an access token."""
    async with started(settings) as (_app, http):
        await register(http)
        access = (await login(http))["access_token"]
        body = (await export(http, access)).json()
        jwks = (await http.get("/.well-known/jwks.json")).content
    return dict(body), jwks, str(access)


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
async def test_anyone_verifies_the_export_with_pyjwkclient_and_not_once_altered(
    sqlite_settings: Callable[..., Settings], tmp_path: Path, alg: Alg
) -> None:
    kid = generate_key(tmp_path / "keys", alg).stem
    body, jwks, _ = await signed_export(sqlite_settings(jwt_keys_dir=tmp_path / "keys"))
    token = body["jws"]
    header = jwt.get_unverified_header(token)
    assert (header["typ"], header["alg"], header["kid"]) == (EXPORT_TYPE, alg, kid)

    with published(jwks) as url:
        client = jwt.PyJWKClient(url, cache_keys=False)
        key = client.get_signing_key_from_jwt(token)
        verified = jwt.decode(token, key.key, algorithms=[alg])
        assert verified == body["document"]

        # One changed datum in the signed payload: the signature no longer holds.
        altered = json.loads(payload_of(token))
        altered["profile"]["email"] = "mallory@example.com"
        forged = with_payload(token, json.dumps(altered, sort_keys=True).encode())
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(forged, client.get_signing_key_from_jwt(forged).key, algorithms=[alg])


async def test_the_service_verifies_its_exports_and_refuses_an_altered_one(
    sqlite_settings: Callable[..., Settings],
) -> None:
    # HS256 (the default): no JWKS, only the service can verify.
    settings = sqlite_settings()
    body, jwks, _ = await signed_export(settings)
    assert json.loads(jwks) == {"keys": []}
    from authkeep.wiring import build_key_ring

    keys = build_key_ring(settings)
    assert verify_document(body["jws"], keys, typ=EXPORT_TYPE) == body["document"]
    altered = json.loads(payload_of(body["jws"]))
    altered["mfa"]["recovery_codes_left"] = 10
    with pytest.raises(InvalidSignedDocument):
        verify_document(
            with_payload(body["jws"], json.dumps(altered).encode()), keys, typ=EXPORT_TYPE
        )


@pytest.mark.parametrize("keys_dir", [False, True], ids=["HS256", "EdDSA"])
async def test_an_export_is_never_a_token_nor_a_token_an_export(
    sqlite_settings: Callable[..., Settings], tmp_path: Path, keys_dir: bool
) -> None:
    if keys_dir:
        generate_key(tmp_path / "keys", "EdDSA")
    settings = sqlite_settings(jwt_keys_dir=tmp_path / "keys" if keys_dir else None)
    async with started(settings) as (app, http):
        await register(http)
        access = (await login(http))["access_token"]
        jws = (await export(http, access)).json()["jws"]
        codec = services(app).codec
        assert len(jws) < MAX_TOKEN_BYTES  # refused for what it is, not for its size
        # Same key, same service: still refused as a bearer token, at every door.
        with pytest.raises(InvalidToken):
            codec.decode_access(jws)
        with pytest.raises(InvalidToken):
            codec.decode_refresh(jws)
        assert (await http.get("/api/v1/auth/me", headers=bearer(jws))).status_code == 401
        refused = await http.post("/api/v1/auth/refresh", json={"refresh_token": jws})
        assert refused.status_code == 401
        # And a token is not an export.
        with pytest.raises(InvalidSignedDocument):
            verify_document(access, codec.keys, typ=EXPORT_TYPE)

        # The typ header alone keeps them apart: a document that carries every claim of an
        # access token (a user could choose much of an export's content) is still refused.
        claims = jwt.decode(access, options={"verify_signature": False})
        lookalike = sign_document(codec.keys, claims, typ=EXPORT_TYPE)
        with pytest.raises(InvalidToken):
            codec.decode_access(lookalike)
        assert verify_document(lookalike, codec.keys, typ=EXPORT_TYPE) == claims
