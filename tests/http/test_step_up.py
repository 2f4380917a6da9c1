"""Step-up over HTTP (issue 14): sensitive routes need a recent sign-in, and the second factor
when the user has one; ``POST /auth/step-up`` re-authenticates inside the session, and the
elevation ends by itself when its age passes the limit. The clock is time-machine's; each
test runs on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import time_machine
from fastapi import FastAPI
from prometheus_client import REGISTRY

from audit_helpers import app_rows
from authkeep import Settings
from helpers import PASSWORD, bearer, login, register
from org_helpers import create_org, sign_up
from session_helpers import claims_of, refresh, sid_of, started
from step_up_helpers import (
    MAX_AGE,
    START,
    STEP_UP,
    challenge,
    code_at,
    enrol_totp,
    make_superuser,
    step_up,
)

EMAIL_CHANGE = "/api/v1/auth/email/change"


async def change_email(http: httpx.AsyncClient, access: str) -> httpx.Response:
    """A sensitive route that changes nothing until a link is opened: repeatable."""
    return await http.post(
        EMAIL_CHANGE,
        json={"new_email": f"new-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD},
        headers=bearer(access),
    )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_recent_after_login_401_after_max_age_and_again_after_a_password_step_up(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (app, http):
            await register(http)
            pair = await login(http)
            assert (await change_email(http, pair["access_token"])).status_code == 202

            clock.shift(timedelta(seconds=MAX_AGE + 1))
            required = counter("authkeep_step_up_required_total", reason="max_age")
            stale = await change_email(http, pair["access_token"])
            assert stale.status_code == 401
            assert stale.headers["www-authenticate"] == challenge()
            assert stale.json() == {
                "detail": "A more recent or stronger sign-in is required: step up and retry"
            }
            assert counter("authkeep_step_up_required_total", reason="max_age") == required + 1

            stepped = await step_up(http, pair["access_token"], password=PASSWORD)
            assert stepped.status_code == 200, stepped.text
            body = stepped.json()
            now = int((START + timedelta(seconds=MAX_AGE + 1)).timestamp())
            assert body["token_type"] == "bearer"
            assert body["expires_in"] == 30 * 60
            assert (body["auth_time"], body["amr"], body["acr"]) == (now, ["pwd"], "aal1")
            claims = claims_of(body["access_token"])
            assert (claims["auth_time"], claims["amr"], claims["acr"]) == (now, ["pwd"], "aal1")
            assert claims["sid"] == str(sid_of(pair)), "the same session goes on"
            assert PASSWORD not in stepped.text
            assert (await change_email(http, body["access_token"])).status_code == 202
            # The old token keeps its old sign-in: nothing it carries was changed.
            assert (await change_email(http, pair["access_token"])).status_code == 401

            [row] = await app_rows(app, "auth.step_up")
            assert row.outcome == "success"
            assert row.details["method"] == "pwd"


async def test_the_elevation_ends_by_itself_and_refresh_keeps_the_new_auth_time(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (_app, http):
            await register(http)
            pair = await login(http)
            clock.shift(timedelta(seconds=MAX_AGE + 1))
            stepped = (await step_up(http, pair["access_token"], password=PASSWORD)).json()

            clock.shift(timedelta(seconds=30))
            # The refresh token of the login carries on, and what it mints now carries the
            # step-up's sign-in (read from the session row), not the login's.
            renewed = await refresh(http, pair["refresh_token"])
            assert renewed.status_code == 200, renewed.text
            assert claims_of(renewed.json()["access_token"])["auth_time"] == stepped["auth_time"]
            assert (await change_email(http, renewed.json()["access_token"])).status_code == 202

            # No revocation, no request: past max_age the elevation is simply over.
            clock.shift(timedelta(seconds=MAX_AGE))
            for token in (stepped["access_token"], renewed.json()["access_token"]):
                expired = await change_email(http, token)
                assert expired.status_code == 401
                assert expired.headers["www-authenticate"] == challenge()
            # Still a valid session for everything else.
            me = await http.get("/api/v1/auth/me", headers=bearer(stepped["access_token"]))
            assert me.status_code == 200


async def test_a_user_with_mfa_needs_aal2_which_only_a_code_gives(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (app, http):
            await register(http)
            pair = await login(http)  # before enrolment: a password session, aal1
            secret = await enrol_totp(http, pair["access_token"], START)

            weak = await change_email(http, pair["access_token"])
            assert weak.status_code == 401
            assert weak.headers["www-authenticate"] == challenge(aal2=True, too_old=False)
            # A password alone never elevates: a stolen password and a stolen token are not
            # a second factor.
            by_password = await step_up(http, pair["access_token"], password=PASSWORD)
            assert by_password.status_code == 200
            assert by_password.json()["acr"] == "aal1"
            still = await change_email(http, by_password.json()["access_token"])
            assert still.status_code == 401
            assert 'acr_values="aal2"' in still.headers["www-authenticate"]

            # The enrolment's code is spent: the app's next one.
            clock.shift(timedelta(seconds=30))
            code = code_at(secret, START + timedelta(seconds=30))
            by_code = await step_up(http, pair["access_token"], code=code)
            assert by_code.status_code == 200, by_code.text
            assert by_code.json()["amr"] == ["pwd", "otp"]
            assert by_code.json()["acr"] == "aal2"
            assert (await change_email(http, by_code.json()["access_token"])).status_code == 202

            # The same code again is a replay: refused, audited, the session unchanged.
            replay = await step_up(http, pair["access_token"], code=code)
            assert replay.status_code == 401
            assert code not in replay.text
            failures = [r for r in await app_rows(app, "auth.step_up") if r.outcome == "failure"]
            assert [r.details["method"] for r in failures] == ["otp"]

            # Past max_age: both a fresh sign-in and the second factor are asked for again.
            clock.shift(timedelta(seconds=MAX_AGE + 1))
            old = await change_email(http, by_code.json()["access_token"])
            assert old.status_code == 401
            assert old.headers["www-authenticate"] == challenge(aal2=True)
            again = await step_up(
                http,
                pair["access_token"],
                code=code_at(secret, START + timedelta(seconds=30 + MAX_AGE + 1)),
            )
            assert again.json()["acr"] == "aal2"
            assert (await change_email(http, again.json()["access_token"])).status_code == 202


async def test_a_wrong_password_is_401_audited_and_counts_as_a_failed_login(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(login_account_failure_limits="3 per 15 minutes")
    async with started(settings) as (app, http):
        await register(http)
        pair = await login(http)
        failures = counter("authkeep_step_ups_total", method="pwd", outcome="failure")
        for _ in range(3):
            wrong = await step_up(http, pair["access_token"], password="not my password")
            assert wrong.status_code == 401
            assert wrong.json() == {"detail": "Incorrect password"}
            assert "not my password" not in wrong.text
        assert counter("authkeep_step_ups_total", method="pwd", outcome="failure") == failures + 3
        rows = await app_rows(app, "auth.step_up")
        assert [(r.outcome, r.details["reason"]) for r in rows] == [("failure", "bad_password")] * 3
        # The account's failed logins are spent: a step-up (even the right password) and a
        # login are both refused before any password work.
        locked = await step_up(http, pair["access_token"], password=PASSWORD)
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0
        login_attempt = await http.post(
            "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert login_attempt.status_code == 429


async def test_step_up_attempts_share_the_per_user_password_budget(
    make_settings: Callable[..., Settings],
) -> None:
    async with started(make_settings(password_change_rate_limit="2 per 15 minutes")) as (_, http):
        await register(http)
        pair = await login(http)
        answers = [
            (await step_up(http, pair["access_token"], password=PASSWORD)).status_code
            for _ in range(3)
        ]
        assert answers == [200, 200, 429]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"password": PASSWORD, "code": "123456"},
        {"password": ""},
        {"code": "12345"},
        {"code": "x" * 100},
        {"password": PASSWORD, "is_superuser": True},
        {"password": None, "code": None},
    ],
)
async def test_a_malformed_body_is_422_and_echoes_nothing(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    await register(client)
    pair = await login(client)
    answer = await step_up(client, pair["access_token"], **body)
    assert answer.status_code == 422, answer.text
    assert PASSWORD not in answer.text


async def test_a_code_without_a_second_factor_is_422_and_anonymous_is_401(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client)
    pair = await login(client)
    no_factor = await step_up(client, pair["access_token"], code="123456")
    assert no_factor.status_code == 422
    assert "authenticator" in no_factor.text
    anonymous = await client.post(STEP_UP, json={"password": PASSWORD})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_a_step_up_gains_nothing_for_an_ended_session(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client)
    pair = await login(client)
    ended = await client.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))
    assert ended.status_code == 204
    answer = await step_up(client, pair["access_token"], password=PASSWORD)
    assert answer.status_code == 401
    assert "access_token" not in answer.text


# --- every sensitive route ----------------------------------------------------------------


async def _sensitive_setup(app: FastAPI, http: httpx.AsyncClient) -> tuple[str, str, str]:
    """A platform admin who is the admin of an organization (its active one): their access
    token, the organization's id and another user's id."""
    root = await make_superuser(app, http)
    person = await sign_up(http, "target@example.com")
    org = await http.post(
        "/api/v1/orgs", json={"name": "Acme"}, headers=bearer(root["access_token"])
    )
    assert org.status_code == 201, org.text
    return org.json()["access_token"], org.json()["id"], str(person.user_id)


async def _sensitive_calls(
    http: httpx.AsyncClient, token: str, org_id: str, user_id: str
) -> list[httpx.Response]:
    """One request to each sensitive route."""
    headers = bearer(token)
    target = f"/api/v1/admin/users/{user_id}"
    return [
        await http.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": PASSWORD},
            headers=headers,
        ),
        await http.post(
            EMAIL_CHANGE, json={"new_email": "n@example.com", "password": PASSWORD}, headers=headers
        ),
        await http.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers),
        await http.patch(target, json={"is_active": True}, headers=headers),
        await http.request(
            "DELETE",
            f"/api/v1/admin/users/{uuid.uuid4()}",
            json={"reason": "test"},
            headers=headers,
        ),
        await http.post(f"{target}/mfa/reset", json={"reason": "lost phone"}, headers=headers),
        await http.patch(f"/api/v1/orgs/{org_id}", json={"require_mfa": False}, headers=headers),
    ]


async def test_every_sensitive_route_asks_for_a_step_up_and_accepts_it(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (app, http):
            token, org_id, user_id = await _sensitive_setup(app, http)
            clock.shift(timedelta(seconds=MAX_AGE + 1))
            for refused in await _sensitive_calls(http, token, org_id, user_id):
                assert refused.status_code == 401, (refused.request.url, refused.text)
                assert refused.headers["www-authenticate"] == challenge()

            stepped = await step_up(http, token, password=PASSWORD)
            assert stepped.status_code == 200, stepped.text
            answers = await _sensitive_calls(http, stepped.json()["access_token"], org_id, user_id)
            # Past the step-up rule, each route does its own work (a same-password change is
            # a 422 of the password rule, an unknown user a 404).
            assert [a.status_code for a in answers] == [422, 202, 201, 200, 404, 204, 200]


async def test_authorization_comes_before_the_step_up(
    make_settings: Callable[..., Settings],
) -> None:
    """A caller who may not do it hears 403, not an invitation to re-authenticate."""
    with time_machine.travel(START, tick=False) as clock:
        async with started(make_settings()) as (_app, http):
            person = await sign_up(http, "bob@example.com")
            org_id = await create_org(http, person)
            viewer = await sign_up(http, "carol@example.com")
            clock.shift(timedelta(seconds=MAX_AGE + 1))
            for response in (
                await http.patch(
                    f"/api/v1/admin/users/{person.user_id}",
                    json={"is_active": False},
                    headers=viewer.auth,
                ),
                await http.post(
                    f"/api/v1/admin/users/{person.user_id}/mfa/reset",
                    json={"reason": "x"},
                    headers=viewer.auth,
                ),
                await http.patch(
                    f"/api/v1/orgs/{org_id}", json={"require_mfa": True}, headers=viewer.auth
                ),
            ):
                assert response.status_code in (403, 404), response.text
