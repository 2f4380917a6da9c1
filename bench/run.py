"""authkeep's headline benchmarks, written to bench/RESULTS.md.

    make bench            (or: .venv/bin/python bench/run.py [--seconds 5] [--rounds 3])

Everything runs in one go on this machine, on loopback, each server a separate process with
one uvicorn worker, load from wrk (2 threads) in another process, bounded in time:

1. Authenticated read (``GET /api/v1/auth/me`` with a bearer token) through authkeep's full
   stack on PostgreSQL + Redis, against (a) a bare FastAPI route with no security, (b) a
   minimal FastAPI route that only verifies the JWT (the floor of any JWT service) and
   (c) fastapi-users' ``/users/me`` with its JWT strategy on the same PostgreSQL server
   (its own virtual environment: it pins older pwdlib and SQLAlchemy).
2. Login throughput against the hashing limit (cores ÷ argon2 time), authkeep and
   fastapi-users.
3. ``/health`` latency during a login storm (event-loop responsiveness).
4. The cost of each layer (headers, request id + access log, rate limit, revocation check,
   audit), as the throughput ratio of the same request without that layer.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    BENCH_DATA_KEYS,
    FIRST_NON_2XX_LUA,
    REDIS,
    ROOT,
    TEST_SECRET,
    WrkResult,
    alternate_rounds,
    authkeep_token,
    free_port,
    median_run,
    pg,
    pg_url,
    server,
    uvicorn_command,
    wrk,
)

BENCH = Path(__file__).resolve().parent
FU_VENV = BENCH / ".venv-fastapi-users"
PASSWORD = "load-test passphrase, long enough"  # no "bench": the emails hold it

LOGIN_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email": "%s", "password": "%s"}'
"""
FU_LOGIN_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "username=%s&password=%s"
"""


FULL = "authkeep, full stack (PostgreSQL + Redis, rate limiter off)"
FLOOR = "FastAPI route that only verifies the JWT"
BARE = "bare FastAPI route, no security"
FU = "fastapi-users /users/me (JWT strategy, PostgreSQL)"
# (BENCH_WITHOUT value, layer name): see apps/authkeep_layers.py.
LAYERS = (
    ("headers", "security headers"),
    ("request_context", "request id + access log"),
    ("revocation", "revocation check"),
    ("token_memory", "verified-token memory"),
)
RATE_LIMITED_LAYER = "rate limit (Redis storage)"
RATE_LIMIT_ON = {
    "AUTHKEEP_RATE_LIMIT_ENABLED": "true",
    "AUTHKEEP_RATE_LIMIT_PER_MINUTE": "100000000",
}


@dataclass
class Target:
    """One server of the read comparison."""

    name: str
    app: str
    env: dict[str, str]
    factory: bool = False
    python: Path | None = None

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        port = free_port()
        cmd = uvicorn_command(self.app, port, factory=self.factory)
        if self.python is not None:
            cmd = [str(self.python), *cmd[1:]]
        with server(cmd, port=port, env=self.env, cwd=BENCH) as base:
            yield base


def alternate(
    bases: dict[str, str], headers: dict[str, dict[str, str]], *, rounds: int, seconds: int
) -> dict[str, WrkResult]:
    """wrk on each server's ``/me`` in turn, ``rounds`` times; per server, the run with the
    median throughput. On a shared machine the speed of the CPU drifts by ±10 % from one
    minute to the next: alternating the servers spreads that drift over all of them."""
    paths = {name: "/users/me" if name == FU else "/api/v1/auth/me" for name in bases}
    for name, base in bases.items():  # warm-up
        wrk(base + paths[name], seconds=2, headers=headers[name])
    runs = alternate_rounds(
        {
            name: functools.partial(wrk, base + paths[name], seconds=seconds, headers=headers[name])
            for name, base in bases.items()
        },
        rounds,
    )
    return {name: median_run(results) for name, results in runs.items()}


def fastapi_users_token(base: str, email: str) -> str:
    httpx.post(base + "/auth/register", json={"email": email, "password": PASSWORD})
    login = httpx.post(base + "/auth/jwt/login", data={"username": email, "password": PASSWORD})
    login.raise_for_status()
    return str(login.json()["access_token"])


@dataclass
class Row:
    name: str
    result: WrkResult
    note: str = ""


def authkeep_env(database: str, **extra: str) -> dict[str, str]:
    env = {
        "AUTHKEEP_ENV": "development",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATA_KEYS": BENCH_DATA_KEYS,
        "AUTHKEEP_DATABASE_URL": pg_url(database),
        "AUTHKEEP_REDIS_URL": REDIS,
        "AUTHKEEP_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_TRUSTED_HOSTS": '["127.0.0.1", "localhost"]',
    }
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "authkeep", "migrate"],
        env={**os.environ, **env},
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


def _bench_hasher() -> Any:
    from pwdlib.hashers.argon2 import Argon2Hasher

    from authkeep.settings import Settings

    s = Settings(env="test", secret_key=TEST_SECRET)
    return Argon2Hasher(
        time_cost=s.argon2_time_cost,
        memory_cost=s.argon2_memory_kib,
        parallelism=s.argon2_parallelism,
    )


def hash_seconds() -> float:
    """Median time of one argon2id verification with authkeep's default parameters."""
    hasher = _bench_hasher()
    stored = hasher.hash(PASSWORD)
    samples = []
    for _ in range(30):
        started = time.perf_counter()
        hasher.verify(PASSWORD, stored)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def parallel_hash_rate(threads: int, seconds: float = 3.0) -> float:
    """Verifications per second of ``threads`` threads hashing with nothing else to do:
    what the cores really deliver (argon2-cffi releases the GIL), as opposed to the
    arithmetic of cores ÷ hash time."""
    hasher = _bench_hasher()
    stored = hasher.hash(PASSWORD)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def work(index: int) -> None:
        while time.monotonic() < stop:
            hasher.verify(PASSWORD, stored)
            counts[index] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / seconds


# A health checker asks now and then; one that asks as fast as it can is a second load
# that takes event-loop time from the logins it is meant to watch. 4 connections, each
# waiting 50 ms after every answer: at most 80 probes/s.
PROBE_LUA = "function delay() return 50 end"


def storm_and_probe(
    base: str, login_url: str, lua: str, seconds: int
) -> tuple[WrkResult, WrkResult]:
    """A login storm (64 connections) and, at the same time, /health probed at a
    health checker's pace; after a warm-up storm that fills the connection pools."""
    results: dict[str, WrkResult] = {}
    wrk(login_url, seconds=2, connections=64, script=lua)  # warm-up

    def storm() -> None:
        results["storm"] = wrk(login_url, seconds=seconds, connections=64, script=lua)

    thread = threading.Thread(target=storm)
    thread.start()
    time.sleep(1.0)  # let the storm saturate the hashing workers first
    results["health"] = wrk(
        base + "/health",
        seconds=max(2, seconds - 2),
        connections=4,
        threads=1,
        script=PROBE_LUA,
    )
    thread.join()
    return results["storm"], results["health"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating read rounds")
    parser.add_argument("--output", default=str(BENCH / "RESULTS.md"))
    args = parser.parse_args()
    secs = args.seconds
    rows: list[Row] = []
    layer_rows: list[tuple[str, float, float]] = []
    facts: dict[str, Any] = {}

    database = f"authkeep_bench_{uuid.uuid4().hex[:8]}"
    fu_database = f"fu_bench_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE DATABASE "{database}"')
    pg(f'CREATE DATABASE "{fu_database}"')
    try:
        env = authkeep_env(database)
        migrate(env)
        email = "bench@example.com"

        # 1 + 4. authenticated read: every server up at once, measured in alternating rounds.
        fu_python = FU_VENV / "bin" / "python"
        fu_env = {"FU_DATABASE_URL": pg_url(fu_database), "AUTHKEEP_SECRET_KEY": TEST_SECRET}
        secret_only = {"AUTHKEEP_SECRET_KEY": TEST_SECRET}
        layered = "apps.authkeep_layers:create"
        targets = [
            Target(FULL, "authkeep.http.app:create_app", env, factory=True),
            Target(FLOOR, "apps.jwt_only:app", secret_only),
            Target(BARE, "apps.bare:app", secret_only),
            Target("layers: everything", layered, env, factory=True),
            *(
                Target(f"layers: without {name}", layered, {**env, "BENCH_WITHOUT": key}, True)
                for key, name in LAYERS
            ),
            Target(
                "layers: rate limit on (Redis storage)",
                "authkeep.http.app:create_app",
                {**env, **RATE_LIMIT_ON},
                factory=True,
            ),
        ]
        if fu_python.exists():
            targets.append(Target(FU, "apps.fastapi_users_app:app", fu_env, python=fu_python))
        else:
            facts["fu_missing"] = True
        with contextlib.ExitStack() as stack:
            bases = {t.name: stack.enter_context(t.serve()) for t in targets}
            token = authkeep_token(bases[FULL], email, PASSWORD)
            headers = {name: {"Authorization": f"Bearer {token}"} for name in bases}
            if FU in bases:
                headers[FU] = {"Authorization": f"Bearer {fastapi_users_token(bases[FU], email)}"}
            reads = alternate(bases, headers, rounds=args.rounds, seconds=secs)
            if FU in bases:
                storm, health = storm_and_probe(
                    bases[FU],
                    bases[FU] + "/auth/jwt/login",
                    FU_LOGIN_LUA % (email, PASSWORD),
                    2 * secs,
                )
                facts["fu_login_rps"] = storm.requests_per_second
                facts["fu_health_p99"] = health.p99_ms
        rows = [Row(name, reads[name]) for name in (FULL, FLOOR, BARE, FU) if name in reads]
        everything = reads["layers: everything"].requests_per_second
        for _key, name in LAYERS:
            without = reads[f"layers: without {name}"].requests_per_second
            layer_rows.append((name, without, everything))
        rate_limited = reads["layers: rate limit on (Redis storage)"].requests_per_second
        layer_rows.append((RATE_LIMITED_LAYER, reads[FULL].requests_per_second, rate_limited))

        # 2 + 3. login throughput and /health during the storm.
        facts["hash_ms"] = hash_seconds() * 1000
        facts["cores"] = os.cpu_count() or 1
        facts["hash_limit"] = facts["cores"] / (facts["hash_ms"] / 1000)
        facts["hash_parallel"] = parallel_hash_rate(facts["cores"])
        port = free_port()
        with server(
            uvicorn_command("authkeep.http.app:create_app", port, factory=True), port=port, env=env
        ) as base:
            storm, health = storm_and_probe(
                base,
                base + "/api/v1/auth/login",
                LOGIN_LUA % (email, PASSWORD) + FIRST_NON_2XX_LUA,
                2 * secs,
            )
            facts["login_rps"] = storm.requests_per_second
            facts["login_errors"] = storm.errors
            facts["login_error_detail"] = storm.detail
            facts["health_p99"] = health.p99_ms
            facts["health_p50"] = health.p50_ms

    finally:
        pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        pg(f'DROP DATABASE IF EXISTS "{fu_database}" WITH (FORCE)')

    write(Path(args.output), rows, layer_rows, facts, secs, args.rounds)
    reports: dict[str, str] = {}
    with Path(args.output).open("a") as out:
        for script, title, extra in (
            ("audit.py", "Audit log cost (login and an audited write, PostgreSQL)", ()),
            ("rate_limit.py", "Rate limiter cost (memory and Redis storage)", ()),
            ("workers.py", "Read throughput by worker count (PostgreSQL + Redis)", ()),
            (
                "login_cpu.py",
                "Where a login's CPU goes (PostgreSQL + Redis, limiter and audit on)",
                ("--profile", "--profile-out", str(Path(tempfile.mkdtemp()) / "login.json")),
            ),
        ):
            seconds = ("--seconds", str(max(3, secs)))
            rounds = () if script == "login_cpu.py" else ("--rounds", str(args.rounds))
            # Each prints its own table; kept verbatim, measured in this same run.
            result = subprocess.run(
                [sys.executable, str(BENCH / script), *seconds, *rounds, *extra],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            reports[script] = result.stdout
            shown = "\n".join(
                line for line in result.stdout.strip().splitlines() if not line.startswith("{")
            )
            out.write(f"\n## {title}: `bench/{script}`\n\n```\n{shown}\n```\n")
        out.write(target_table(rows, layer_rows, facts, reports))
        scale = BENCH / "scale-results.md"
        if scale.exists():
            out.write(
                "\n## Production shape (1,000,000 users): `bench/scale.py`\n\n" + scale.read_text()
            )
    print(Path(args.output).read_text())


def target_table(
    rows: list[Row],
    layers: list[tuple[str, float, float]],
    facts: dict[str, Any],
    reports: dict[str, str],
) -> str:
    """Issue 18's targets, each with this run's figure and whether it was met."""
    found: list[tuple[str, str, bool | None]] = []
    by_name = {row.name: row.result for row in rows}
    limited = next((layer for layer in layers if layer[0] == RATE_LIMITED_LAYER), None)
    floor = by_name.get(FLOOR)
    if floor and limited:
        share = limited[2] / floor.requests_per_second
        found.append(
            ("read, everything on, ≥ 75 % of the JWT-only floor", f"{share:.0%}", share >= 0.75)
        )
        kept = limited[2] / limited[1]
        found.append(
            ("read, limiter on, ≥ 90 % of the same stack with it off", f"{kept:.0%}", kept >= 0.90)
        )
    cpu = re.search(r'"ms_outside_hash": ([\d.]+)', reports.get("login_cpu.py", ""))
    if cpu:
        ms = float(cpu.group(1))
        found.append(("login CPU outside the hash ≤ 3 ms", f"{ms:.1f} ms", ms <= 3.0))
    share = facts["login_rps"] / facts["hash_parallel"]
    found.append(
        ("login ≥ 85 % of threads doing nothing but argon2 verify", f"{share:.0%}", share >= 0.85)
    )
    audit = re.search(
        r"^postgres\s+login\s+\d+\s+\d+\s+([\d.]+)", reports.get("audit.py", ""), re.M
    )
    if audit:
        ratio = float(audit.group(1))
        found.append(("the audit log ≤ 10 % on login", f"on ÷ off {ratio:.2f}", ratio >= 0.90))
    scaling = {
        (limiter, int(workers)): float(rate.replace(",", ""))
        for limiter, workers, rate in re.findall(
            r"^(off|on \(Redis\))\s+(\d)\s+([\d,]+)", reports.get("workers.py", ""), re.M
        )
    }
    for limiter in ("off", "on (Redis)"):
        one, two = scaling.get((limiter, 1)), scaling.get((limiter, 2))
        if one and two:
            found.append(
                (
                    f"2 workers not slower than 1 (limiter {limiter})",
                    f"{two / one:.2f}×",
                    two >= one,
                )
            )
    lines = [
        "",
        "## Targets (issue 18), this run",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for label, figure, met in found:
        lines.append(f"| {label} | {figure} | {'yes' if met else '**no**'} |")
    lines += [
        "",
        'Where a target is not met, bench/README.md ("Login: where the CPU goes") has the '
        "profile and what it would take. The production-shape targets are below.",
        "",
    ]
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    )


def write(
    path: Path,
    rows: list[Row],
    layers: list[tuple[str, float, float]],
    facts: dict[str, Any],
    seconds: int,
    rounds: int,
) -> None:
    by_name = {row.name: row.result for row in rows}
    full = rows[0].result
    floor = by_name.get(FLOOR)
    fu = next((r.result for r in rows if r.name.startswith("fastapi-users")), None)
    lines = [
        "# Benchmark results",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        "- method: one uvicorn worker per server, wrk 2 threads, 64 connections, loopback; "
        "PostgreSQL 15 and Redis 7 local. Reads: every server of the read tables up at once, "
        f"{rounds} rounds of {seconds} s per server, servers alternating within each round, "
        "the median run reported (the CPU's speed drifts here from one minute to the next). "
        f"Login storms: {2 * seconds} s. "
        "Command: `make bench`.",
        "",
        "## Authenticated read (`GET /api/v1/auth/me`)",
        "",
        "| server | req/s | p50 ms | p99 ms | errors | vs authkeep |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        r = row.result
        ratio = full.requests_per_second / r.requests_per_second if r.requests_per_second else 0
        lines.append(
            f"| {row.name} | {r.requests_per_second:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.errors} | {ratio:.2f}× |"
        )
    lines.append("")
    if floor:
        lines.append(
            f"- authkeep keeps **{full.requests_per_second / floor.requests_per_second:.0%}** "
            "of the "
            "JWT-only floor's throughput (target ≥ 75%)."
        )
    limited = next((layer for layer in layers if layer[0] == RATE_LIMITED_LAYER), None)
    if floor and limited and limited[1]:
        # The same stack with the global limit on Redis (per-user key), as production runs.
        lines.append(
            f"- with the rate limiter on (Redis storage; revocation and audit on as above): "
            f"**{limited[2] / floor.requests_per_second:.0%}** of the floor (target ≥ 75%), "
            f"**{limited[2] / limited[1]:.0%}** of the same stack with it off (target ≥ 90%)."
        )
    if fu:
        lines.append(
            f"- authkeep is **{full.requests_per_second / fu.requests_per_second:.1f}×** "
            "fastapi-users' `/users/me` (target ≥ 3×)."
        )
    lines += [
        "",
        "## Login throughput and event-loop responsiveness",
        "",
        f"- argon2id verify (19 MiB, t=2, p=1): {facts['hash_ms']:.1f} ms median; hashing limit = "
        f"{facts['cores']} cores ÷ hash time = **{facts['hash_limit']:.0f} logins/s**; "
        f"{facts['cores']} threads doing nothing but verify reach "
        f"{facts['hash_parallel']:.0f}/s.",
        f"- authkeep: **{facts['login_rps']:.0f} logins/s** = "
        f"**{facts['login_rps'] / facts['hash_limit']:.0%}** of the limit (target ≥ 85%); "
        f"non-2xx during the storm: {facts['login_errors']}"
        f"{' (' + facts['login_error_detail'] + ')' if facts['login_errors'] else ''}; "
        f"{facts['login_rps'] / facts['hash_parallel']:.0%} of what the threads alone reach "
        "(hashing, event loop, PostgreSQL and wrk share the cores; see bench/README.md).",
        f"- `/health` during that storm: p50 {facts['health_p50']:.1f} ms, "
        f"**p99 {facts['health_p99']:.1f} ms** (target < 50 ms).",
    ]
    if "fu_login_rps" in facts:
        lines.append(
            f"- fastapi-users: {facts['fu_login_rps']:.0f} logins/s; `/health` p99 during its "
            f"storm {facts['fu_health_p99']:.0f} ms (it hashes on the event loop)."
        )
    lines += [
        "",
        "## Cost of each layer (authenticated read)",
        "",
        "| layer | req/s without | req/s with | cost |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, without, with_layer in layers:
        cost = 1 - with_layer / without if without else 0
        lines.append(f"| {label} | {without:,.0f} | {with_layer:,.0f} | {cost:+.1%} |")
    lines += [
        "",
        "The rate limiter is off in the main comparison and priced on its own here and "
        "below; audit writing does not happen on a read and is priced below.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
