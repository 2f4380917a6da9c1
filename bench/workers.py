"""Read throughput with 1, 2 and 4 uvicorn workers on PostgreSQL + Redis, and where the CPU
went: what a bigger machine would give.

    .venv/bin/python bench/workers.py [--seconds 5] [--rounds 3] [--workers 1,2,4]

One fresh PostgreSQL database; one ``authkeep serve --workers N`` (the command production runs:
its HTTP protocol, ``authkeep.http.server_protocol``; PostgreSQL, Redis revocation, audit on)
per worker count and per limiter setting — off, and
on with Redis storage (a budget no run reaches, so nothing is refused: its cost, not its
refusals) — all up at once; wrk (2 threads, 64 connections) drives ``GET /api/v1/auth/me``
with one bearer token, the servers alternating within each round (as ``harness.alternate_rounds``)
and each reporting its median run.

Around every run the CPU is read from ``/proc``: the server's (utime + stime of every process
of its group, master and workers; also per request, "µs/req"), wrk's
(``getrusage(RUSAGE_CHILDREN)``: it is this process's only child that ends during the run) and
the whole machine's (``/proc/stat``, idle and iowait excluded). "Cores" is CPU seconds per
second of run; wrk's share is its part of the machine's busy time; "other" is the rest of it:
PostgreSQL, Redis, and whatever else the machine runs. A machine with more cores gives more
throughput only while the server's cores are the ones that run out: when wrk's share is
large, the load generator is part of what is measured.

Shared state (the Redis revocation look-up and rate-limit windows, the PostgreSQL pool per
worker) must not make 2 workers slower than 1: the script says so when it does. It first
did, for a reason that was not shared state: uvicorn binds the listener itself when it runs
several workers, so asyncio left Nagle's algorithm on every accepted socket and each answer
waited up to 40 ms for a delayed ACK (2 workers: 0.4× one). ``server_protocol`` now turns
Nagle off on every connection.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    REDIS,
    ROOT,
    TEST_SECRET,
    WrkResult,
    authkeep_token,
    free_port,
    pg,
    pg_url,
    rounds_note,
    stop_process,
    wait_ready,
    wrk,
)

PASSWORD = "load-test passphrase, long enough"  # no "bench": the emails hold it
LIMITER = {
    "off": {"AUTHKEEP_RATE_LIMIT_ENABLED": "false"},
    "on (Redis)": {
        "AUTHKEEP_RATE_LIMIT_ENABLED": "true",
        "AUTHKEEP_RATE_LIMIT_PER_MINUTE": "100000000",
    },
}


@dataclass(frozen=True)
class Measured:
    """One wrk run and the CPU spent around it."""

    result: WrkResult
    seconds: float
    server_cpu: float
    wrk_cpu: float
    busy_cpu: float

    @property
    def requests_per_second(self) -> float:
        return self.result.requests_per_second

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in process group ``pgid`` (all their threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (``/proc/stat``, all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # steal included, guests not


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def serve(workers: int, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``authkeep serve --workers N``; yields (base URL, process group)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finally
        prefix="bench-workers-", suffix=".log", delete=False
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "authkeep", "serve", "--port", str(port), "--workers", str(workers)],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}/health", timeout=120)
        except RuntimeError:
            log.flush()
            sys.stderr.write(Path(log.name).read_text()[-4000:])
            raise
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        stop_process(proc)
        log.close()
        os.unlink(log.name)


def measured(run: Callable[[], WrkResult], pgid: int) -> Measured:
    server, children, busy = group_cpu_seconds(pgid), children_cpu_seconds(), machine_busy_seconds()
    started = time.monotonic()
    result = run()
    seconds = time.monotonic() - started
    return Measured(
        result,
        seconds,
        group_cpu_seconds(pgid) - server,
        children_cpu_seconds() - children,
        machine_busy_seconds() - busy,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    database = f"authkeep_workers_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE DATABASE "{database}"')
    env = {
        "AUTHKEEP_ENV": "development",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATA_KEYS": '["k1:' + "W" * 43 + '"]',
        "AUTHKEEP_DATABASE_URL": pg_url(database),
        "AUTHKEEP_REDIS_URL": REDIS,
        "AUTHKEEP_REDIS_PREFIX": f"bench-workers-{uuid.uuid4().hex[:8]}:",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_TRUSTED_HOSTS": '["127.0.0.1", "localhost"]',
        # Fourteen worker processes are up at once: with the default pool (10 + 10 overflow
        # each) they would pass PostgreSQL's max_connections (100) and answer 503.
        "AUTHKEEP_DATABASE_POOL_SIZE": "4",
    }
    try:
        subprocess.run(
            [sys.executable, "-m", "authkeep", "migrate"],
            env={**os.environ, **env, **LIMITER["off"]},
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        with contextlib.ExitStack() as stack:
            servers = {
                (limiter, n): stack.enter_context(serve(n, {**env, **extra}))
                for limiter, extra in LIMITER.items()
                for n in counts
            }
            first = next(iter(servers.values()))[0]
            token = authkeep_token(first, f"workers-{uuid.uuid4().hex[:6]}@example.com", PASSWORD)
            headers = {"Authorization": f"Bearer {token}"}

            def run(base: str, seconds: int) -> WrkResult:
                return wrk(base + "/api/v1/auth/me", seconds=seconds, headers=headers)

            for base, _ in servers.values():  # warm-up: every worker's pools and caches
                run(base, 2)
            # Alternating rounds (harness.alternate_rounds' method), with the CPU around each.
            runs: dict[tuple[str, int], list[Measured]] = {key: [] for key in servers}
            for _ in range(args.rounds):
                for key, (base, pgid) in servers.items():
                    runs[key].append(measured(functools.partial(run, base, args.seconds), pgid))
    finally:
        pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    report(runs, counts, args)


def report(
    runs: dict[tuple[str, int], list[Measured]], counts: list[int], args: argparse.Namespace
) -> None:
    print(
        f"GET /api/v1/auth/me by worker count, PostgreSQL + Redis, {os.cpu_count()} cores; "
        f"{rounds_note(args.rounds)}, wrk 2 threads 64 connections {args.seconds} s"
    )
    print(
        f"{'limiter':11} {'workers':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'server cores':>12} {'µs/req':>6} {'wrk cores':>9} {'wrk share':>9} "
        f"{'other cores':>11} {'vs 1':>5}"
    )
    for limiter in LIMITER:
        single: float | None = None
        for n in counts:
            median = sorted(runs[(limiter, n)], key=lambda m: m.requests_per_second)[
                len(runs[(limiter, n)]) // 2
            ]
            r = median.result
            single = single or r.requests_per_second
            other = median.busy_cpu - median.server_cpu - median.wrk_cpu
            print(
                f"{limiter:11} {n:7d} {r.requests_per_second:8,.0f} {r.p50_ms:7.2f} "
                f"{r.p99_ms:7.2f} {r.errors:6d} {median.cores(median.server_cpu):12.2f} "
                f"{1e6 * median.server_cpu / max(r.requests, 1):6.0f} "
                f"{median.cores(median.wrk_cpu):9.2f} "
                f"{median.wrk_cpu / median.busy_cpu if median.busy_cpu else 0:9.0%} "
                f"{median.cores(other):11.2f} {r.requests_per_second / single:5.2f}"
            )
        one = runs.get((limiter, 1))
        two = runs.get((limiter, 2))
        if one and two:
            rate = {n: sorted(m.requests_per_second for m in runs[(limiter, n)]) for n in (1, 2)}
            slower = rate[2][len(rate[2]) // 2] < rate[1][len(rate[1]) // 2]
            if slower:
                busy = sorted(m.cores(m.busy_cpu) for m in one)[len(one) // 2]
                print(
                    f"{limiter}: 2 workers were SLOWER than 1 (median runs; the machine was "
                    f"busy {busy:.1f} of {os.cpu_count()} cores during the 1-worker runs)"
                )


if __name__ == "__main__":
    main()
