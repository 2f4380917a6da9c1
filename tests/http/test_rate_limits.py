"""Rate limits over HTTP, on memory storage (SQLite variant) and on real Redis (PostgreSQL
variant): per-email login limit, failures per IP, progressive per-account delay, the global
limit and whose budget a request spends, the headers, per-route limits, and the off switch.

The global limit uses the sliding-window counter; on memory storage its windows are aligned
to the clock, so a test that happens to straddle a minute boundary may see one extra request
allowed. Tests of the global limit therefore count "allowed before the first 429" and accept
``limit`` or ``limit + 1`` — never more, which is what matters.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from authkeep import Settings, create_app
from forgery import forge, hs256
from helpers import PASSWORD, PEER, authkeep_of, bearer, client_for, register, running

LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
REGISTER = "/api/v1/auth/register"
REFRESH = "/api/v1/auth/refresh"
PASSWORD_CHANGE = "/api/v1/auth/password"
ME = "/api/v1/auth/me"
JWKS = "/.well-known/jwks.json"
SETUP_PEER = ("192.0.2.200", 50000)
LOGIN_DETAIL = "Too many login attempts, try again later"


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app on ``settings``, running, with a client from :data:`helpers.PEER`."""
    app = create_app(settings)
    async with running(app), client_for(app) as http:
        yield app, http


def peer(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client whose socket address is ``address``."""
    return client_for(app, (address, 40001))


async def post_login(
    http: httpx.AsyncClient, email: str = "alice@example.com", password: str = PASSWORD
) -> httpx.Response:
    return await http.post(LOGIN, json={"email": email, "password": password})


async def post_token(
    http: httpx.AsyncClient, email: str = "alice@example.com", password: str = PASSWORD
) -> httpx.Response:
    form = {"grant_type": "password", "username": email, "password": password}
    return await http.post(TOKEN, data=form)


async def allowed_before_refusal(
    send: Callable[[], Awaitable[httpx.Response]], most: int
) -> tuple[int, httpx.Response]:
    """Send until a 429 (at most ``most`` requests); the number allowed and the refusal."""
    for allowed in range(most):
        response = await send()
        assert response.status_code != 500, response.text
        if response.status_code == 429:
            return allowed, response
    pytest.fail(f"no 429 within {most} requests")


def assert_refusal(response: httpx.Response, limit: int, *, oauth2: bool = False) -> None:
    """A contract 429: JSON detail (the token endpoint: RFC 6749's error members),
    Retry-After and the RateLimit-* headers."""
    assert response.status_code == 429
    if oauth2:
        assert set(response.json()) == {"error", "error_description"}
        assert response.json()["error"] == "temporarily_unavailable"
    else:
        assert set(response.json()) == {"detail"}
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["ratelimit-reset"]) >= 0


# -- login: per email ----------------------------------------------------------------------


async def test_sixth_login_for_one_email_within_a_minute_is_429(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(login_rate_limit="5/minute")) as (_app, http):
        await register(http)
        remaining = []
        for _ in range(5):
            response = await post_login(http)
            assert response.status_code == 200, response.text
            assert response.headers["ratelimit-limit"] == "5"
            remaining.append(int(response.headers["ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        refused = await post_login(http)
        assert_refusal(refused, 5)
        assert refused.json() == {"detail": LOGIN_DETAIL}
        assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_login_and_token_endpoints_share_the_email_budget(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(login_rate_limit="4/minute")) as (_app, http):
        await register(http)
        for send in (post_login, post_token, post_login, post_token):
            assert (await send(http)).status_code == 200
        assert_refusal(await post_token(http), 4, oauth2=True)
        assert_refusal(await post_login(http), 4)


async def test_case_and_spacing_do_not_buy_more_tries(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(login_rate_limit="5/minute")) as (_app, http):
        await register(http, "user@example.com")
        variants = [
            "User@Example.com ",
            "user@example.com",
            " USER@EXAMPLE.COM",
            "User@Example.com ",
        ]
        for email in [*variants, "user@example.com"]:
            assert (await post_login(http, email)).status_code == 200
        assert_refusal(await post_login(http, "User@Example.com "), 5)
        assert_refusal(await post_token(http, "uSeR@example.COM"), 5, oauth2=True)


async def test_the_email_limit_is_counted_before_the_password_is_checked(
    make_settings: Callable[..., Settings],
) -> None:
    """Wrong passwords and unknown accounts spend the budget too, and the refusal is the
    same whether or not the account exists (no enumeration through the limit)."""
    settings = make_settings(login_rate_limit="2/minute")
    async with serving(settings) as (_app, http):
        await register(http)
        answers = {}
        for email in ("alice@example.com", "nobody@example.com"):
            statuses = [
                (await post_login(http, email, "wrong password")).status_code for _ in range(3)
            ]
            answers[email] = statuses
            refused = await post_login(http, email)
            assert refused.json() == {"detail": LOGIN_DETAIL}
        assert answers["alice@example.com"] == answers["nobody@example.com"] == [401, 401, 429]


# -- login: failures per IP ----------------------------------------------------------------


async def test_failed_logins_per_ip(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(login_ip_failure_limit="3 per 15 minutes")
    async with serving(settings) as (app, http):
        await register(http, "bob@example.com")
        for n in range(3):
            assert (await post_login(http, f"guess{n}@example.com", "nope")).status_code == 401
        # Even the right password for another account is refused from this address ...
        refused = await post_login(http, "bob@example.com")
        assert_refusal(refused, 3)
        assert 60 < int(refused.headers["retry-after"]) <= 15 * 60
        # ... but not from another one.
        async with peer(app, "198.51.100.9") as elsewhere:
            assert (await post_login(elsewhere, "bob@example.com")).status_code == 200


async def test_successful_logins_do_not_count_as_failures(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(login_ip_failure_limit="2 per 15 minutes")) as (_a, http):
        await register(http)
        for _ in range(5):
            assert (await post_login(http)).status_code == 200


# -- login: progressive delay per account ----------------------------------------------------


async def test_account_failures_refuse_with_the_longest_wait(
    make_settings: Callable[..., Settings],
) -> None:
    """Each tier is a longer window; the wait announced is the longest exhausted one."""
    cases = (("2 per minute; 3 per hour", 1, 60), ("2 per minute; 2 per hour", 61, 3600))
    for case, (tiers, low, high) in enumerate(cases):
        victim = f"victim{case}@example.com"
        async with serving(make_settings(login_account_failure_limits=tiers)) as (app, _h):
            # Failures from many addresses: the per-IP limit is not what stops them.
            for n in range(2):
                async with peer(app, f"198.51.100.{n + 1}") as attacker:
                    assert (await post_login(attacker, victim, "guess")).status_code == 401
            async with peer(app, "198.51.100.50") as attacker:
                refused = await post_login(attacker, victim, "guess")
            assert_refusal(refused, 2)
            assert low <= int(refused.headers["retry-after"]) <= high, tiers


async def test_a_success_forgets_the_failures(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(login_account_failure_limits="3 per hour")
    async with serving(settings) as (_app, http):
        await register(http)
        for _ in range(2):
            assert (await post_login(http, password="guess")).status_code == 401
        assert (await post_login(http)).status_code == 200
        for _ in range(2):
            assert (await post_login(http, password="guess")).status_code == 401
        assert (await post_login(http)).status_code == 200


async def test_an_attacker_cannot_lock_the_owner_out(
    make_settings: Callable[..., Settings],
) -> None:
    """The owner signed in from their address before; the attacker exhausts the account's
    tiers from elsewhere; the owner still gets in (their address has its own tiers)."""
    settings = make_settings(login_account_failure_limits="3 per hour")
    async with serving(settings) as (app, owner):
        await register(owner)
        assert (await post_login(owner)).status_code == 200
        for n in range(3):
            async with peer(app, f"198.51.100.{n + 1}") as attacker:
                assert (await post_login(attacker, password="guess")).status_code == 401
        async with peer(app, "198.51.100.99") as attacker:
            assert (await post_login(attacker, password="guess")).status_code == 429
            # Even with the right password: the account is throttled for unknown clients.
            assert (await post_login(attacker)).status_code == 429
        assert (await post_login(owner)).status_code == 200


async def test_an_unknown_client_is_never_remembered_as_the_owners_address(
    make_settings: Callable[..., Settings],
) -> None:
    """The owner signs in through a proxy that sends a broken forwarded chain: that is no
    address of theirs, so an attacker behind the same broken chain gets no known-client tiers."""
    settings = make_settings(
        login_account_failure_limits="3 per hour", trusted_proxies=["10.0.0.0/8"]
    )
    garbage = {"X-Forwarded-For": "garbage"}
    credentials = {"email": "alice@example.com", "password": PASSWORD}
    async with serving(settings) as (app, http), peer(app, "10.1.2.3") as proxy:
        await register(http)
        assert (await proxy.post(LOGIN, json=credentials, headers=garbage)).status_code == 200
        for n in range(3):
            async with peer(app, f"198.51.100.{n + 1}") as attacker:
                assert (await post_login(attacker, password="guess")).status_code == 401
        refused = await proxy.post(LOGIN, json=credentials, headers=garbage)
        assert refused.status_code == 429, refused.text


async def test_login_refusals_are_logged_without_the_email(
    make_settings: Callable[..., Settings], log_output: Any
) -> None:
    async with serving(make_settings(login_rate_limit="1/minute")) as (_app, http):
        email = f"Secret.Person.{uuid.uuid4().hex[:6]}@Example.com"
        await post_login(http, email, "first-guess-password")
        assert (await post_login(http, email, "second-guess-password")).status_code == 429
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    refused = [e for e in events if e.get("event") == "login_rate_limited"]
    assert refused
    assert refused[0]["rule"] == "login_email"
    assert refused[0]["client_ip"] == PEER[0]
    text = log_output.getvalue().lower()
    assert email.lower().split("@")[0] not in text
    assert "guess-password" not in text


# -- the global limit: whose budget ----------------------------------------------------------


async def test_global_limit_per_ip_with_headers(make_settings: Callable[..., Settings]) -> None:
    async with serving(make_settings(rate_limit_per_minute=5)) as (app, http):
        first = await http.get(JWKS)
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "5"
        assert first.headers["ratelimit-remaining"] == "4"
        assert 0 <= int(first.headers["ratelimit-reset"]) <= 120
        allowed, refused = await allowed_before_refusal(lambda: http.get(JWKS), 10)
        assert allowed + 1 in (5, 6)
        assert_refusal(refused, 5)
        assert refused.json() == {"detail": "Too many requests"}
        assert refused.headers["x-request-id"]
        assert refused.headers["x-content-type-options"] == "nosniff"
        async with peer(app, "198.51.100.7") as other:
            assert (await other.get(JWKS)).status_code == 200


async def test_probes_and_preflights_are_exempt(make_settings: Callable[..., Settings]) -> None:
    async with serving(make_settings(rate_limit_per_minute=1)) as (_app, http):
        for _ in range(5):
            health = await http.get("/health")
            assert health.status_code == 200
            assert "ratelimit-limit" not in health.headers
            assert (await http.options(LOGIN)).status_code != 429


async def test_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(rate_limit_per_minute=5)) as (_app, http):

        def spoofed() -> Awaitable[httpx.Response]:
            fake = f"198.51.100.{secrets.randbelow(250) + 1}"
            return http.get(JWKS, headers={"X-Forwarded-For": fake})

        allowed, _refused = await allowed_before_refusal(spoofed, 12)
        assert allowed in (5, 6)
        # The real address is spent, whatever the header says.
        assert (
            await http.get(JWKS, headers={"X-Forwarded-For": "203.0.113.250"})
        ).status_code == 429


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(rate_limit_per_minute=5, trusted_proxies=["10.0.0.0/8"])
    async with serving(settings) as (app, _http), peer(app, "10.1.2.3") as proxy:

        def via_proxy(client: str) -> Callable[[], Awaitable[httpx.Response]]:
            # The client wrote a fake left-most hop; the proxy appended the real address.
            header = {"X-Forwarded-For": f"6.6.6.6, {client}"}
            return lambda: proxy.get(JWKS, headers=header)

        allowed, _refused = await allowed_before_refusal(via_proxy("198.51.100.1"), 12)
        assert allowed in (5, 6)
        assert (await via_proxy("198.51.100.2")()).status_code == 200
        assert (await via_proxy("198.51.100.1")()).status_code == 429


async def test_unparsable_forwarded_chains_share_one_bucket_apart_from_the_proxy(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(rate_limit_per_minute=5, trusted_proxies=["10.0.0.0/8"])
    async with serving(settings) as (app, _http), peer(app, "10.1.2.3") as proxy:
        fresh = iter(range(100))

        def garbage() -> Awaitable[httpx.Response]:
            # A new value each time: garbage must not open a new bucket per request.
            return proxy.get(JWKS, headers={"X-Forwarded-For": f"garbage-{next(fresh)}"})

        allowed, _refused = await allowed_before_refusal(garbage, 12)
        assert allowed in (5, 6)
        assert (await proxy.get(JWKS, headers={"X-Forwarded-For": ""})).status_code == 429
        # Neither the proxy's own address nor a real client behind it paid for that.
        assert (await proxy.get(JWKS)).status_code == 200
        relayed = await proxy.get(JWKS, headers={"X-Forwarded-For": "198.51.100.1"})
        assert relayed.status_code == 200


async def test_a_route_limit_counts_an_unknown_client_apart_from_the_proxy(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(register_rate_limit="1/hour", trusted_proxies=["10.0.0.0/8"])
    async with serving(settings) as (app, _http), peer(app, "10.1.2.3") as proxy:

        def sign_up(email: str, forwarded: str | None) -> Awaitable[httpx.Response]:
            headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
            body = {"email": email, "password": PASSWORD}
            return proxy.post(REGISTER, json=body, headers=headers)

        first = await sign_up("one@example.com", "garbage")
        second = await sign_up("two@example.com", "other garbage")
        own = await sign_up("three@example.com", None)
    assert first.status_code in (201, 202), first.text
    assert_refusal(second, 1)
    assert own.status_code in (201, 202), own.text


async def _two_users(app: FastAPI) -> tuple[str, str]:
    """Register and log in two users from a set-up address; their access tokens."""
    tokens = []
    async with peer(app, SETUP_PEER[0]) as setup:
        for email in ("ann@example.com", "ben@example.com"):
            await register(setup, email)
            response = await post_login(setup, email)
            tokens.append(response.json()["access_token"])
    return tokens[0], tokens[1]


async def test_two_users_behind_one_address_each_get_their_own_budget(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(rate_limit_per_minute=4)) as (app, http):
        ann, ben = await _two_users(app)
        allowed, refused = await allowed_before_refusal(
            lambda: http.get(ME, headers=bearer(ann)), 10
        )
        assert allowed in (4, 5)
        assert_refusal(refused, 4)
        response = await http.get(ME, headers=bearer(ben))
        assert response.status_code == 200
        assert response.headers["ratelimit-remaining"] == "3"
        # The address's own (anonymous) budget is a third one, untouched.
        assert (await http.get(JWKS)).status_code == 200


async def test_a_forged_token_does_not_get_its_own_bucket(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(rate_limit_per_minute=5)) as (app, http):
        ring = authkeep_of(app).keys
        kid = ring.current.kid

        def claims(**extra: Any) -> dict[str, Any]:
            now = int(time.time())
            return {
                "sub": str(uuid.uuid4()),  # a fresh "user" every time
                "sid": str(uuid.uuid4()),
                "jti": str(uuid.uuid4()),
                "email": "x@example.com",
                "iat": now,
                "exp": now + 600,
                "iss": "authkeep",
                "aud": "authkeep",
                "token_type": "access",
                **extra,
            }

        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        ours = hs256(ring.current.signing_material)
        past = int(time.time()) - 3600
        forged = [
            forge(header, claims(), hs256(b"attacker key")),  # signed with a guessed key
            forge(header, claims(exp=past, iat=past - 600), ours),  # genuine but expired
            forge(header, claims(token_type="refresh"), ours),  # genuine, wrong type
            "not.a.token",
        ]
        counter = iter(range(100))

        def send() -> Awaitable[httpx.Response]:
            token = forged[next(counter) % len(forged)]
            return http.get(ME, headers=bearer(token))

        allowed, _refused = await allowed_before_refusal(send, 12)
        assert allowed in (5, 6)
        # All of them spent the address's budget: an anonymous request is refused too.
        assert (await http.get(JWKS)).status_code == 429


# -- per-route limits ------------------------------------------------------------------------


async def test_register_is_limited_per_ip(make_settings: Callable[..., Settings]) -> None:
    async with serving(make_settings(register_rate_limit="2/hour")) as (app, http):
        await register(http, "one@example.com")
        await register(http, "two@example.com")
        refused = await http.post(
            REGISTER, json={"email": "three@example.com", "password": PASSWORD}
        )
        assert_refusal(refused, 2)
        assert int(refused.headers["retry-after"]) > 60
        async with peer(app, "198.51.100.3") as other:
            await register(other, "three@example.com")


async def test_refresh_is_limited_per_ip(make_settings: Callable[..., Settings]) -> None:
    async with serving(make_settings(refresh_rate_limit="2/minute")) as (_app, http):
        await register(http)
        token = (await post_login(http)).json()["refresh_token"]
        for _ in range(2):
            response = await http.post(REFRESH, json={"refresh_token": token})
            assert response.status_code == 200
            assert response.headers["ratelimit-limit"] == "2"
            token = response.json()["refresh_token"]
        assert_refusal(await http.post(REFRESH, json={"refresh_token": token}), 2)


async def test_password_change_is_limited_per_user(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(password_change_rate_limit="2 per 15 minutes")
    async with serving(settings) as (app, http):
        ann, ben = await _two_users(app)
        wrong = {"current_password": "not it", "new_password": "a brand new passphrase"}
        for _ in range(2):
            response = await http.post(PASSWORD_CHANGE, json=wrong, headers=bearer(ann))
            assert response.status_code == 422
            assert response.headers["ratelimit-limit"] == "2"
        refused = await http.post(PASSWORD_CHANGE, json=wrong, headers=bearer(ann))
        assert_refusal(refused, 2)
        ok = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
        assert (await http.post(PASSWORD_CHANGE, json=ok, headers=bearer(ben))).status_code == 204
        # Unauthenticated callers are told who they are not, not how many tries are left.
        assert (await http.post(PASSWORD_CHANGE, json=ok)).status_code == 401


# -- the off switch --------------------------------------------------------------------------


async def test_disabled_turns_every_limit_off(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        rate_limit_enabled=False,
        rate_limit_per_minute=1,
        login_rate_limit="1/minute",
        login_ip_failure_limit="1/hour",
        login_account_failure_limits="1/hour",
        register_rate_limit="1/hour",
    )
    async with serving(settings) as (_app, http):
        await register(http, "one@example.com")
        await register(http, "two@example.com")
        for _ in range(3):
            assert (await post_login(http, "one@example.com", "wrong")).status_code == 401
        for _ in range(3):
            response = await post_login(http, "one@example.com")
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
        assert authkeep_of(_app).services.rate_limits.enabled is False
