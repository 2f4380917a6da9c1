"""Costs at production shape: the same requests against an empty database and one with a
million users, two million sessions and ten million audit rows; ``authkeep purge`` of a
million ended sessions under a login load; ``authkeep audit verify`` over the whole log.

    .venv/bin/python bench/scale.py [--seconds 5] [--rounds 3] [--seed]
        [--users 1000000 --sessions 2000000 --expired 1000000 --audit 10000000 --orgs 100]
        [--skip-ratios] [--skip-purge] [--skip-verify]

The large database is ``--database`` (default ``authkeep_scale``), filled by
``bench/scale_seed.py`` (COPY) when it does not exist or with ``--seed``; it is kept between
runs (seeding the full size takes a quarter of an hour). Its sessions are seeded again
(``scale_seed.reseed_sessions``) first when an earlier run purged the ended ones. The small one
(``authkeep_scale_empty``) is made afresh each run: migrated, 100 accounts and 1,000 audit rows
(enough for a deep page). Both are migrated to head by ``authkeep migrate`` first.

1. **Flat costs**: two servers (``uvicorn … create_app``, one worker each, PostgreSQL + Redis,
   rate limiter off, audit on), one per database, up at the same time; wrk alternates between
   them (``harness.alternate_rounds``): login (16 connections: what a login costs, not how long
   it queues), ``GET /api/v1/auth/me``, and ``GET /api/v1/audit`` — the first page and a deep
   one (a cursor half-way through the ids) of 100 rows, as a platform admin (each such read is
   itself audited: one more row per request). Each reports its median run; target: the large
   database within 10 % of the empty one (requests/s).
2. **Purge under load**: one server on the large database; a login load (16 connections) runs
   in back-to-back runs of ``--seconds`` before, during and after the purge of the ended
   sessions — ``Sessions.purge`` in a process of its own, the step of ``authkeep purge`` that
   deletes sessions and refresh tokens, in transactions of ``PURGE_BATCH`` rows. Reported:
   rows per second of the purge and login p50/p99 before, during (every run that lay wholly
   inside the purge: median and worst) and after.
3. **Verify**: ``authkeep audit verify`` (``--no-progress``) over the whole large log as a
   separate process: its rows per second (from its own report) and its peak RSS
   (``os.wait4``'s ``ru_maxrss``). Target: at least 200,000 rows/s, memory flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_seed
from harness import (
    PG_ADMIN,
    ROOT,
    WrkResult,
    alternate_rounds,
    authkeep_token,
    free_port,
    header,
    median_run,
    rounds_note,
    server,
    uvicorn_command,
    wrk,
)

EMPTY = "authkeep_scale_empty"
PASSWORD = "load-test passphrase, long enough"  # no "bench": the emails hold it
ADMIN = "scale-admin@example.com"
READER = "scale-reader@example.com"
LOGIN_CONNECTIONS = 16
LOGIN_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
"""
# The session-purge step of ``authkeep purge``, alone (the command's other steps have their
# own costs and are not what this measures).
PURGE_SCRIPT = """
import asyncio, time
from authkeep.settings import Settings
from authkeep.wiring import running

async def main():
    async with running(Settings()) as services:
        print("started", flush=True)
        started = time.perf_counter()
        sessions, tokens = await services.sessions.purge()
        print(sessions, tokens, time.perf_counter() - started)

asyncio.run(main())
"""


def _fetch(database: str, sql: str) -> object:
    import asyncpg

    async def run() -> object:
        conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + database)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def _number(database: str, sql: str) -> int:
    value = _fetch(database, sql)
    return 0 if value is None else int(value)  # type: ignore[call-overload]


def _exists(database: str) -> bool:
    return bool(
        _fetch("postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{database}'")
    )


def _authkeep(database: str, *args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "authkeep", *args],
        env={**os.environ, **scale_seed.scale_env(database), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"authkeep {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def prepare(args: argparse.Namespace) -> None:
    """The large database (seeded if missing or asked) and a fresh small one, at head."""
    if args.seed or not _exists(args.database):
        print(f"seeding {args.database} (scale_seed.py)…", flush=True)
        started = time.perf_counter()
        scale_seed.create_and_migrate(args.database)
        timings = asyncio.run(
            scale_seed.seed(
                args.database,
                users=args.users,
                sessions=args.sessions,
                expired=args.expired,
                audit=args.audit,
                orgs=args.orgs,
            )
        )
        phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
        print(f"seeded in {time.perf_counter() - started:.0f} s ({phases})")
    else:
        _authkeep(args.database, "migrate")
        if purgeable(args.database) < args.expired * 0.9:
            # An earlier run purged them: the comparison and the purge need them back.
            print("re-seeding the sessions (an earlier run purged them)…", flush=True)
            asyncio.run(
                scale_seed.reseed_sessions(
                    args.database, sessions=args.sessions, expired=args.expired
                )
            )
    scale_seed.create_and_migrate(EMPTY)
    asyncio.run(scale_seed.seed(EMPTY, users=100, sessions=0, expired=0, audit=1000, orgs=2))


def sizes(database: str) -> str:
    counts = {
        table: _number(database, f"SELECT count(*) FROM {table}")
        for table in ("users", "auth_sessions", "audit_log")
    }
    return ", ".join(f"{count:,} {table}" for table, count in counts.items())


@contextlib.contextmanager
def serve(database: str) -> Iterator[str]:
    port = free_port()
    with server(
        uvicorn_command("authkeep.http.app:create_app", port, factory=True),
        port=port,
        env=scale_seed.scale_env(database),
    ) as base:
        yield base


def accounts(database: str, base: str) -> tuple[str, str]:
    """(the reader's access token, the platform admin's), made through authkeep itself."""
    _authkeep(database, "create-admin", "--email", ADMIN, AUTHKEEP_ADMIN_PASSWORD=PASSWORD)
    reader = authkeep_token(base, READER, PASSWORD)
    admin = authkeep_token(base, ADMIN, PASSWORD)
    return reader, admin


def deep_cursor(database: str) -> str:
    """A cursor half-way through the audit log's ids."""
    from authkeep.services.audit_admin import encode_cursor

    low = _number(database, "SELECT min(id) FROM audit_log")
    high = _number(database, "SELECT max(id) FROM audit_log")
    return encode_cursor((low + high) // 2)


def flat_costs(args: argparse.Namespace) -> None:
    labels = {EMPTY: "empty", args.database: "large"}
    measures: dict[tuple[str, str], Callable[[], WrkResult]] = {}
    with contextlib.ExitStack() as stack:
        for database in labels:
            base = stack.enter_context(serve(database))
            reader, admin = accounts(database, base)
            login = LOGIN_LUA % json.dumps({"email": READER, "password": PASSWORD})
            reads = {
                "GET /auth/me": ("/api/v1/auth/me", reader),
                "GET /audit, first page": ("/api/v1/audit?limit=100", admin),
                "GET /audit, deep page": (
                    f"/api/v1/audit?limit=100&cursor={deep_cursor(database)}",
                    admin,
                ),
            }
            scenarios: dict[str, Callable[..., WrkResult]] = {
                "login": functools.partial(
                    wrk, base + "/api/v1/auth/login", connections=LOGIN_CONNECTIONS, script=login
                ),
                **{
                    name: functools.partial(
                        wrk, base + path, headers={"Authorization": f"Bearer {token}"}
                    )
                    for name, (path, token) in reads.items()
                },
            }
            for name, run in scenarios.items():
                run(seconds=1)  # warm-up: pools, caches
                measures[(name, labels[database])] = functools.partial(run, seconds=args.seconds)
        # Each scenario on the two databases back to back: the pair shares the minute's load.
        scenarios_in_order = list(dict.fromkeys(name for name, _ in measures))
        paired = {
            key: measures[key]
            for key in sorted(measures, key=lambda k: (scenarios_in_order.index(k[0]), k[1]))
        }
        runs = alternate_rounds(paired, args.rounds)
    print(
        f"1. flat costs: empty ({sizes(EMPTY)}) vs large ({sizes(args.database)}); "
        f"{rounds_note(args.rounds)}, wrk {args.seconds} s, login {LOGIN_CONNECTIONS} connections, "
        "reads 64"
    )
    print(f"{'scenario':26} {'db':6} {header()}  large/empty")
    for scenario in dict.fromkeys(name for name, _ in runs):
        empty, large = (median_run(runs[(scenario, label)]) for label in ("empty", "large"))
        ratio = large.requests_per_second / empty.requests_per_second
        verdict = "met" if ratio >= 0.90 else "NOT met"
        errors = sum(r.errors for label in ("empty", "large") for r in runs[(scenario, label)])
        print(f"{scenario:26} {'empty':6} {empty.row()}")
        print(
            f"{scenario:26} {'large':6} {large.row()}  {ratio:.2f} req/s, "
            f"p50 {large.p50_ms / empty.p50_ms:.2f}× (target ≥ 0.90: {verdict}; "
            f"non-2xx over all runs: {errors})"
        )
    print()


def purgeable(database: str) -> int:
    return _number(
        database,
        "SELECT count(*) FROM auth_sessions WHERE expires_at <= now() - interval '1 hour' "
        "OR revoked_at < now() - interval '1 hour'",
    )


def purge_under_load(args: argparse.Namespace) -> None:
    doomed = purgeable(args.database)
    shape = sizes(args.database)
    with serve(args.database) as base:
        accounts(args.database, base)
        lua = LOGIN_LUA % json.dumps({"email": READER, "password": PASSWORD})

        def logins() -> WrkResult:
            return wrk(
                base + "/api/v1/auth/login",
                seconds=args.seconds,
                connections=LOGIN_CONNECTIONS,
                script=lua,
            )

        logins()  # warm-up
        before = [logins() for _ in range(args.rounds)]
        proc = subprocess.Popen(
            [sys.executable, "-c", PURGE_SCRIPT],
            env={**os.environ, **scale_seed.scale_env(args.database)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        # "started" once the process is up and about to delete: its start-up (imports,
        # connections) is not the purge.
        started = threading.Event()
        lines: list[str] = []

        def read(stream: IO[str]) -> None:
            for line in stream:
                lines.append(line)
                if line.strip() == "started":
                    started.set()

        reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
        reader.start()
        while not started.wait(0.05) and proc.poll() is None:
            pass
        during: list[WrkResult] = []
        while True:
            run = logins()
            if proc.poll() is not None:
                break  # this run outlived the purge: not wholly "during"
            during.append(run)
        proc.wait()
        reader.join()
        out = lines[-1] if lines else ""
        after = [logins() for _ in range(args.rounds)]
    sessions, tokens, seconds = out.split()
    print(
        f"2. purge of ended sessions under a login load ({LOGIN_CONNECTIONS} connections, "
        f"runs of {args.seconds} s), {shape} before the purge"
    )
    print(
        f"purged {int(sessions):,} sessions (of {doomed:,} ended) and {int(tokens):,} refresh "
        f"tokens in {float(seconds):.1f} s: {int(sessions) / float(seconds):,.0f} sessions/s"
    )
    print(f"{'login':26} {header()}")
    for label, group in (("before (median run)", before), ("after (median run)", after)):
        print(f"{label:26} {median_run(group).row()}")
    if during:
        worst = max(during, key=lambda r: r.p99_ms)
        print(f"{'during (median run)':26} {median_run(during).row()}")
        print(f"{'during (worst p99)':26} {worst.row()}")
        ratio = median_run(during).p99_ms / median_run(before).p99_ms
        print(f"login p99 during the purge ÷ before: {ratio:.2f}× over {len(during)} runs")
    else:
        print("the purge ended within the first run: no run lay wholly inside it")
    print()


def verify(args: argparse.Namespace) -> None:
    rows = _number(args.database, "SELECT count(*) FROM audit_log")
    env = {**os.environ, **scale_seed.scale_env(args.database)}
    # Bytecode cached, as an installed package has it: each parallel worker imports
    # authkeep, and without the cache it compiles every module again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "authkeep", "audit", "verify", "--no-progress"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    found = re.search(r"checked ([\d,]+) rows in ([\d.]+) s \(([\d,]+) rows/s\)", out)
    jobs = min(4, os.cpu_count() or 1)
    print(
        f"3. authkeep audit verify over {rows:,} audit rows (PostgreSQL; --jobs default: "
        f"{jobs} process{'es' if jobs > 1 else ''})"
    )
    if proc.returncode != 0 or found is None:
        print(f"FAILED (exit {proc.returncode}):\n{out[-2000:]}")
        return
    rate = int(found.group(3).replace(",", ""))
    verdict = "met" if rate >= 200_000 else "NOT met"
    # wait4's usage covers the command and the workers it waited for: per row, that is what
    # the rate would be with a free core per process (PostgreSQL's own work not included).
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"{found.group(1)} rows in {found.group(2)} s: {rate:,} rows/s (target ≥ 200,000: "
        f"{verdict}); peak RSS {usage.ru_maxrss / 1024:.0f} MiB (the largest process); "
        f"CPU {cpu:.0f} s, {cpu / max(rows, 1) * 1e6:.1f} µs per row "
        "(imports and start-up included)"
    )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--database", default=scale_seed.DATABASE)
    parser.add_argument("--seed", action="store_true", help="seed the large database again")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=2_000_000)
    parser.add_argument("--expired", type=int, default=1_000_000)
    parser.add_argument("--audit", type=int, default=10_000_000)
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--skip-ratios", action="store_true")
    parser.add_argument("--skip-purge", action="store_true")
    parser.add_argument("--skip-verify", action="store_true")
    args = parser.parse_args()
    prepare(args)
    report = _Tee(sys.stdout)
    with contextlib.redirect_stdout(report):
        if not args.skip_ratios:
            flat_costs(args)
        if not args.skip_purge:
            purge_under_load(args)
        if not args.skip_verify:
            verify(args)
    if not (args.skip_ratios or args.skip_purge or args.skip_verify):
        # The full run's report, which `make bench` puts into RESULTS.md (seeding the large
        # database takes a quarter of an hour, so bench/run.py does not run this itself).
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        RESULTS.write_text(
            f"Last full run: {stamp}, `make bench-scale` ({args.users:,} users, "
            f"{args.sessions:,} sessions, {args.audit:,} audit rows).\n\n```\n"
            f"{report.text().strip()}\n```\n"
        )


RESULTS = Path(__file__).resolve().parent / "scale-results.md"
"""Where the last full run's report is kept for RESULTS.md."""


class _Tee:
    """Writes through to ``target`` and keeps a copy."""

    def __init__(self, target: IO[str]) -> None:
        self._target = target
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return self._target.write(text)

    def flush(self) -> None:
        self._target.flush()

    def text(self) -> str:
        return "".join(self._parts)


if __name__ == "__main__":
    main()
