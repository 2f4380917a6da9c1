"""Accounts' personal data at rest (docs/privacy.md, "Encryption at rest"): what the
database owner reads is ciphertext and blind indexes, while the API shows plaintext — on
SQLite and PostgreSQL + Redis.

Tables: ``users`` (email, full_name, email_key), ``account_tokens.email``,
``invitations`` (email, email_key) and ``auth_sessions`` (ip, user_agent).
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from account_helpers import drained, mail_app, token_in
from authkeep import Settings, create_app
from authkeep.db import sessions as session_rows
from authkeep.errors import Conflict
from conftest import Backend
from helpers import (
    PASSWORD,
    TEST_DATA_KEY,
    app_of,
    authkeep_of,
    bearer,
    client_for,
    login,
    mark_verified,
    register,
    running,
)
from mail_helpers import SmtpSink
from org_helpers import ORGS, Person, create_org

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
SESSIONS = "/api/v1/auth/sessions"
CLIENT_IP = "198.51.100.23"
AGENT = "PrivacyProbe/9.1 (rare-agent-marker)"
# Every personal datum the tests send: none may appear in a stored row.
ALICE = "alice.cleartext@example.com"
ALICE_NAME = "Alice Unmistakablename"
NEW_ADDRESS = "alice.moved.cleartext@example.net"
INVITEE = "invitee.cleartext@example.org"
CLEAR = ("cleartext", "unmistakablename", CLIENT_IP, "rare-agent-marker", "privacyprobe")
MY_TABLES = ("users", "account_tokens", "invitations", "auth_sessions")
SECOND_KEY = "test-dk2:" + "B" * 43


def row_id(value: object) -> uuid.UUID:
    """An id column's value as read through plain SQL (SQLite keeps 32 hex digits)."""
    return uuid.UUID(str(value))


async def owner_execute(backend: Backend, sql: str, **params: Any) -> list[Any]:
    """``sql`` as the database owner (a DBA, or a stolen dump, sees this); UUID parameters
    as each backend stores them."""
    assert backend.owner_url is not None
    if not backend.is_postgres:
        params = {k: v.hex if isinstance(v, uuid.UUID) else v for k, v in params.items()}
    engine = create_async_engine(backend.owner_url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def stored_text(backend: Backend) -> str:
    """Every value of the four tables, as one lower-cased text."""
    values = []
    for table in MY_TABLES:
        for row in await owner_execute(backend, f"SELECT * FROM {table}"):
            values.extend(str(value) for value in row)
    return "\n".join(values).lower()


async def test_personal_data_is_ciphertext_at_rest_and_plaintext_in_the_api(
    make_settings: Callable[..., Settings], smtp_server: SmtpSink, backend: Backend
) -> None:
    agent = {"User-Agent": AGENT}
    async with mail_app(make_settings, smtp=smtp_server, peer=(CLIENT_IP, 41000)) as m:
        body = {"email": ALICE, "password": PASSWORD, "full_name": ALICE_NAME}
        assert (await m.http.post("/api/v1/auth/register", json=body)).status_code == 202
        await mark_verified(m.app, ALICE)
        creds = {"email": ALICE, "password": PASSWORD}
        pair = (await m.http.post(LOGIN, json=creds, headers=agent)).json()
        alice = Person(ALICE, uuid.UUID(pair["user"]["id"]), pair["access_token"], "")
        org_id = await create_org(m.http, alice)
        auth = alice.auth
        invited = await m.http.post(
            f"{ORGS}/{org_id}/invitations", json={"email": INVITEE, "role": "viewer"}, headers=auth
        )
        assert invited.status_code == 202, invited.text
        change = {"new_email": NEW_ADDRESS, "password": PASSWORD}
        asked = await m.http.post("/api/v1/auth/email/change", json=change, headers=auth)
        assert asked.status_code == 202, asked.text
        forgot = await m.http.post("/api/v1/auth/password/forgot", json={"email": ALICE})
        assert forgot.status_code == 202
        reset_token = token_in(await m.mail_to(ALICE, "Reset your"))
        confirm_token = token_in(await m.mail_to(NEW_ADDRESS, "Confirm your new email"))

        # The owner's view: ciphertext, blind indexes, no address, name, IP or user agent.
        stored = await stored_text(backend)
        assert [word for word in CLEAR if word.lower() in stored] == []
        [(email, email_key, full_name)] = await owner_execute(
            backend, "SELECT email, email_key, full_name FROM users"
        )
        assert email.startswith("uk1.")
        assert full_name.startswith("uk1.")
        assert email_key.startswith("bi.")
        [(sealed_invitee, invitee_key)] = await owner_execute(
            backend, "SELECT email, email_key FROM invitations"
        )
        assert not sealed_invitee.startswith("uk1.")  # master ring: the invitee has no account
        assert invitee_key.startswith("bi.")
        assert len(await owner_execute(backend, "SELECT user_id FROM user_keys")) == 1

        # The API's view: plaintext.
        me = (await m.http.get(ME, headers=auth)).json()
        assert (me["email"], me["full_name"]) == (ALICE, ALICE_NAME)
        [session] = (await m.http.get(SESSIONS, headers=auth)).json()
        assert (session["ip"], session["user_agent"]) == (CLIENT_IP, AGENT)
        [pending] = (await m.http.get(f"{ORGS}/{org_id}/invitations", headers=auth)).json()
        assert pending["email"] == INVITEE

        # The sealed token addresses still work: the change and the reset.
        confirmed = await m.http.post("/api/v1/auth/email/confirm", json={"token": confirm_token})
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["email"] == NEW_ADDRESS
        reset = {"token": reset_token, "new_password": PASSWORD + " again"}
        # The change voided the reset link mailed to the old address.
        assert (await m.http.post("/api/v1/auth/password/reset", json=reset)).status_code == 400
        await m.http.post("/api/v1/auth/password/forgot", json={"email": NEW_ADDRESS})
        reset["token"] = token_in(await m.mail_to(NEW_ADDRESS, "Reset your"))
        assert (await m.http.post("/api/v1/auth/password/reset", json=reset)).status_code == 204
        relogin = {"email": NEW_ADDRESS, "password": reset["new_password"]}
        assert (await m.http.post(LOGIN, json=relogin, headers=agent)).status_code == 200

        stored = await stored_text(backend)
        assert [word for word in CLEAR if word.lower() in stored] == []


async def test_look_ups_fold_case_and_unicode(client: httpx.AsyncClient) -> None:
    # Stored as typed (NFC); found by the blind index of the folded form: "ß" folds to
    # "ss", letter case and a decomposed "Ü" do not matter.
    await register(client, "Straße.Ünal@Example.com")
    for variant in ("strasse.ünal@example.com", "STRASSE.U\u0308NAL@EXAMPLE.COM"):
        pair = await login(client, variant)
        assert pair["user"]["email"] == "Straße.Ünal@example.com"
    again = {"email": "STRASSE.ünal@example.COM", "password": PASSWORD}
    assert (await client.post("/api/v1/auth/register", json=again)).status_code == 202
    services = authkeep_of(app_of(client)).services
    async with services.db.reading() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one()
    assert count == 1


async def test_a_sealed_value_copied_into_another_row_does_not_open(
    app: FastAPI, client: httpx.AsyncClient, backend: Backend, log_output: io.StringIO
) -> None:
    services = authkeep_of(app).services
    root = await services.accounts.register(
        email="root@example.com", password=PASSWORD, is_superuser=True, email_verified=True
    )
    alice = await register(client, "alice@example.com", verified=True)
    bob = await register(client, "bob@example.com", verified=True)
    bobs = bearer((await login(client, "bob@example.com"))["access_token"])
    await login(client, "bob@example.com")
    # Someone with write access to the database (not to the keys) gives Bob Alice's sealed
    # address, and one of Bob's sessions the other's sealed IP address.
    await owner_execute(
        backend,
        "UPDATE users SET email = (SELECT email FROM users WHERE id = :alice) WHERE id = :bob",
        alice=uuid.UUID(alice["id"]),
        bob=uuid.UUID(bob["id"]),
    )
    first, second = await owner_execute(
        backend, "SELECT id, ip FROM auth_sessions WHERE user_id = :bob", bob=uuid.UUID(bob["id"])
    )
    await owner_execute(
        backend, "UPDATE auth_sessions SET ip = :ip WHERE id = :id", ip=first[1], id=second[0]
    )
    await services.revocations.users_changed([bob["id"]])

    # Bob's account no longer authenticates (401, as for a wrong password: no 500, and no
    # token that would carry no address); Alice's is untouched.
    assert (await client.get(ME, headers=bobs)).status_code == 401
    refused = await client.post(LOGIN, json={"email": "bob@example.com", "password": PASSWORD})
    assert (refused.status_code, refused.json()) == (
        401,
        {"detail": "Incorrect email or password"},
    )
    assert (await login(client, "alice@example.com"))["user"]["email"] == "alice@example.com"

    # An admin still sees the account, its address unreadable (""), to repair or delete it.
    admin = bearer((await login(client, root.email))["access_token"])
    listed = await client.get("/api/v1/admin/users", params={"q": bob["id"]}, headers=admin)
    assert listed.status_code == 200, listed.text
    assert [u["email"] for u in listed.json()["items"]] == [""]
    # The copied IP address reads as unknown; the session's own still opens.
    sessions = (row_id(first[0]), row_id(second[0]))
    async with services.db.reading() as conn:
        found = [await session_rows.get_session(conn, services.envelope, s) for s in sessions]
    assert [(r.id, r.ip) for r in found if r is not None] == [
        (sessions[0], "203.0.113.7"),
        (sessions[1], None),
    ]

    logged = [json.loads(line) for line in log_output.getvalue().splitlines()]
    unreadable = {
        (entry["table"], entry["column"], entry["row_id"])
        for entry in logged
        if entry.get("event") == "sealed_value_unreadable"
    }
    assert ("users", "email", bob["id"]) in unreadable
    assert ("auth_sessions", "ip", str(sessions[1])) in unreadable
    assert "alice@example.com" not in log_output.getvalue()


async def test_two_registrations_of_one_address_make_one_account(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    accounts = authkeep_of(app).services.accounts
    results = await asyncio.gather(
        accounts.register(email="race@example.com", password=PASSWORD),
        accounts.register(email="RACE@Example.com", password=PASSWORD),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "UserRecord"]
    # The public sign-up answers 202 either way (it must not tell), and adds no account.
    answers = await asyncio.gather(
        *(
            client.post("/api/v1/auth/register", json={"email": e, "password": PASSWORD})
            for e in ("race@example.com", "Race@example.com")
        )
    )
    assert [a.status_code for a in answers] == [202, 202]
    services = authkeep_of(app).services
    async with services.db.reading() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one()
    assert count == 1


async def test_a_new_data_key_still_finds_accounts_indexed_under_the_old_one(
    make_settings: Callable[..., Settings], backend: Backend
) -> None:
    old = create_app(make_settings(data_keys=[TEST_DATA_KEY]))
    async with running(old), client_for(old) as http:
        await register(http, "kept@example.com")
    # The new key first: it seals and indexes what is written from now on.
    new = create_app(make_settings(data_keys=[SECOND_KEY, TEST_DATA_KEY]))
    async with running(new), client_for(new) as http:
        pair = await login(http, "Kept@example.com")
        assert pair["user"]["email"] == "kept@example.com"
        me = await http.get(ME, headers=bearer(pair["access_token"]))
        assert me.json()["email"] == "kept@example.com"
        # Still taken, though the unique index only compares the newest key's indexes.
        with pytest.raises(Conflict):
            await authkeep_of(new).services.accounts.register(
                email="KEPT@example.com", password=PASSWORD
            )
        await register(http, "fresh@example.com")
    stored = await owner_execute(backend, "SELECT email_key FROM users")
    assert sorted(key.split(".")[1] for (key,) in stored) == ["test-dk", "test-dk2"]


async def test_login_and_the_authenticated_read_stay_one_query_for_the_user(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    # The user key comes with the user row (a join), and a session's IP address is sealed
    # with the key the login just unwrapped: encryption adds no statement to either path,
    # even with the key not remembered (a fresh worker).
    services = authkeep_of(app).services
    user = await register(client, "reader@example.com")
    await drained(app)  # the sign-up's mail, looked up by the outbox worker, is done
    services.envelope.forget(uuid.UUID(user["id"]))
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(" ".join(statement.split()))

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        pair = await login(client, "reader@example.com")
        login_statements = list(seen)
        seen.clear()
        # Past the per-worker user cache: the read goes to the database.
        await services.revocations.users_changed([user["id"]])
        me = await client.get(ME, headers=bearer(pair["access_token"]))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert me.json()["email"] == "reader@example.com"
    for statements in (login_statements, seen):
        reads = [s for s in statements if "FROM users" in s]
        assert len(reads) == 1, reads
        assert "LEFT OUTER JOIN user_keys" in reads[0]
        assert [s for s in statements if "user_keys" in s] == reads
