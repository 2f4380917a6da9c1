"""The challenge after failed logins (docs/challenge.md), on SQLite with memory state and on
PostgreSQL + Redis: when it appears (exactly N failures, known and unknown emails alike, per
IP), what a solution buys (one attempt), what is refused (replayed, expired, forged), that
workers share the single-use store, and a CAPTCHA provider against a fake verify server."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import time_machine
from fastapi import FastAPI

from authkeep import Settings, create_app
from challenge_helpers import TEST_POW_COST, decode, encode, solve
from conftest import Backend
from helpers import PASSWORD, client_for, register, running

LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
CHALLENGE = "/api/v1/auth/challenge"
FORGOT = "/api/v1/auth/password/forgot"
N = 3
WRONG = "not the password"


def challenge_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    """Limits whose lock-outs stay far away, and a challenge after :data:`N` failures."""
    values: dict[str, Any] = {
        "login_rate_limit": "1000/minute",
        "login_ip_failure_limit": "50 per 15 minutes",
        "login_account_failure_limits": "50 per 15 minutes; 100 per day",
        "challenge_after_failures": N,
        "challenge_altcha_max_number": TEST_POW_COST,
    }
    values.update(overrides)
    return make_settings(**values)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with running(app), client_for(app) as http:
        yield app, http


async def attempt(
    http: httpx.AsyncClient,
    email: str = "alice@example.com",
    password: str = WRONG,
    solution: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": password}
    if solution is not None:
        body["challenge_solution"] = solution
    return await http.post(LOGIN, json=body)


def is_challenge(response: httpx.Response) -> bool:
    body = response.json()
    return response.status_code == 401 and body.get("challenge_required") is True


@pytest.mark.parametrize("known", [True, False], ids=["known-email", "unknown-email"])
async def test_the_challenge_appears_after_exactly_n_failures(
    make_settings: Callable[..., Settings], known: bool
) -> None:
    async with serving(challenge_settings(make_settings)) as (_app, http):
        email = "alice@example.com" if known else "nobody@example.com"
        if known:
            await register(http, email)
        for _ in range(N):
            response = await attempt(http, email)
            assert response.status_code == 401
            assert response.json() == {"detail": "Incorrect email or password"}
        refused = await attempt(http, email, PASSWORD if known else WRONG)
    assert is_challenge(refused), refused.text
    body = refused.json()
    assert refused.headers["www-authenticate"] == "Bearer"
    assert set(body) == {"detail", "challenge_required", "challenge"}
    assert body["challenge"]["provider"] == "altcha"
    assert body["challenge"]["maxnumber"] == TEST_POW_COST
    assert set(body["challenge"]) == {
        "provider",
        "algorithm",
        "challenge",
        "maxnumber",
        "salt",
        "signature",
    }


async def test_known_and_unknown_emails_get_the_same_challenge_answer(
    make_settings: Callable[..., Settings],
) -> None:
    """Nothing in the challenged answer tells whether the account exists."""
    settings = challenge_settings(make_settings, login_ip_failure_limit="1000 per 15 minutes")
    async with serving(settings) as (app, http):
        await register(http, "alice@example.com")
        answers = []
        for email in ("alice@example.com", "nobody@example.com"):
            async with client_for(app, (f"198.51.100.{len(answers) + 1}", 1)) as other:
                for _ in range(N):
                    await attempt(other, email)
                answers.append(await attempt(other, email))
    shapes = [
        (r.status_code, r.json()["detail"], sorted(r.json()), sorted(r.json()["challenge"]))
        for r in answers
    ]
    assert shapes[0] == shapes[1]
    assert all(is_challenge(r) for r in answers)


async def test_failures_per_ip_across_emails_bring_the_challenge(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(challenge_settings(make_settings)) as (app, http):
        for i in range(N):
            assert not is_challenge(await attempt(http, f"user{i}@example.com"))
        assert is_challenge(await attempt(http, "fresh@example.com"))
        # Another client IP, a fresh email: no challenge.
        async with client_for(app, ("198.51.100.9", 1)) as other:
            response = await attempt(other, "another@example.com")
    assert response.status_code == 401
    assert not is_challenge(response)


async def test_n_minus_one_failures_bring_no_challenge(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(challenge_settings(make_settings)) as (_app, http):
        await register(http)
        for _ in range(N - 1):
            await attempt(http)
        response = await attempt(http, password=PASSWORD)
    assert response.status_code == 200, response.text


async def test_a_solved_challenge_lets_one_login_through_and_a_replay_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(challenge_settings(make_settings)) as (_app, http):
        await register(http)
        for _ in range(N):
            await attempt(http)
        challenge = (await attempt(http, password=PASSWORD)).json()["challenge"]
        solution = solve(challenge)
        ok = await attempt(http, password=PASSWORD, solution=solution)
        assert ok.status_code == 200, ok.text
        # The IP's failures still stand: the next login needs a new solution, and the spent
        # one is refused.
        replayed = await attempt(http, password=PASSWORD, solution=solution)
    assert is_challenge(replayed)
    assert "already used" in replayed.json()["detail"]
    assert replayed.json()["challenge"]["challenge"] != challenge["challenge"]


async def test_a_solution_buys_one_attempt_whose_failure_still_counts(
    make_settings: Callable[..., Settings],
) -> None:
    """The lock-out tiers stay: solved attempts with a wrong password end in 429."""
    settings = challenge_settings(make_settings, login_ip_failure_limit="5 per 15 minutes")
    async with serving(settings) as (_app, http):
        for _ in range(N):
            await attempt(http)
        statuses = []
        for _ in range(3):
            challenge = (await http.get(CHALLENGE)).json()
            response = await attempt(http, solution=solve(challenge))
            statuses.append(response.status_code)
    assert statuses == [401, 401, 429]


async def test_an_expired_solution_is_refused(make_settings: Callable[..., Settings]) -> None:
    settings = challenge_settings(make_settings, challenge_expire_seconds=60)
    async with serving(settings) as (_app, http):
        await register(http)
        for _ in range(N):
            await attempt(http)
        solution = solve((await attempt(http, password=PASSWORD)).json()["challenge"])
        with time_machine.travel(datetime.now(UTC) + timedelta(seconds=61)):
            late = await attempt(http, password=PASSWORD, solution=solution)
    assert is_challenge(late)


@pytest.mark.parametrize("field", ["signature", "number", "salt"])
async def test_a_forged_solution_is_refused(
    make_settings: Callable[..., Settings], field: str
) -> None:
    async with serving(challenge_settings(make_settings)) as (_app, http):
        await register(http)
        for _ in range(N):
            await attempt(http)
        payload = decode(solve((await attempt(http, password=PASSWORD)).json()["challenge"]))
        if field == "number":
            payload["number"] += 1
        elif field == "salt":
            payload["salt"] = payload["salt"].replace("expires=", "expires=9")
        else:
            payload["signature"] = "0" * 64
        forged = await attempt(http, password=PASSWORD, solution=encode(payload))
        junk = await attempt(http, password=PASSWORD, solution="not-a-payload")
    assert is_challenge(forged)
    assert is_challenge(junk)


async def test_a_challenge_fetched_up_front_works(make_settings: Callable[..., Settings]) -> None:
    """``GET /auth/challenge`` (the widget's challengeurl) and the OAuth2 form field."""
    async with serving(challenge_settings(make_settings)) as (_app, http):
        await register(http)
        for _ in range(N):
            await attempt(http)
        fetched = await http.get(CHALLENGE)
        assert fetched.status_code == 200
        assert fetched.headers["cache-control"] == "no-store"
        form = {"grant_type": "password", "username": "alice@example.com", "password": PASSWORD}
        refused = await http.post(TOKEN, data=form)
        ok = await http.post(TOKEN, data={**form, "challenge_solution": solve(fetched.json())})
    # The token endpoint answers in RFC 6749's shape, with the same two extra members.
    assert refused.status_code == 400
    assert refused.json()["error"] == "challenge_required"
    assert refused.json()["challenge_required"] is True
    assert refused.json()["challenge"]["provider"] == "altcha"
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "overrides", [{"challenge_after_failures": 0}, {"rate_limit_enabled": False}], ids=str
)
async def test_the_challenge_can_be_turned_off(
    make_settings: Callable[..., Settings], overrides: dict[str, Any]
) -> None:
    async with serving(challenge_settings(make_settings, **overrides)) as (_app, http):
        await register(http)
        for _ in range(N + 1):
            await attempt(http)
        response = await attempt(http, password=PASSWORD)
    assert response.status_code == 200, response.text


async def test_solution_field_is_validated(make_settings: Callable[..., Settings]) -> None:
    async with serving(challenge_settings(make_settings)) as (_app, http):
        response = await attempt(http, solution="has spaces in it")
        too_long = await attempt(http, solution="A" * 5000)
    assert response.status_code == 422
    assert too_long.status_code == 422
    assert "has spaces" not in response.text


async def test_two_workers_share_the_single_use_store(
    backend: Backend, make_settings: Callable[..., Settings]
) -> None:
    """Two app instances on one Redis (as two workers): a solution spent on one is refused
    by the other. On SQLite each instance has its own memory, so this is Redis only."""
    if not backend.is_postgres:
        pytest.skip("the shared store is Redis")
    settings = challenge_settings(make_settings)
    async with serving(settings) as (_a, first), serving(settings) as (_b, second):
        await register(first)
        for _ in range(N):
            await attempt(first)
        challenge = (await attempt(second, password=PASSWORD)).json()["challenge"]
        solution = solve(challenge)
        ok = await attempt(first, password=PASSWORD, solution=solution)
        replayed = await attempt(second, password=PASSWORD, solution=solution)
    assert ok.status_code == 200, ok.text
    assert is_challenge(replayed)


# -- a CAPTCHA service: a fake Turnstile siteverify on loopback ------------------------------

TURNSTILE_SECRET = "fake-turnstile-secret"
GOOD_TOKEN = "good-token.0123"


class _FakeSiteVerify(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        self.seen.append(form)
        spent = [f["response"] for f in self.seen[:-1]]
        ok = (
            form.get("secret") == TURNSTILE_SECRET
            and form.get("response") == GOOD_TOKEN
            and GOOD_TOKEN not in spent
        )
        body = {"success": ok, "error-codes": [] if ok else ["invalid-input-response"]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def fake_turnstile() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_FakeSiteVerify,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/siteverify", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_turnstile_tokens_are_verified_server_side(
    make_settings: Callable[..., Settings], fake_turnstile: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = fake_turnstile
    settings = challenge_settings(
        make_settings,
        challenge_provider="turnstile",
        challenge_secret=TURNSTILE_SECRET,
        challenge_site_key="0x4AAAAAAA-site",
        challenge_verify_url=url,
    )
    async with serving(settings) as (_app, http):
        await register(http)
        for _ in range(N):
            await attempt(http)
        asked = await attempt(http, password=PASSWORD)
        bad = await attempt(http, password=PASSWORD, solution="bad-token")
        good = await attempt(http, password=PASSWORD, solution=GOOD_TOKEN)
        again = await attempt(http, password=PASSWORD, solution=GOOD_TOKEN)
    assert is_challenge(asked)
    assert asked.json()["challenge"] == {"provider": "turnstile", "site_key": "0x4AAAAAAA-site"}
    assert is_challenge(bad)
    assert good.status_code == 200, good.text
    assert is_challenge(again)
    assert [form["response"] for form in seen] == ["bad-token", GOOD_TOKEN, GOOD_TOKEN]
    assert all(form["remoteip"] == "203.0.113.7" for form in seen)
    assert TURNSTILE_SECRET not in asked.text


async def test_an_unreachable_verifier_fails_closed(
    make_settings: Callable[..., Settings],
) -> None:
    settings = challenge_settings(
        make_settings,
        challenge_provider="turnstile",
        challenge_secret=TURNSTILE_SECRET,
        challenge_verify_url="http://127.0.0.1:9/siteverify",
    )
    async with serving(settings) as (_app, http):
        await register(http)
        for _ in range(N):
            await attempt(http)
        response = await attempt(http, password=PASSWORD, solution=GOOD_TOKEN)
    assert response.status_code == 503
    assert "challenge verifier" in response.json()["detail"]


async def test_forgot_password_needs_the_challenge_once_logins_do(
    make_settings: Callable[..., Settings],
) -> None:
    """A sprayer challenged on /login cannot move to forgot-password instead; the answer
    is the same for known and unknown emails."""
    async with serving(challenge_settings(make_settings)) as (_app, http):
        await register(http)
        free = await http.post(FORGOT, json={"email": "alice@example.com"})
        for _ in range(N):
            await attempt(http)
        refused = [
            await http.post(FORGOT, json={"email": email})
            for email in ("alice@example.com", "nobody@example.com")
        ]
        solution = solve((await http.get(CHALLENGE)).json())
        ok = await http.post(
            FORGOT, json={"email": "alice@example.com", "challenge_solution": solution}
        )
    assert free.status_code == 202
    assert all(is_challenge(r) for r in refused)
    assert refused[0].json()["detail"] == refused[1].json()["detail"]
    assert ok.status_code == 202, ok.text
