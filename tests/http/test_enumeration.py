"""No route that takes an email address tells whether it has an account: register,
forgot-password, resend-verification and invitations answer an existing and an unknown
address alike — status, body, headers, rate limiting and time.

**Same answer.** 200 requests with existing addresses and 200 with unknown ones, alternating
in pairs whose order is random but fixed by a seed (so that any drift of the machine's speed,
a garbage collection, another test worker or the in-process outbox delivering the mail of an
earlier request falls on both kinds alike), every address used once: every response has the
same status, the same body, the same set of header names and the same header values, except
the values that change with every request whatever the address — ``X-Request-ID`` and the
global limit's ``RateLimit-Remaining`` and ``RateLimit-Reset`` counters (:data:`PER_REQUEST`).

**Same time.** The two samples of response times must not be told apart by a two-sample
Kolmogorov–Smirnov test at p < 0.01 (the statistic and p-value of each route are written to
pytest's terminal output, lines starting with ``KS``, with or without ``-s``). Hashing costs
are production's (the measured app sets argon2id's defaults, 19 MiB, t=2, over the test
settings' cheap ones): a skipped hash on one side is the largest difference there could be,
and a dummy hash made with other parameters than the real ones would only show with the
shipped ones. The existing accounts are created beforehand by an app with the test settings'
cheap hashing (their hashes are never checked here: none of these routes verifies a password).

The outbox is not delivered during the measurement (``AUTHKEEP_OUTBOX_IN_PROCESS=false``):
these routes only write a row and answer, and the mail work — looking the address up,
storing a token, sending — happens after the response, in the worker. What a response's
time is made of is thus measured alone; a worker in the same process would only add noise
to every response alike (the work an earlier request caused lands on whichever request
comes next), lowering the test's power to see a difference in the request path itself.

**Same limits.** With tight limits, one existing and one unknown address, each asked for
again and again from its own client IP, get the same answers in the same order, a 429 with
``Retry-After`` at the same request — for invitations, the same from two admins of their own
organizations.

On SQLite and on PostgreSQL + Redis.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from scipy.stats import ks_2samp

from authkeep import Settings, create_app
from conftest import PRODUCTION_HASHING
from helpers import PASSWORD, bearer, client_for, running

pytestmark = pytest.mark.slow

SAMPLES = 200
WARM_UP = 5
ALPHA = 0.01
SEED = 20261130
PER_REQUEST = frozenset({"x-request-id", "ratelimit-remaining", "ratelimit-reset"})
"""Header values that differ between any two requests, whatever the address."""

GENEROUS_MAIL = {
    "mail_recipient_rate_limit": "100000/minute",
    "mail_ip_rate_limit": "100000/minute",
}
TIGHT = {
    # Whichever limit answers first, the two kinds of address must meet it at the same
    # request: the mail limits per IP and per recipient, register's own, the global one.
    "mail_ip_rate_limit": "4/minute",
    "mail_recipient_rate_limit": "2/hour",
    "register_rate_limit": "4/minute",
    "rate_limit_per_minute": 8,
}
ROUTES = ("register", "forgot-password", "resend-verification", "invitation")
ORGS = "/api/v1/orgs"


@dataclass
class Caller:
    """Sends one route's request for an address."""

    http: httpx.AsyncClient
    org_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, route: str, email: str) -> httpx.Response:
        if route == "register":
            body: dict[str, Any] = {"email": email, "password": PASSWORD}
            return await self.http.post("/api/v1/auth/register", json=body)
        if route == "forgot-password":
            return await self.http.post("/api/v1/auth/password/forgot", json={"email": email})
        if route == "resend-verification":
            return await self.http.post("/api/v1/auth/verify-email/resend", json={"email": email})
        return await self.http.post(
            f"{ORGS}/{self.org_id}/invitations",
            json={"email": email, "role": "viewer"},
            headers=self.headers,
        )


def shape(response: httpx.Response) -> tuple[int, bytes, tuple[str, ...], dict[str, str]]:
    """What must be the same for every address: status, body, header names, and the values
    of every header that does not change per request."""
    names = tuple(sorted(response.headers.keys()))
    values = {k: v for k, v in response.headers.items() if k not in PER_REQUEST}
    return response.status_code, response.content, names, values


async def create_accounts(settings: Settings, emails: list[str]) -> None:
    """Register ``emails`` through an app with cheap hashing (setup only, not measured)."""
    async with running(create_app(settings)) as app, client_for(app) as http:
        for email in emails:
            response = await Caller(http).send("register", email)
            assert response.status_code == 202, response.text


async def admin_of_new_org(http: httpx.AsyncClient, email: str) -> Caller:
    """Log in as the (already registered) ``email`` and create an organization."""
    logged_in = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    auth = bearer(logged_in.json()["access_token"])
    created = await http.post(ORGS, json={"name": f"Org {uuid.uuid4().hex[:6]}"}, headers=auth)
    assert created.status_code == 201, created.text
    return Caller(http, created.json()["id"], auth)


async def timed(send: Callable[[], Awaitable[httpx.Response]]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await send()
    return response, time.perf_counter() - started


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Show a result line in pytest's terminal output, captured or not (``-s``)."""
    with capsys.disabled():
        print(line)


async def test_existing_and_unknown_emails_get_the_same_answer_in_the_same_time(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mail = {
        "email_backend": "file",
        "email_file_dir": tmp_path / "mail",
        # The request path alone: what a response's time is made of (see the docstring).
        "outbox_in_process": False,
        **GENEROUS_MAIL,
    }
    known = [f"known{n}@example.com" for n in range(SAMPLES + WARM_UP)]
    admin_email = "admin@example.com"
    await create_accounts(make_settings(**mail), [*known, admin_email])

    failures: list[str] = []
    measured = make_settings(**PRODUCTION_HASHING, **mail)
    async with running(create_app(measured)) as app, client_for(app) as http:
        callers = {route: Caller(http) for route in ROUTES}
        callers["invitation"] = await admin_of_new_org(http, admin_email)
        for number, route in enumerate(ROUTES):
            caller = callers[route]
            unknown = [f"nobody-{route}-{n}@example.com" for n in range(SAMPLES + WARM_UP)]
            for n in range(WARM_UP):  # warm caches and pools; not measured
                await caller.send(route, known[SAMPLES + n])
                await caller.send(route, unknown[SAMPLES + n])
            # Strictly alternating pairs, each pair in a random (seeded) order: a burst of
            # load from elsewhere (another test worker, a collection) lasting k requests falls
            # on k/2 of each kind, not on whichever kind a shuffle happened to put there.
            rng = random.Random(SEED + number)
            order: list[tuple[str, str]] = []
            for pair in zip(known[:SAMPLES], unknown[:SAMPLES], strict=True):
                first, second = ("existing", pair[0]), ("unknown", pair[1])
                order += [first, second] if rng.random() < 0.5 else [second, first]
            times: dict[str, list[float]] = {"existing": [], "unknown": []}
            shapes: dict[str, set[Any]] = {"existing": set(), "unknown": set()}
            started = time.perf_counter()
            for kind, email in order:
                response, seconds = await timed(lambda: caller.send(route, email))  # noqa: B023
                times[kind].append(seconds)
                status, body, names, values = shape(response)
                shapes[kind].add((status, body, names, tuple(sorted(values.items()))))
            result = ks_2samp(times["existing"], times["unknown"])
            report(
                capsys,
                f"KS {request.node.callspec.id} {route}: D={result.statistic:.4f} "
                f"p={result.pvalue:.4f} (n={SAMPLES} each; median existing "
                f"{sorted(times['existing'])[SAMPLES // 2] * 1000:.2f} ms, unknown "
                f"{sorted(times['unknown'])[SAMPLES // 2] * 1000:.2f} ms; "
                f"{time.perf_counter() - started:.1f} s in all)",
            )
            if len(shapes["existing"]) != 1 or shapes["existing"] != shapes["unknown"]:
                failures.append(f"{route}: answers differ: {shapes}")
            elif next(iter(shapes["existing"]))[0] != 202:
                failures.append(f"{route}: not 202: {shapes['existing']}")
            if result.pvalue < ALPHA:
                failures.append(
                    f"{route}: response times tell the two apart (KS D={result.statistic:.3f}, "
                    f"p={result.pvalue:.2g})"
                )
    assert not failures, "\n".join(failures)


async def test_existing_and_unknown_emails_meet_the_same_limits(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    mail = {
        "email_backend": "file",
        "email_file_dir": tmp_path / "mail",
        "outbox_in_process": False,
    }
    existing, admins = "taken@example.com", ["admin1@example.com", "admin2@example.com"]
    await create_accounts(make_settings(**mail, **GENEROUS_MAIL), [existing, *admins])
    settings = make_settings(**mail, **TIGHT)

    failures: list[str] = []
    for route in ROUTES:
        # A fresh app per route: the limits' counters start from zero for each (memory
        # storage on SQLite; a new key prefix would be needed on Redis, so the peers differ).
        async with running(create_app(settings)) as app:
            answers = {}
            for index, (kind, email) in enumerate(
                (("existing", existing), ("unknown", f"nobody-{route}@example.com"))
            ):
                peer = (f"198.51.100.{10 * ROUTES.index(route) + index + 1}", 40000)
                async with client_for(app, peer) as http:
                    caller = Caller(http)
                    if route == "invitation":
                        caller = await admin_of_new_org(http, admins[index])
                    answers[kind] = [await caller.send(route, email) for _ in range(10)]
            statuses = {kind: [r.status_code for r in got] for kind, got in answers.items()}
            if statuses["existing"] != statuses["unknown"]:
                failures.append(f"{route}: statuses differ: {statuses}")
                continue
            if 429 not in statuses["existing"]:
                failures.append(f"{route}: no limit answered 429: {statuses['existing']}")
            for first, second in zip(answers["existing"], answers["unknown"], strict=True):
                if first.content != second.content or set(first.headers) != set(second.headers):
                    failures.append(
                        f"{route}: answer {first.status_code} differs: {first.content!r} "
                        f"{sorted(first.headers)} vs {second.content!r} {sorted(second.headers)}"
                    )
                    break
                if first.status_code == 429 and "retry-after" not in first.headers:
                    failures.append(f"{route}: a 429 without Retry-After")
                    break
    assert not failures, "\n".join(failures)
