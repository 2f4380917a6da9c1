"""Login with MFA over HTTP: the ``mfa_token`` (no token before the second step, 5 minutes,
5 wrong codes, single use), the tokens it ends with, the OAuth2 password grant, the MFA rate
limits, recovery codes at login, and 20 concurrent submissions of one code. SQLite and
PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from audit_helpers import app_rows
from authkeep import Settings, create_app
from authkeep.db import outbox as outbox_rows
from helpers import (
    PASSWORD,
    app_of,
    authkeep_of,
    bearer,
    client_for,
    login,
    register,
    running,
)
from mfa_helpers import (
    CONFIRM,
    LOGIN,
    code,
    enrol,
    first_step,
    mfa_login,
    mid_step,
    second_step,
)
from session_helpers import claims_of, rows

TOKEN = "/api/v1/auth/token"


async def enrolled(
    http: httpx.AsyncClient, email: str = "alice@example.com"
) -> tuple[str, list[str]]:
    """A new user with a confirmed authenticator app: its secret and recovery codes."""
    await register(http, email)
    return await enrol(http, (await login(http, email))["access_token"])


def wrong(secret: str) -> str:
    """A six-digit code that no step within the skew window has."""
    taken = {code(secret, offset) for offset in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in taken)


async def test_no_token_before_the_second_step(client: httpx.AsyncClient) -> None:
    app = app_of(client)
    with mid_step():
        await enrolled(client)
        before = await rows(app, "SELECT id FROM auth_sessions")
        response = await client.post(
            LOGIN, json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"mfa_required", "mfa_token", "methods"}
        assert body["mfa_required"] is True
        assert body["methods"] == ["totp", "recovery_code"]
        assert response.headers["cache-control"] == "no-store"
        # The password step opened no session.
        assert await rows(app, "SELECT id FROM auth_sessions") == before
        # A wrong password is the usual answer: the second step is never offered for it.
        bad = await client.post(LOGIN, json={"email": "alice@example.com", "password": "nope"})
        assert bad.status_code == 401
        assert bad.json() == {"detail": "Incorrect email or password"}


async def test_the_second_step_gives_tokens_at_aal2(client: httpx.AsyncClient) -> None:
    app = app_of(client)
    with mid_step():
        secret, codes = await enrolled(client)
        pair = await mfa_login(client, code=code(secret, 1))
        assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
        assert pair["user"]["mfa_enabled"] is True
        claims = claims_of(pair["access_token"])
        assert claims["amr"] == ["pwd", "otp"]
        assert claims["acr"] == "aal2"
        me = await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        # A refresh keeps how the session was signed in.
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert claims_of(refreshed.json()["access_token"])["amr"] == ["pwd", "otp"]
        by_code = await mfa_login(client, recovery_code=codes[0].upper().replace("-", " "))
        assert claims_of(by_code["access_token"])["amr"] == ["pwd", "rc"]
        assert claims_of(by_code["access_token"])["acr"] == "aal2"
    logins = [r for r in await app_rows(app, "auth.login") if r.outcome == "success"]
    assert [r.details.get("method") for r in logins][-2:] == ["mfa", "mfa"]
    verified = await app_rows(app, "mfa.verify")
    assert [(r.outcome, r.details["method"]) for r in verified][-2:] == [
        ("success", "totp"),
        ("success", "recovery_code"),
    ]


async def test_the_mfa_token_expires_after_five_minutes(client: httpx.AsyncClient) -> None:
    with mid_step() as clock:
        secret, _ = await enrolled(client)
        pending = await first_step(client)
        clock.shift(timedelta(minutes=4, seconds=50))
        still = await second_step(client, pending["mfa_token"], code=code(secret))
        assert still.status_code == 200, still.text
        late = await first_step(client)
        clock.shift(timedelta(minutes=5, seconds=1))
        expired = await second_step(client, late["mfa_token"], code=code(secret))
        assert expired.status_code == 401
        assert "mfa_token" in expired.json()["detail"]


def verifications(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "authkeep_mfa_verifications_total", {"method": "totp", "outcome": outcome}
    )
    return value or 0.0


async def test_five_wrong_codes_kill_the_mfa_token(client: httpx.AsyncClient) -> None:
    app = app_of(client)
    failed_before = verifications("failure")
    with mid_step():
        secret, _ = await enrolled(client)
        pending = await first_step(client)
        for _ in range(5):
            refused = await second_step(client, pending["mfa_token"], code=wrong(secret))
            assert refused.status_code == 401
            assert refused.json() == {"detail": "Invalid code"}
        dead = await second_step(client, pending["mfa_token"], code=code(secret, 1))
        assert dead.status_code == 401
        assert "mfa_token" in dead.json()["detail"]
        # The code was not spent on the dead token: a new login takes it.
        assert (await mfa_login(client, code=code(secret, 1)))["access_token"]
    assert verifications("failure") == failed_before + 5
    failures = [r for r in await app_rows(app, "mfa.verify") if r.outcome == "failure"]
    assert [r.details["failures"] for r in failures] == [1, 2, 3, 4, 5]
    assert [r.details["dead"] for r in failures] == [False] * 4 + [True]


async def test_four_wrong_codes_leave_the_right_one_working(client: httpx.AsyncClient) -> None:
    with mid_step():
        secret, _ = await enrolled(client)
        pending = await first_step(client)
        for _ in range(4):
            assert (
                await second_step(client, pending["mfa_token"], code=wrong(secret))
            ).status_code == 401
        assert (await second_step(client, pending["mfa_token"], code=code(secret, 1))).is_success


async def test_an_mfa_token_finishes_one_login_only(client: httpx.AsyncClient) -> None:
    with mid_step():
        secret, codes = await enrolled(client)
        pending = await first_step(client)
        assert (await second_step(client, pending["mfa_token"], code=code(secret, 1))).is_success
        again = await second_step(client, pending["mfa_token"], recovery_code=codes[0])
        assert again.status_code == 401
        assert "mfa_token" in again.json()["detail"]
        forged = await second_step(client, "x" * 43, code=code(secret, 1))
        assert forged.status_code == 401


async def test_each_recovery_code_works_once_and_its_use_is_emailed(
    client: httpx.AsyncClient,
) -> None:
    app = app_of(client)
    with mid_step():
        _, codes = await enrolled(client)
        pair = await mfa_login(client, recovery_code=codes[3])
        assert pair["access_token"]
        pending = await first_step(client)
        spent = await second_step(client, pending["mfa_token"], recovery_code=codes[3])
        assert spent.status_code == 401
        assert codes[3] not in spent.text
        assert (await second_step(client, pending["mfa_token"], recovery_code=codes[4])).is_success
    # Payloads are sealed at rest, each bound to its row.
    mails = [
        outbox_rows.open_payload(
            authkeep_of(app).services.envelope,
            uuid.UUID(str(row["id"])),
            row["payload"] if isinstance(row["payload"], dict) else json.loads(row["payload"]),
        )
        for row in await rows(app, "SELECT id, payload FROM outbox")
    ]
    # One email per use (the worker may have sent it already and kept only the template).
    assert [m.get("template") for m in mails].count("recovery_code_used") == 2
    audited = await app_rows(app, "mfa.recovery_code_used")
    assert [r.details["remaining"] for r in audited] == [9, 8]


async def test_the_password_grant_answers_403_mfa_required(client: httpx.AsyncClient) -> None:
    with mid_step():
        secret, _ = await enrolled(client)
        response = await client.post(
            TOKEN,
            data={"grant_type": "password", "username": "alice@example.com", "password": PASSWORD},
        )
        assert response.status_code == 403
        body = response.json()
        assert set(body) == {"error", "error_description", "mfa_token", "methods"}
        assert body["error"] == "mfa_required"
        assert body["methods"] == ["totp", "recovery_code"]
        assert response.headers["cache-control"] == "no-store"
        assert "access_token" not in response.text
        done = await second_step(client, body["mfa_token"], code=code(secret, 1))
        assert claims_of(done.json()["access_token"])["acr"] == "aal2"
        # A wrong password is still RFC 6749's invalid_grant.
        bad = await client.post(
            TOKEN,
            data={"grant_type": "password", "username": "alice@example.com", "password": "no"},
        )
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid_grant"


@pytest.fixture
async def limited(make_settings: Callable[..., Settings]) -> Any:
    app = create_app(make_settings(mfa_rate_limit="3/minute"))
    async with running(app):
        yield app


async def test_the_mfa_limit_counts_per_user_across_addresses(limited: Any) -> None:
    async with (
        client_for(limited, ("198.51.100.1", 1000)) as one,
        client_for(limited, ("198.51.100.2", 1000)) as two,
    ):
        with mid_step():
            secret, _ = await enrolled(one)
            pending = await first_step(one)
            # The confirmation above was the first code check of this user.
            for _ in range(2):
                assert (
                    await second_step(one, pending["mfa_token"], code=wrong(secret))
                ).status_code == 401
            other = await first_step(two)
            refused = await second_step(two, other["mfa_token"], code=code(secret, 1))
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json() == {"detail": "Too many code attempts, try again later"}


async def test_the_mfa_limit_counts_per_client_ip_across_users(limited: Any) -> None:
    async with client_for(limited, ("198.51.100.1", 1000)) as one:
        with mid_step():
            alice, _ = await enrolled(one, "alice@example.com")
            bob, _ = await enrolled(one, "bob@example.com")
            pending = await first_step(one, "alice@example.com")
            assert (
                await second_step(one, pending["mfa_token"], code=wrong(alice))
            ).status_code == 401
            # Two confirmations and one code from this address: Bob's first try is refused.
            other = await first_step(one, "bob@example.com")
            refused = await second_step(one, other["mfa_token"], code=code(bob, 1))
            assert refused.status_code == 429
            # The refusal spent nothing: the mfa_token is not counted as a wrong code.
            assert "retry-after" in refused.headers


async def test_confirmation_counts_against_the_mfa_limit(limited: Any) -> None:
    async with client_for(limited) as http:
        await register(http)
        access = (await login(http))["access_token"]
        await http.post("/api/v1/auth/mfa/totp/setup", headers=bearer(access))
        statuses = [
            (await http.post(CONFIRM, json={"code": "000000"}, headers=bearer(access))).status_code
            for _ in range(4)
        ]
        assert statuses[-1] == 429
        assert 429 not in statuses[:3]


async def test_no_answer_echoes_a_code_a_token_or_a_secret(client: httpx.AsyncClient) -> None:
    with mid_step():
        secret, codes = await enrolled(client)
        pending = await first_step(client)
        token = pending["mfa_token"]
        bodies: list[dict[str, Any]] = [
            {"mfa_token": token, "code": "12345x"},
            {"mfa_token": token, "code": code(secret, 1), "recovery_code": codes[0]},
            {"mfa_token": token},
            {"mfa_token": token, "code": code(secret, 1), "extra": secret},
            {"mfa_token": token, "recovery_code": "z" * 65},
            {"mfa_token": token + "x", "code": code(secret, 1)},
            {"mfa_token": token, "recovery_code": "wxyz-wxyz-wxyz"},
        ]
        for body in bodies:
            response = await client.post("/api/v1/auth/mfa/verify", json=body)
            assert response.status_code in (401, 422), response.text
            for value in (token, secret, code(secret, 1), codes[0], "12345x", "wxyz-wxyz-wxyz"):
                assert value not in response.text, (body, response.text)


async def test_twenty_concurrent_submissions_of_one_code_succeed_once(
    client: httpx.AsyncClient,
) -> None:
    """20 logins race to finish with the same code (each its own mfa_token, so only the
    TOTP step's atomic update decides)."""
    with mid_step():
        secret, _ = await enrolled(client)
        tokens = [(await first_step(client))["mfa_token"] for _ in range(20)]
        same = code(secret, 1)
        answers = await asyncio.gather(*(second_step(client, t, code=same) for t in tokens))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] + [401] * 19
