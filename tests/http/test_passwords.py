"""Passwords over HTTP: the policy at registration, what is stored, the legacy bcrypt upgrade,
and hashing that neither blocks the event loop nor queues without bound."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from authkeep import Settings, create_app
from authkeep.db import users as user_rows
from authkeep.security.emails import email_key, normalize_email
from conftest import PRODUCTION_HASHING
from helpers import (
    PASSWORD,
    authkeep_of,
    bearer,
    client_for,
    login,
    passlib_bcrypt_hash,
    register,
    running,
)

REGISTER = "/api/v1/auth/register"


async def stored_hash(app: FastAPI, user_id: str) -> str:
    """The password hash in the database."""
    async with authkeep_of(app).services.db.reading() as conn:
        hashed = await user_rows.get_password_hash(conn, uuid.UUID(user_id))
    assert hashed is not None
    return hashed


async def insert_legacy_user(app: FastAPI, email: str, hashed: str) -> str:
    """A user row as an older app left it: a bcrypt hash written by passlib."""
    stored = normalize_email(email)
    services = authkeep_of(app).services
    async with services.db.transaction() as conn:
        user = await user_rows.insert_user(
            conn,
            services.envelope,
            email=stored,
            email_key=email_key(stored),
            hashed_password=hashed,
            full_name=None,
        )
    return str(user.id)


@pytest.fixture
async def shipped_app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    """An app with the shipped argon2id cost (the test settings default to a cheap one)."""
    application = create_app(make_settings(**PRODUCTION_HASHING))
    async with running(application):
        yield application


@pytest.fixture
async def shipped_client(shipped_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for :func:`shipped_app`."""
    async with client_for(shipped_app) as http:
        yield http


async def test_registration_stores_an_argon2id_hash_with_owasp_parameters(
    shipped_client: httpx.AsyncClient, shipped_app: FastAPI
) -> None:
    user = await register(shipped_client)
    assert "hashed_password" not in user
    assert (await stored_hash(shipped_app, user["id"])).startswith(
        "$argon2id$v=19$m=19456,t=2,p=1$"
    )


REJECTED = [
    ("Sh0rt!x", "at least 8 characters"),
    ("x" * 1025, "at most 1024"),
    ("Password123", "too common"),
    ("iloveyou", "too common"),
    ("carol@example.com", "must not contain your email"),
    ("CAROL@example.com", "must not contain your email"),
    ("carol", None),  # too short and the local part: either reason will do
    ("carol@example.com!", "must not contain your email"),
    ("xx carol@example.com xx", "must not contain your email"),
    ("violet CAROL lanterns", "must not contain your email"),  # the local part inside
    ("van Houten bakes violet pies", "must not contain your name"),
    ("my authkeep pass 2024", "name of this service"),
    ("aaaaaaaaaaaaaaaa", "too easy to guess"),
]


async def test_the_policy_is_applied_and_never_echoes_the_password(
    client: httpx.AsyncClient,
) -> None:
    for password, reason in REJECTED:
        response = await client.post(
            REGISTER,
            json={"email": "carol@example.com", "password": password, "full_name": "Carol Houten"},
        )
        assert response.status_code == 422, password
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["body", "password"], detail
        if reason is not None:
            assert reason in detail[0]["msg"], detail
        assert password not in response.text
        assert all(password not in value for value in response.headers.values())
    # None of them made an account; a long all-lower-case passphrase does.
    accepted = await client.post(
        REGISTER,
        json={"email": "carol@example.com", "password": "purple monkey dishwasher in spring"},
    )
    assert accepted.status_code == 202


async def test_a_1024_character_password_works(client: httpx.AsyncClient) -> None:
    password = "long passphrase " * 64
    assert len(password) == 1024
    await register(client, password=password)
    await login(client, password=password)


async def test_a_passlib_bcrypt_hash_logs_in_and_is_upgraded(
    shipped_client: httpx.AsyncClient, shipped_app: FastAPI
) -> None:
    client, app = shipped_client, shipped_app
    legacy = passlib_bcrypt_hash(PASSWORD)
    user_id = await insert_legacy_user(app, "legacy@example.com", legacy)

    wrong = await client.post(
        "/api/v1/auth/login", json={"email": "legacy@example.com", "password": "not it at all"}
    )
    assert wrong.status_code == 401
    assert await stored_hash(app, user_id) == legacy  # a wrong password upgrades nothing

    pair = await login(client, "legacy@example.com")
    assert pair["user"]["id"] == user_id
    upgraded = await stored_hash(app, user_id)
    assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")

    # The new hash is the one that works from now on.
    await login(client, "legacy@example.com")
    assert await stored_hash(app, user_id) == upgraded
    me = await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200


async def test_a_long_legacy_password_is_upgraded_in_full(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # passlib silently used the first 72 bytes; after the upgrade every character counts.
    password = "a passphrase far longer than the seventy-two bytes that bcrypt ever looked at"
    assert len(password.encode()) > 72
    user_id = await insert_legacy_user(app, "long@example.com", passlib_bcrypt_hash(password))
    await login(client, "long@example.com", password)
    assert (await stored_hash(app, user_id)).startswith("$argon2id$")
    truncated = await client.post(
        "/api/v1/auth/login",
        json={"email": "long@example.com", "password": password.encode()[:72].decode()},
    )
    assert truncated.status_code == 401


class Gate:
    """Holds every argon2 hash of an app in its worker thread until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, app: FastAPI) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.threads: list[str] = []
        argon2 = authkeep_of(app).services.hasher._argon2
        real = argon2.hash

        def gated(password: Any, **kwargs: Any) -> str:
            self.threads.append(threading.current_thread().name)
            self.entered.release()
            # A deadlock guard, not a timing assertion: the test opens the gate itself.
            if not self.release.wait(30):
                raise RuntimeError("the gate was never opened")
            return str(real(password, **kwargs))

        monkeypatch.setattr(argon2, "hash", gated)

    async def wait_entered(self) -> None:
        """Until one more hash is inside the gate."""
        assert await asyncio.to_thread(self.entered.acquire, True, 30)


async def test_the_loop_keeps_serving_while_passwords_hash(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch, app)
    try:
        registering = asyncio.create_task(
            client.post(REGISTER, json={"email": "slow@example.com", "password": PASSWORD})
        )
        await gate.wait_entered()
        # A hash is in progress and cannot finish until we open the gate: if it ran on the
        # event loop, this request could not be answered.
        health = await client.get("/health")
        assert health.status_code == 200
        assert not registering.done()
        gate.release.set()
        assert (await registering).status_code == 202
    finally:
        gate.release.set()
    assert gate.threads
    assert all(name.startswith("authkeep-hash") for name in gate.threads), gate.threads


async def test_a_full_hashing_queue_answers_503_with_retry_after(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings(hash_workers=1, hash_queue_limit=1))
    async with running(app), client_for(app) as http:
        hasher = authkeep_of(app).services.hasher
        gate = Gate(monkeypatch, app)
        try:
            first = asyncio.create_task(
                http.post(REGISTER, json={"email": "one@example.com", "password": PASSWORD})
            )
            await gate.wait_entered()
            second = asyncio.create_task(
                http.post(REGISTER, json={"email": "two@example.com", "password": PASSWORD})
            )
            for _ in range(10_000):  # until the second waits for the one worker
                if hasher._pool._slots.locked():
                    break
                await asyncio.sleep(0)
            assert hasher._pool._slots.locked()

            for response in (
                await http.post(
                    REGISTER, json={"email": "three@example.com", "password": PASSWORD}
                ),
                await http.post(
                    "/api/v1/auth/login", json={"email": "one@example.com", "password": PASSWORD}
                ),
            ):
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
                assert response.json() == {"detail": "Server busy, retry shortly"}
            assert (await http.get("/health")).status_code == 200

            gate.release.set()
            assert [(await first).status_code, (await second).status_code] == [202, 202]
        finally:
            gate.release.set()
        # The queue drained: the refused user can register now.
        await register(http, "three@example.com")
