"""What MFA costs: a login with a TOTP code against a password-only login, and the step-up
check on a sensitive route against a plain one.

    .venv/bin/python bench/mfa.py [--seconds 4] [--rounds 3] [--connections 64]
                                  [--concurrency 8] [--users 200]

(a) **Login with TOTP** (two requests: ``POST /auth/login`` answers ``mfa_required``, then
``POST /auth/mfa/verify`` with the ``mfa_token`` and a code computed with pyotp) against a
**password-only login**, on one ``authkeep serve`` (one worker, SQLite, rate limits and audit
off, log level WARNING). wrk cannot carry the ``mfa_token`` from one answer into the next
request on many connections, so an asyncio loop of ``--concurrency`` httpx clients drives
both variants (same client, same process: the comparison stays fair). A code is accepted
once per user and time step (replay rejection), so ``--users`` users are enrolled through
the API before the runs — as many as the password logins/s of a 1 s warm-up say the runs
will need, at most ``--users`` (their confirming code is the previous step's, which leaves
the current and the next step usable at once) — and each login takes a user whose last
accepted step is older. Reported: completed logins/s (a TOTP login counts once, for its two
requests), p50/p99 of a whole login, failures (must be 0), and the ratio.

(b) **The step-up check**: an embedding app (``bench/apps/step_up_app.py``, one uvicorn
worker, SQLite) serves ``GET /plain`` (``CurrentPrincipal``) and ``GET /sensitive``
(``RecentPrincipal``) with the same bearer token; wrk (2 threads) alternates between them.
Target: the sensitive route less than 5 % slower (the check compares claims of the verified
token and reads ``mfa_enabled`` from the user row the request loads anyway: no query).

(c) **The same check in CPU time**: both routes driven in-process (httpx's ASGI transport,
no sockets), alternating ``--cpu-rounds`` times, 300 requests each, and this process's CPU
time (``time.process_time``) per request: what the check costs, much less disturbed by
whatever else the machine runs than throughput is.

Parts (a) and (b) alternate their variants within each of ``--rounds`` rounds (``harness``:
``alternate_rounds``) and report each variant's median run. About 1¾ minutes with the
defaults (including the enrolment of the users).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    ROOT,
    TEST_SECRET,
    WrkResult,
    alternate_rounds,
    authkeep_token,
    free_port,
    median_run,
    rounds_note,
    server,
    uvicorn_command,
    wrk,
)

PASSWORD = "load-test passphrase, long enough"  # no "bench": the emails hold it
STEP = 30
PWD, TOTP = "password only", "password + TOTP"
PLAIN, SENSITIVE = "GET /plain (CurrentPrincipal)", "GET /sensitive (RecentPrincipal)"


def server_env(workdir: Path) -> dict[str, str]:
    """One server's settings: its own SQLite file, nothing that would refuse a load test."""
    return {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/bench-{uuid.uuid4().hex[:8]}.db",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_AUDIT_ENABLED": "false",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_EMAIL_VERIFICATION": "off",
    }


# --- (a) logins -------------------------------------------------------------------------------


@dataclass
class Enrolled:
    """A user with an authenticator app, and the last time step the server accepted."""

    email: str
    totp: pyotp.TOTP
    last_step: int


class CodePool:
    """Users whose next code the server will accept: a step newer than their last, within
    the ±1 step the server allows."""

    def __init__(self, users: list[Enrolled]) -> None:
        self.users = users
        self._next = 0
        self.dry = 0

    def take(self) -> tuple[str, str] | None:
        """A user and a code to sign in with now, or None if every user is spent."""
        now = int(time.time()) // STEP
        for _ in range(len(self.users)):
            user = self.users[self._next]
            self._next = (self._next + 1) % len(self.users)
            step = max(user.last_step + 1, now)
            if step <= now + 1:
                user.last_step = step
                return user.email, user.totp.at(step * STEP)
        self.dry += 1
        return None


async def _enrol(http: httpx.AsyncClient, email: str) -> Enrolled:
    """Register ``email``, sign in, set up and confirm an authenticator app."""
    body = {"email": email, "password": PASSWORD}
    (await http.post("/api/v1/auth/register", json=body)).raise_for_status()
    login = await http.post("/api/v1/auth/login", json=body)
    login.raise_for_status()
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    setup = await http.post("/api/v1/auth/mfa/totp/setup", headers=auth)
    setup.raise_for_status()
    totp = pyotp.TOTP(setup.json()["secret"])
    # The previous step's code (within the skew): the current and next steps stay usable.
    previous = int(time.time()) // STEP - 1
    code = {"code": totp.at(previous * STEP)}
    confirm = await http.post("/api/v1/auth/mfa/totp/confirm", json=code, headers=auth)
    confirm.raise_for_status()
    return Enrolled(email, totp, previous)


async def enrol_users(base: str, count: int, concurrency: int) -> list[Enrolled]:
    """``count`` users with an authenticator app, enrolled through the API."""
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient) -> Enrolled:
        async with gate:
            return await _enrol(http, f"mfa-{uuid.uuid4().hex[:10]}@example.com")

    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        return list(await asyncio.gather(*(one(http) for _ in range(count))))


async def _login_once(http: httpx.AsyncClient, email: str, code: str | None) -> bool:
    body = {"email": email, "password": PASSWORD}
    first = await http.post("/api/v1/auth/login", json=body)
    if first.status_code != 200:
        return False
    answer = first.json()
    if code is None:
        return "access_token" in answer
    if not answer.get("mfa_required"):
        return False
    second = await http.post(
        "/api/v1/auth/mfa/verify", json={"mfa_token": answer["mfa_token"], "code": code}
    )
    return second.status_code == 200 and "access_token" in second.json()


async def _login_loop(
    base: str, seconds: float, concurrency: int, next_login: Callable[[], tuple[str, str | None]]
) -> WrkResult:
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            try:
                email, code = next_login()
            except LookupError:
                await asyncio.sleep(0.05)
                continue
            started = time.perf_counter()
            ok = await _login_once(http, email, code)
            latencies.append((time.perf_counter() - started) * 1000)
            failures += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    ordered = sorted(latencies) or [0.0]
    return WrkResult(
        requests_per_second=len(latencies) / elapsed,
        p50_ms=ordered[len(ordered) // 2],
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        requests=len(latencies),
        errors=failures,
    )


def measure_logins(
    base: str, *, max_users: int, seconds: int, rounds: int, concurrency: int
) -> tuple[dict[str, list[WrkResult]], int, int]:
    """Password-only and TOTP logins in alternating rounds; also how many users were
    enrolled and how often the code pool ran dry (a worker waited for a user)."""
    plain_user = f"pwd-{uuid.uuid4().hex[:10]}@example.com"
    authkeep_token(base, plain_user, PASSWORD)

    def password_login() -> tuple[str, str | None]:
        return plain_user, None

    # Enough users for the measured TOTP logins at the rate this machine manages now (each
    # user has two codes at once, then one more per 30 s step), never more than asked.
    rate = asyncio.run(_login_loop(base, 1, concurrency, password_login)).requests_per_second
    wanted = int(rate * (rounds * seconds + 1) * 1.2 / 2) + 1
    pool = CodePool(asyncio.run(enrol_users(base, min(max_users, wanted), concurrency)))

    def totp_login() -> tuple[str, str | None]:
        taken = pool.take()
        if taken is None:
            raise LookupError("every user's next code is spent")
        return taken

    asyncio.run(_login_loop(base, 1, concurrency, totp_login))  # warm-up
    flows = {PWD: password_login, TOTP: totp_login}
    measurements = {
        name: functools.partial(
            lambda flow: asyncio.run(_login_loop(base, seconds, concurrency, flow)), flow
        )
        for name, flow in flows.items()
    }
    return alternate_rounds(measurements, rounds), len(pool.users), pool.dry


@contextlib.contextmanager
def authkeep_server(workdir: Path) -> Iterator[str]:
    """``authkeep serve`` (one worker) on its own SQLite file."""
    port = free_port()
    command = [sys.executable, "-m", "authkeep", "serve", "--port", str(port)]
    with server(command, port=port, env=server_env(workdir), cwd=workdir) as base:
        yield base


# --- (b) the step-up check --------------------------------------------------------------------


@contextlib.contextmanager
def embedding_server(workdir: Path) -> Iterator[str]:
    """``bench/apps/step_up_app.py`` under uvicorn (one worker), its database migrated."""
    env = server_env(workdir)
    subprocess.run(
        [sys.executable, "-m", "authkeep", "migrate"],
        env={**os.environ, **env},
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    port = free_port()
    command = uvicorn_command("apps.step_up_app:build_app", port, factory=True)
    with server(command, port=port, env=env, cwd=ROOT / "bench") as base:
        yield base


def measure_check(
    base: str, *, seconds: int, rounds: int, connections: int
) -> dict[str, list[WrkResult]]:
    """wrk on ``/plain`` and ``/sensitive`` with one token, in alternating rounds."""
    token = authkeep_token(base, f"step-{uuid.uuid4().hex[:10]}@example.com", PASSWORD)
    auth = {"Authorization": f"Bearer {token}"}
    urls = {PLAIN: base + "/plain", SENSITIVE: base + "/sensitive"}
    for url in urls.values():
        assert httpx.get(url, headers=auth).status_code == 200, url
        wrk(url, seconds=1, connections=connections, headers=auth)  # warm-up
    measurements = {
        name: functools.partial(wrk, url, seconds=seconds, connections=connections, headers=auth)
        for name, url in urls.items()
    }
    return alternate_rounds(measurements, rounds)


async def _cpu_per_request(workdir: Path, rounds: int, requests: int) -> dict[str, list[float]]:
    """CPU microseconds of this process per request to each route, in-process (httpx's ASGI
    transport), the two routes alternating ``rounds`` times, ``requests`` each time."""
    from apps.step_up_app import build_app

    from authkeep import Settings
    from authkeep.db.engine import Database
    from authkeep.db.migrate import upgrade

    env = server_env(workdir)
    url = env["AUTHKEEP_DATABASE_URL"]
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.close()
    settings = Settings(
        _env_file=None,
        env="test",
        secret_key=TEST_SECRET,
        database_url=url,
        log_level="ERROR",  # its start-up warnings would land in the report
        audit_enabled=False,
        rate_limit_enabled=False,
        email_verification="off",
        outbox_in_process=False,
        public_url="https://app.example.com",
    )
    app = build_app(settings)
    transport = httpx.ASGITransport(app=app)
    runs: dict[str, list[float]] = {"/plain": [], "/sensitive": []}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
    ):
        body = {"email": "cpu@example.com", "password": PASSWORD}
        (await http.post("/api/v1/auth/register", json=body)).raise_for_status()
        login = await http.post("/api/v1/auth/login", json=body)
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for _ in range(rounds + 1):  # the first round warms up
            for path, found in runs.items():
                began = time.process_time()
                for _ in range(requests):
                    if (await http.get(path, headers=auth)).status_code != 200:
                        raise RuntimeError(f"{path} refused the token")
                found.append((time.process_time() - began) / requests * 1e6)
    return {path: found[1:] for path, found in runs.items()}


def _table(
    title: str, runs: dict[str, list[WrkResult]], unit: str
) -> tuple[str, WrkResult, WrkResult]:
    """A table of each variant's median run (errors: over every run), and the two medians."""
    names = list(runs)
    medians = {name: median_run(runs[name]) for name in names}
    lines = [title, f"{'':34} {unit:>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}"]
    for name in names:
        best = medians[name]
        errors = sum(run.errors for run in runs[name])
        lines.append(
            f"{name:34} {best.requests_per_second:10.1f} {best.p50_ms:9.2f} "
            f"{best.p99_ms:9.2f} {errors:7d}"
        )
    return "\n".join(lines), medians[names[0]], medians[names[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64, help="wrk, part (b)")
    parser.add_argument("--concurrency", type=int, default=8, help="login loop, part (a)")
    parser.add_argument("--cpu-rounds", type=int, default=6, help="part (c)")
    parser.add_argument(
        "--users", type=int, default=400, help="at most this many enrolled users, part (a)"
    )
    args = parser.parse_args()

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-mfa-") as tmp:
        workdir = Path(tmp)
        with authkeep_server(workdir) as base:
            logins, enrolled, dry = measure_logins(
                base,
                max_users=args.users,
                seconds=args.seconds,
                rounds=args.rounds,
                concurrency=args.concurrency,
            )
        with embedding_server(workdir) as base:
            check = measure_check(
                base, seconds=args.seconds, rounds=args.rounds, connections=args.connections
            )

        cpu = asyncio.run(_cpu_per_request(workdir, args.cpu_rounds, 300))

    note = rounds_note(args.rounds)
    text, pwd, totp = _table(
        f"(a) login, {args.concurrency} concurrent clients, {args.seconds} s runs, {note}",
        logins,
        "logins/s",
    )
    print(text)
    print(
        f"TOTP login / password login: {totp.requests_per_second / pwd.requests_per_second:.2f}"
        f" (throughput), p50 {totp.p50_ms / pwd.p50_ms:.2f}x; {enrolled} users enrolled, "
        f"their codes ran out {dry} times"
    )
    print()
    text, plain, sensitive = _table(
        f"(b) step-up check, wrk {args.connections} connections, {args.seconds} s runs, {note}",
        check,
        "req/s",
    )
    print(text)
    slower = 1 - sensitive.requests_per_second / plain.requests_per_second
    print(
        f"/sensitive vs /plain: {slower * 100:+.1f} % slower "
        f"(target < 5 %: {'met' if slower < 0.05 else 'NOT met'})"
    )
    print()
    plain_cpu, sensitive_cpu = (statistics.median(cpu[path]) for path in ("/plain", "/sensitive"))
    print(
        f"(c) CPU per request in-process (median of {args.cpu_rounds} alternating rounds of "
        f"300): /plain {plain_cpu:.0f} us, /sensitive {sensitive_cpu:.0f} us, "
        f"{(sensitive_cpu / plain_cpu - 1) * 100:+.1f} %"
    )
    print(f"\n{time.monotonic() - began:.0f} s in all")


if __name__ == "__main__":
    main()
