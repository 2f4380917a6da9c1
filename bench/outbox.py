"""What the outbox delivers, and what it adds to a register request (PostgreSQL).

    .venv/bin/python bench/outbox.py [--messages 1000] [--seconds 5] [--rounds 3]

A counting SMTP server (``bench/smtp_sink.py``, aiosmtpd, a process of its own on loopback)
receives every message; it counts messages and distinct ``Message-ID`` headers, so a
duplicate shows.

1. **Delivery throughput.** ``--messages`` verification emails are queued in one committed
   transaction into a fresh PostgreSQL database, and 1 or 4 ``authkeep worker`` processes —
   started beforehand and idle, polling every 0.1 s so that the poll interval is not what
   is measured — deliver them to the sink; messages/s = messages ÷ (arrival of the last
   message − the commit). The two worker counts alternate within each of ``--rounds``
   rounds (the CPU's speed drifts here from one minute to the next); the median round is
   reported. Everything — workers, PostgreSQL, the sink — shares this machine's cores.
2. **What the outbox adds to a register request.** wrk registers a new, unique email on
   every request (a Lua script), 16 connections (each register hashes its password: more
   connections only lengthen the queue), against three ``authkeep serve``-equivalent servers
   (``bench/apps/authkeep_layers.py``, one uvicorn worker, each its own database, rate limits
   off, email verification ``optional`` so that every register queues a verification email):

   * *no email*: ``BENCH_WITHOUT=outbox`` — the mailer's enqueue does nothing (no template
     rendering, no outbox row, nothing to deliver); everything else the same;
   * *email, delivered in-process*: the embedded default — the serving process also renders
     and sends each message;
   * *email, delivered by ``authkeep worker``*: ``AUTHKEEP_OUTBOX_IN_PROCESS=false`` and one
     worker process beside the server (on the same two cores).

   Servers alternate within each round; each reports its median run. Target: at most 10 %
   slower than *no email*.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import secrets
import statistics
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
    TEST_SECRET,
    WrkResult,
    alternate_rounds,
    counting_sink,
    free_port,
    median_run,
    pg,
    pg_url,
    rounds_note,
    server,
    stop_process,
    uvicorn_command,
    wrk,
)
from smtp_sink import SinkStats, stats

BENCH = Path(__file__).resolve().parent
PASSWORD = "load-test passphrase, long enough"  # no "bench": the emails hold it
WORKER_COUNTS = (1, 4)
REGISTER_CONNECTIONS = 16
DELIVERY_TIMEOUT = 600.0
NO_EMAIL = "no email (enqueue switched off)"
IN_PROCESS = "email, delivered in-process"
SEPARATE = "email, delivered by `authkeep worker`"

# Every request registers a new address: a prefix per run, a counter per wrk thread.
REGISTER_LUA = """
local prefix = "%s"
local threads = 0
local counter = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
request = function()
  counter = counter + 1
  local body = '{"email": "' .. prefix .. '-' .. tid .. '-' .. counter ..
    '@example.com", "password": "%s"}'
  return wrk.format("POST", "/api/v1/auth/register",
    {["Content-Type"] = "application/json"}, body)
end
"""


def base_env(database_url: str, sink_port: int) -> dict[str, str]:
    """A server's or worker's settings: PostgreSQL, email to the sink."""
    return {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": database_url,
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_EMAIL_VERIFICATION": "optional",
        "AUTHKEEP_EMAIL_BACKEND": "smtp",
        "AUTHKEEP_SMTP_HOST": "127.0.0.1",
        "AUTHKEEP_SMTP_PORT": str(sink_port),
        "AUTHKEEP_SMTP_TLS": "none",
        "AUTHKEEP_OUTBOX_POLL_SECONDS": "0.1",
    }


def clean_env(values: dict[str, str]) -> dict[str, str]:
    """This environment without any AUTHKEEP_* variable of the caller's, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    env.update(values)
    return env


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated; dropped at the end."""
    from authkeep.db.engine import Database
    from authkeep.db.migrate import upgrade

    name = f"authkeep_bench_outbox_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE DATABASE "{name}"')
    try:

        async def migrate() -> None:
            db = Database(pg_url(name))
            try:
                await upgrade(db)
            finally:
                await db.close()

        asyncio.run(migrate())
        yield pg_url(name)
    finally:
        pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sink() -> contextlib.AbstractContextManager[int]:
    """The counting SMTP server in its own process; yields its port."""
    return counting_sink(BENCH / "smtp_sink.py", stats, "SMTP sink")


@contextlib.contextmanager
def workers(count: int, env: dict[str, str], workdir: Path) -> Iterator[None]:
    """``count`` ``authkeep worker`` processes, each up and polling before the block."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = [workdir / f"worker-{uuid.uuid4().hex[:8]}.log" for _ in range(count)]
    try:
        for log in logs:
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "authkeep", "worker"],
                        env=clean_env({**env, "AUTHKEEP_LOG_LEVEL": "INFO"}),
                        cwd=workdir,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 120
        while not all("outbox_worker_started" in log.read_text(errors="replace") for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
                raise RuntimeError(f"a worker did not start:\n{tails}")
            time.sleep(0.1)
        yield
    finally:
        for proc in procs:
            stop_process(proc)
        for log in logs:
            log.unlink(missing_ok=True)


async def _enqueue(database_url: str, messages: int) -> float:
    """Queue ``messages`` verification emails in one transaction; the commit's time."""
    from authkeep import Settings
    from authkeep.db.engine import Database
    from authkeep.services.delivery import build_delivery

    settings = Settings(
        _env_file=None, env="test", secret_key=TEST_SECRET, database_url=database_url
    )
    db = Database(database_url)
    try:
        mailer = build_delivery(settings, db).mailer
        async with db.transaction() as conn:
            for n in range(messages):
                token = secrets.token_urlsafe(32)
                await mailer.enqueue(conn, "verify_email", f"r{n}@example.com", {"token": token})
        return time.monotonic()
    finally:
        await db.close()


@dataclass(frozen=True)
class Delivered:
    """One delivery run (of emails here, of webhook events in bench/webhooks.py)."""

    workers: int
    messages: int
    seconds: float
    duplicates: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def deliver(
    count: int, database_url: str, sink_port: int, messages: int, workdir: Path
) -> Delivered:
    """``messages`` queued at once, delivered by ``count`` workers: how fast."""
    pg("TRUNCATE outbox", database_url.rsplit("/", 1)[1])
    with workers(count, base_env(database_url, sink_port), workdir):
        before = stats(sink_port)
        committed = asyncio.run(_enqueue(database_url, messages))
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        now: SinkStats = before
        while now.messages - before.messages < messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{now.messages - before.messages}/{messages} delivered")
            time.sleep(0.05)
            now = stats(sink_port)
    got = now.messages - before.messages
    return Delivered(count, got, now.last - committed, got - (now.distinct - before.distinct))


@dataclass(frozen=True)
class RegisterTarget:
    """One running server of the register comparison."""

    name: str
    base: str
    database_url: str

    def emails_sent(self) -> int:
        """Emails this server's outbox has sent (none when the outbox is switched off)."""
        import sqlalchemy as sa

        from authkeep.db.engine import Database
        from authkeep.db.models import OutboxMessage

        async def count() -> int:
            db = Database(self.database_url)
            try:
                async with db.reading() as conn:
                    query = sa.select(sa.func.count()).where(
                        OutboxMessage.kind == "email", OutboxMessage.status == "sent"
                    )
                    return int((await conn.execute(query)).scalar_one())
            finally:
                await db.close()

        return asyncio.run(count())

    def run(self, seconds: int) -> WrkResult:
        script = REGISTER_LUA % (uuid.uuid4().hex[:12], PASSWORD)
        return wrk(
            self.base + "/api/v1/auth/register",
            seconds=seconds,
            connections=REGISTER_CONNECTIONS,
            script=script,
        )


@contextlib.contextmanager
def register_server(
    name: str, sink_port: int, workdir: Path, stack: contextlib.ExitStack
) -> Iterator[RegisterTarget]:
    """One server of the register comparison, with its own database (and worker)."""
    url = stack.enter_context(database())
    env = base_env(url, sink_port)
    if name == NO_EMAIL:
        env["BENCH_WITHOUT"] = "outbox"
    if name == SEPARATE:
        env["AUTHKEEP_OUTBOX_IN_PROCESS"] = "false"
        stack.enter_context(workers(1, env, workdir))
    port = free_port()
    command = uvicorn_command("apps.authkeep_layers:create", port, factory=True)
    with server(command, port=port, env=clean_env(env), cwd=BENCH) as base:
        yield RegisterTarget(name, base, url)


def measure_register(
    sink_port: int, workdir: Path, seconds: int, rounds: int
) -> tuple[dict[str, list[WrkResult]], dict[str, int]]:
    """The three servers up at once, warmed up, measured in alternating rounds; and the
    emails each one's outbox sent (a few seconds after the last run, for the last ones)."""
    with contextlib.ExitStack() as stack:
        targets = [
            stack.enter_context(register_server(name, sink_port, workdir, stack))
            for name in (NO_EMAIL, IN_PROCESS, SEPARATE)
        ]
        for target in targets:
            target.run(2)  # warm-up
        measurements: dict[str, Callable[[], WrkResult]] = {
            t.name: functools.partial(t.run, seconds) for t in targets
        }
        runs = alternate_rounds(measurements, rounds)
        time.sleep(5)
        return runs, {t.name: t.emails_sent() for t in targets}


def main() -> None:
    """Measure delivery and register, print both tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per delivery run")
    parser.add_argument("--seconds", type=int, default=5, help="length of each register run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authkeep-bench-outbox-") as tmp, sink() as port:
        workdir = Path(tmp)
        delivered: dict[int, list[Delivered]] = {count: [] for count in WORKER_COUNTS}
        with database() as url:
            for _ in range(args.rounds):
                for count in WORKER_COUNTS:
                    delivered[count].append(deliver(count, url, port, args.messages, workdir))
        register, sent = measure_register(port, workdir, args.seconds, args.rounds)

    print(
        f"outbox delivery to a local SMTP server (aiosmtpd, own process), PostgreSQL: "
        f"{args.messages} messages queued at once, {args.rounds} alternating rounds, median"
    )
    print(f"{'workers':>7} {'msgs/s':>8} {'runs (msgs/s)':<28} {'duplicates':>10}")
    medians: dict[int, float] = {}
    for count, runs in delivered.items():
        medians[count] = statistics.median(r.rate for r in runs)
        each = ", ".join(f"{r.rate:.0f}" for r in runs)
        dups = sum(r.duplicates for r in runs)
        print(f"{count:>7} {medians[count]:>8.0f} {each:<28} {dups:>10}")
    print(f"4 workers / 1 worker: {medians[4] / medians[1]:.2f}x")
    print()
    print(
        f"register (a new email each request): wrk -t2 -c{REGISTER_CONNECTIONS} "
        f"-d{args.seconds}s, {rounds_note(args.rounds)}, one uvicorn worker, PostgreSQL"
    )
    print(
        f"{'server':<38} {'req/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'slower':>7} "
        f"{'non-2xx':>8} {'emails sent':>11}"
    )
    base = median_run(register[NO_EMAIL])
    for name, wrk_runs in register.items():
        run = median_run(wrk_runs)
        slower = run.p50_ms / base.p50_ms - 1
        errors = sum(r.errors for r in wrk_runs)
        print(
            f"{name:<38} {run.requests_per_second:>6.0f} {run.p50_ms:>8.2f} "
            f"{run.p99_ms:>8.2f} {slower:>+7.1%} {errors:>8d} {sent[name]:>11d}"
        )
    print("slower: p50 latency against no email; target: at most +10 %")


if __name__ == "__main__":
    main()
