"""What webhooks deliver, and what writing events adds to an audited change (PostgreSQL).

    .venv/bin/python bench/webhooks.py [--events 1000] [--writes 2000] [--seconds 5] [--rounds 3]

A counting receiver (``bench/webhook_sink.py``, a process of its own on loopback) gets every
delivery; it counts requests and distinct ``webhook-id`` headers, so a duplicate shows.

1. **Delivery throughput.** One platform endpoint (every event) points at the receiver.
   ``--events`` audited changes are committed in one transaction into a fresh PostgreSQL
   database — each becomes an event (read from its audit row by a worker), fanned out into
   a delivery, posted, signed — and 1 or 4 ``authkeep worker`` processes, started
   beforehand and idle (polling every 0.1 s), deliver them; events/s = events ÷ (arrival
   of the last one − the commit). The two worker counts alternate within each of
   ``--rounds`` rounds; the median is reported.
2. **Writing events on the audited write path, in the database.** ``--writes`` sequential
   transactions, each a one-row change and its audit row (a password change: an event of the
   catalogue), on one connection, three ways: no audit row, audit row without events
   (``AUTHKEEP_WEBHOOKS_ENABLED=false``), audit row with its event (the default). The event
   is read from the audit row after the commit (``authkeep.services.webhooks.source``): the
   change itself writes nothing more, and what is left on its path is the catalogue look-up
   and a wake-up of the local worker after the commit. The reading is a worker's work,
   priced by item 1. Ways alternate within rounds; medians.
3. **The same over HTTP.** wrk creates API keys (``POST /api/v1/api-keys``: an audited
   change, ``api_key.created``, no password hashing) against two servers, webhooks on and
   off, each its own database, no outbox worker (only the write path is priced), one
   uvicorn worker each; servers alternate within rounds.

Target: events add at most 5 % on top of the audit log. Everything — PostgreSQL, workers,
receiver, wrk — shares this machine's cores, and the machine is shared: read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
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
    rounds_note,
    server,
    uvicorn_command,
    wrk,
)
from outbox import Delivered, clean_env, database, workers
from webhook_sink import SinkStats, stats

BENCH = Path(__file__).resolve().parent
WORKER_COUNTS = (1, 4)
DELIVERY_TIMEOUT = 600.0
PASSWORD = "load-test passphrase, long enough"
KEY_CONNECTIONS = 16
WAYS = ("no audit", "audit, webhooks off", "audit + event")

# wrk.format() with a headers table ignores the command line's -H: the token goes here.
CREATE_KEY_LUA = """
request = function()
  return wrk.format("POST", "/api/v1/api-keys",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"},
    '{"name": "bench"}')
end
"""


def base_env(database_url: str) -> dict[str, str]:
    """A server's or worker's settings: PostgreSQL, loopback endpoints allowed."""
    return {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": database_url,
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_EMAIL_VERIFICATION": "optional",
        "AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "AUTHKEEP_OUTBOX_POLL_SECONDS": "0.1",
    }


def sink() -> contextlib.AbstractContextManager[int]:
    """The counting receiver in its own process; yields its port."""
    return counting_sink(BENCH / "webhook_sink.py", stats, "webhook sink")


def _settings(database_url: str) -> object:
    from authkeep import Settings

    return Settings(
        _env_file=None,
        env="test",
        secret_key=TEST_SECRET,
        database_url=database_url,
        webhook_allowed_networks=["127.0.0.0/8"],
    )


async def _endpoint(database_url: str, url: str) -> None:
    """A platform endpoint (every event) at ``url``, its secret sealed as the workers will
    open it (test settings: the data key derives from the shared secret)."""
    from authkeep.db import webhooks as rows
    from authkeep.db.base import utcnow
    from authkeep.db.engine import Database
    from authkeep.services.webhooks import signing
    from authkeep.wiring import build_data_box

    settings = _settings(database_url)
    box = build_data_box(settings)  # type: ignore[arg-type]
    db = Database(database_url)
    try:
        endpoint_id = uuid.uuid4()
        async with db.transaction() as conn:
            await rows.insert_endpoint(
                conn,
                endpoint_id=endpoint_id,
                org_id=None,
                url=url,
                description="bench",
                event_types=[],
                secret_sealed=signing.seal(box, signing.new_secret(), endpoint_id),
                created_by=None,
                now=utcnow(),
            )
    finally:
        await db.close()


def _event(user: uuid.UUID) -> object:
    from authkeep.services.audit import Action, Actor, AuditEvent

    return AuditEvent(
        Action.PASSWORD_CHANGED,
        actor=Actor(user),
        entity_type="user",
        entity_id=user,
        details={"sessions_ended": 1},
    )


async def _commit_events(database_url: str, count: int) -> float:
    """``count`` audited changes (events) in one transaction; the commit's time."""
    from authkeep.db.engine import Database
    from authkeep.services.audit import AuditLog
    from authkeep.services.outbox import Outbox
    from authkeep.services.webhooks import WebhookEvents

    db = Database(database_url)
    try:
        audit = AuditLog(db, events=WebhookEvents(Outbox()))
        async with db.transaction() as conn:
            for _ in range(count):
                await audit.record(conn, _event(uuid.uuid4()))  # type: ignore[arg-type]
        return time.monotonic()
    finally:
        await db.close()


def deliver(count: int, database_url: str, sink_port: int, events: int, workdir: Path) -> Delivered:
    """``events`` committed at once, delivered by ``count`` workers: how fast."""
    pg("TRUNCATE outbox", database_url.rsplit("/", 1)[1])
    with workers(count, base_env(database_url), workdir):
        before = stats(sink_port)
        committed = asyncio.run(_commit_events(database_url, events))
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        now: SinkStats = before
        while now.distinct - before.distinct < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{now.distinct - before.distinct}/{events} delivered")
            time.sleep(0.05)
            now = stats(sink_port)
    got = now.requests - before.requests
    return Delivered(count, events, now.last - committed, got - (now.distinct - before.distinct))


@dataclass(frozen=True)
class Writes:
    """One run of audited changes: per transaction, the median wall time and the CPU time
    of this process and of its PostgreSQL backend (µs; CPU None when the backend's
    ``/proc`` entry cannot be read: PostgreSQL on another host)."""

    wall: float
    app_cpu: float
    db_cpu: float | None

    @property
    def cpu(self) -> float | None:
        return None if self.db_cpu is None else self.app_cpu + self.db_cpu


def _backend_cpu_ns(pid: int) -> int | None:
    # Nanoseconds on a CPU (the scheduler's own count, exact to the ns): unlike wall time on
    # a loaded machine, it does not include the waits for a core, which the 4 ms scheduler
    # tick turns into steps of 4,000 µs.
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def _writes(database_url: str, way: str, count: int) -> Writes:
    """One run of ``count`` audited changes, ``way`` of :data:`WAYS`."""
    from sqlalchemy import text

    from authkeep.db.engine import Database
    from authkeep.services.audit import AuditLog
    from authkeep.services.outbox import Outbox
    from authkeep.services.webhooks import WebhookEvents

    db = Database(database_url, pool_size=1)
    try:
        audit = AuditLog(db, events=WebhookEvents(Outbox(), enabled=way == WAYS[2]))
        user = uuid.uuid4()
        async with db.transaction() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (id, email, email_key, hashed_password, is_active, "
                    "is_superuser, created_at, updated_at, mfa_enabled) VALUES (:id, :e, :k, "
                    "'x', true, false, now(), now(), false)"
                ),
                # Two parameters: email is TEXT (ciphertext) and email_key a VARCHAR.
                {"id": user, "e": f"{user.hex}@example.com", "k": user.hex},
            )
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        change = text("UPDATE users SET updated_at = now() WHERE id = :id")
        samples = []
        app_before, db_before = time.process_time_ns(), _backend_cpu_ns(pid)
        for _ in range(count):
            started = time.perf_counter()
            async with db.transaction() as conn:
                await conn.execute(change, {"id": user})
                if way != WAYS[0]:
                    await audit.record(conn, _event(user))  # type: ignore[arg-type]
            samples.append(time.perf_counter() - started)
        app_after, db_after = time.process_time_ns(), _backend_cpu_ns(pid)
        async with db.transaction() as conn:
            # One connection throughout (pool_size=1), so one backend: checked, not assumed.
            same = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() == pid
        db_cpu = None
        if same and db_before is not None and db_after is not None:
            db_cpu = (db_after - db_before) / count / 1e3
        return Writes(
            statistics.median(samples) * 1e6, (app_after - app_before) / count / 1e3, db_cpu
        )
    finally:
        await db.close()


def measure_writes(database_url: str, count: int, rounds: int) -> dict[str, list[Writes]]:
    runs: dict[str, list[Writes]] = {way: [] for way in WAYS}
    asyncio.run(_writes(database_url, WAYS[2], 200))  # warm-up
    for round_ in range(rounds):
        # Every other round backwards: each run adds rows to the one database, so a fixed
        # order would hand the later ways a bigger table.
        for way in WAYS if round_ % 2 == 0 else WAYS[::-1]:
            runs[way].append(asyncio.run(_writes(database_url, way, count)))
    return runs


@dataclass(frozen=True)
class KeyTarget:
    """One server of the HTTP comparison, with an org admin's fresh token."""

    name: str
    base: str
    token: str

    def run(self, seconds: int) -> WrkResult:
        return wrk(
            self.base + "/api/v1/api-keys",
            seconds=seconds,
            connections=KEY_CONNECTIONS,
            script=CREATE_KEY_LUA % self.token,
        )


def _org_admin(base: str) -> str:
    import httpx

    body = {"email": f"admin-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    httpx.post(base + "/api/v1/auth/register", json=body, timeout=30).raise_for_status()
    token = httpx.post(base + "/api/v1/auth/login", json=body, timeout=30).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    org = httpx.post(base + "/api/v1/orgs", json={"name": "Bench"}, headers=headers, timeout=30)
    org.raise_for_status()
    switched = httpx.post(
        base + "/api/v1/auth/switch-org",
        json={"org_id": org.json()["id"]},
        headers=headers,
        timeout=30,
    )
    switched.raise_for_status()
    return str(switched.json()["access_token"])


@contextlib.contextmanager
def key_server(name: str, stack: contextlib.ExitStack) -> Iterator[KeyTarget]:
    url = stack.enter_context(database())
    env = {**base_env(url), "AUTHKEEP_OUTBOX_IN_PROCESS": "false"}
    if name == "webhooks off":
        env["AUTHKEEP_WEBHOOKS_ENABLED"] = "false"
    port = free_port()
    command = uvicorn_command("authkeep.http.app:create_app", port, factory=True)
    with server(command, port=port, env=clean_env(env), cwd=BENCH) as base:
        yield KeyTarget(name, base, _org_admin(base))


def measure_keys(seconds: int, rounds: int) -> dict[str, list[WrkResult]]:
    with contextlib.ExitStack() as stack:
        targets = [
            stack.enter_context(key_server(n, stack)) for n in ("webhooks off", "webhooks on")
        ]
        for target in targets:
            target.run(2)  # warm-up
        measurements: dict[str, Callable[[], WrkResult]] = {
            t.name: functools.partial(t.run, seconds) for t in targets
        }
        return alternate_rounds(measurements, rounds)


def print_writes(writes: dict[str, list[Writes]]) -> None:
    """The write-path table: each way's medians, its runs, the event's share."""
    print(f"{'way':<22} {'wall':>7} {'CPU':>7} {'app':>6} {'db':>6}  runs (CPU)")
    cpu: dict[str, float | None] = {}
    for way in WAYS:
        runs = writes[way]
        known = [run.cpu for run in runs if run.cpu is not None]
        cpu[way] = statistics.median(known) if len(known) == len(runs) else None
        app = statistics.median(run.app_cpu for run in runs)
        db = statistics.median(run.db_cpu or 0.0 for run in runs)
        each = ", ".join(f"{value:.0f}" for value in known) or "-"
        shown = "-" if cpu[way] is None else f"{cpu[way]:.0f}"
        print(
            f"{way:<22} {statistics.median(run.wall for run in runs):>7.0f} {shown:>7} "
            f"{app:>6.0f} {db:>6.0f}  ({each})"
        )
    audit_only, event = cpu[WAYS[1]], cpu[WAYS[2]]
    if audit_only and event:
        none = cpu[WAYS[0]] or 0.0
        print(
            f"the event: {event / audit_only - 1:+.1%} CPU on top of the audited change; "
            f"{(event - audit_only) / max(audit_only - none, 1e-9):.0%} of what the audit row "
            "itself costs (target: at most 5 % on top of the audit log)"
        )


def main() -> None:
    """Measure delivery, the database write path and the HTTP write path; print them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="events per delivery run")
    parser.add_argument("--writes", type=int, default=2000, help="transactions per write run")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--skip-http", action="store_true", help="no wrk comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authkeep-bench-webhooks-") as tmp, sink() as port:
        workdir = Path(tmp)
        delivered: dict[int, list[Delivered]] = {count: [] for count in WORKER_COUNTS}
        with database() as url:
            asyncio.run(_endpoint(url, f"http://127.0.0.1:{port}/hooks"))
            for _ in range(args.rounds):
                for count in WORKER_COUNTS:
                    delivered[count].append(deliver(count, url, port, args.events, workdir))
        with database() as url:
            writes = measure_writes(url, args.writes, args.rounds)
    keys = {} if args.skip_http else measure_keys(args.seconds, args.rounds)

    print(
        f"webhook delivery to a local receiver (own process), PostgreSQL: {args.events} "
        f"events committed at once, {args.rounds} alternating rounds, median"
    )
    print(f"{'workers':>7} {'events/s':>9} {'runs (events/s)':<28} {'duplicates':>10}")
    medians: dict[int, float] = {}
    for count, runs in delivered.items():
        medians[count] = statistics.median(r.rate for r in runs)
        each = ", ".join(f"{r.rate:.0f}" for r in runs)
        dups = sum(r.duplicates for r in runs)
        print(f"{count:>7} {medians[count]:>9.0f} {each:<28} {dups:>10}")
    print(f"4 workers / 1 worker: {medians[4] / medians[1]:.2f}x")
    print()
    print(
        f"one audited change (UPDATE + audit row), {args.writes} sequential transactions "
        f"per run, {args.rounds} alternating rounds (order reversed every other round): "
        "median over runs of the wall-time median, and of the CPU per transaction of this "
        "process + its PostgreSQL backend (µs)"
    )
    print_writes(writes)
    if keys:
        print()
        print(
            f"POST /api/v1/api-keys (audited, event api_key.created): wrk -t2 "
            f"-c{KEY_CONNECTIONS} -d{args.seconds}s, {rounds_note(args.rounds)}, "
            "one uvicorn worker, PostgreSQL, no outbox worker"
        )
        print(f"{'server':<14} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        off = median_run(keys["webhooks off"])
        for name, key_runs in keys.items():
            run = median_run(key_runs)
            errors = sum(r.errors for r in key_runs)
            print(
                f"{name:<14} {run.requests_per_second:>7.0f} {run.p50_ms:>8.2f} "
                f"{run.p99_ms:>8.2f} {errors:>8d}"
            )
        on = median_run(keys["webhooks on"])
        throughput = on.requests_per_second / off.requests_per_second - 1
        print(
            f"webhooks on vs off: throughput {throughput:+.1%}, "
            f"p50 {on.p50_ms / off.p50_ms - 1:+.1%}; target: at most 5 % slower"
        )


if __name__ == "__main__":
    main()
