"""Fill a PostgreSQL database with production-sized data, fast, for ``bench/scale.py``.

    .venv/bin/python bench/scale_seed.py [--database authkeep_scale] [--users 1000000]
        [--sessions 2000000] [--expired 1000000] [--audit 10000000] [--orgs 100]

The database is dropped and created again, then migrated by authkeep itself (``python -m
authkeep migrate``: the schema is exactly what the code under test expects, PII columns
included). The rows are written with COPY (asyncpg's binary ``copy_records_to_table``) in
chunks, from this process:

* ``--users`` accounts with their ``user_keys`` row, encrypted at rest as authkeep writes
  them (``security/envelope.py`` and ``db/sealed.py``, imported: a user key per account,
  wrapped by the data key ``DATA_KEY``; email and name sealed with it; the email's blind
  index) — so that reading their rows (the audit API opens the actors' addresses) costs
  what it costs in production. Their password hash is a placeholder: nobody signs in as
  them. The accounts a benchmark signs in with are made through authkeep's own services
  (``bench/scale.py``: ``authkeep create-admin`` and ``POST /api/v1/auth/register``), so
  they stay valid whatever the encryption at rest does.
* ``--sessions`` sessions of random users (address and user agent sealed with the owner's
  key), each with one refresh token; ``--expired`` of them (spread evenly through the table)
  ended long enough ago for ``authkeep purge`` to delete them: nine in ten expired two days
  ago, one in ten revoked two days ago.
* ``--audit`` audit rows over ``--orgs`` organization chains and the platform chain, oldest
  first, in the last 180 days, with a realistic mix of actions, the address sealed as
  ``db/audit_ips.py`` seals it. Each row's hash is computed here with authkeep's own
  :func:`authkeep.db.audit.entry_hash` (imported, not copied), so ``authkeep audit verify``
  must find every chain intact. One process per core, each owning whole chains.

Ids and user keys are derived from a counter (``_uuid``, ``_user_key``), so nothing is kept
in memory between chunks. The tables' secondary indexes, unique and foreign-key constraints
are dropped for the load and made again after it, exactly as the migrations defined them
(one sorted build instead of millions of random inserts). Then ``VACUUM ANALYZE``: the
planner and the visibility map see what production would.
PostgreSQL admin URL: ``AUTHKEEP_BENCH_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
Disk: about 1 GB per million audit rows (with the six indexes), 0.6 GB per million sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import PG_ADMIN, REDIS, ROOT, TEST_SECRET, pg, pg_url

DATABASE = "authkeep_scale"
DATA_KEY = "k1:" + "S" * 43
CHUNK = 50_000
_SALT = b"authkeep-scale-seed:"
# What the audit log of a busy service holds: mostly sign-ins and refreshes.
_ACTIONS: tuple[tuple[str, str, int], ...] = (
    ("auth.login", "success", 40),
    ("auth.login", "failure", 8),
    ("auth.refresh", "success", 25),
    ("auth.logout", "success", 8),
    ("session.revoked", "success", 3),
    ("user.registered", "success", 4),
    ("user.password_changed", "success", 2),
    ("user.email_verified", "success", 3),
    ("api_key.created", "success", 1),
    ("member.added", "success", 2),
    ("authz.denied", "failure", 2),
    ("org.updated", "success", 2),
)


def scale_env(database: str, **extra: str) -> dict[str, str]:
    """The environment an ``authkeep`` process (server or CLI) of the scale bench runs with."""
    env = {
        "AUTHKEEP_ENV": "development",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATA_KEYS": f'["{DATA_KEY}"]',
        "AUTHKEEP_DATABASE_URL": pg_url(database),
        "AUTHKEEP_REDIS_URL": REDIS,
        "AUTHKEEP_REDIS_PREFIX": f"bench-scale-{uuid.uuid4().hex[:8]}:",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_TRUSTED_HOSTS": '["127.0.0.1", "localhost"]',
    }
    env.update(extra)
    return env


def _uuid(kind: bytes, n: int) -> uuid.UUID:
    # Random-looking (as uuid4 keys are, for the B-trees) but recomputable from the counter.
    return uuid.UUID(
        bytes=hashlib.blake2b(_SALT + kind + n.to_bytes(8, "big"), digest_size=16).digest(),
        version=4,
    )


def _chunks(total: int, size: int = CHUNK) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


def _progress(what: str, done: int, total: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    rate = done / elapsed if elapsed else 0.0
    print(f"\r  {what}: {done:,}/{total:,} ({rate:,.0f} rows/s)", end="", flush=True)


async def _copy(
    conn: Any,
    table: str,
    columns: Sequence[str],
    total: int,
    make: Callable[[range], list[tuple[Any, ...]]],
    *,
    quiet: bool = False,
) -> float:
    started = time.perf_counter()
    for chunk in _chunks(total):
        await conn.copy_records_to_table(table, records=make(chunk), columns=list(columns))
        if not quiet:
            _progress(table, chunk.stop, total, started)
    elapsed = time.perf_counter() - started
    if total and not quiet:
        print()
    return elapsed


def _envelope() -> Any:
    from authkeep.security.data_keys import SecretBox
    from authkeep.security.envelope import Envelope

    return Envelope(SecretBox.from_entries([DATA_KEY]), cache_size=1)


def _user_key(n: int) -> bytes:
    # Account ``n``'s user key: random-looking, recomputable by every process that seals
    # something of that account (its sessions, its audit rows' addresses).
    return hashlib.blake2b(_SALT + b"key" + n.to_bytes(8, "big"), digest_size=32).digest()


def _cipher(n: int) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(_user_key(n))


async def seed_users(conn: Any, users: int, now: datetime) -> None:
    """``users`` accounts with their wrapped user keys, email and name sealed and the email's
    blind index, as ``db/users.py`` writes them (a placeholder password hash: nobody signs
    in as them)."""
    from authkeep.db.sealed import seal_user
    from authkeep.security.emails import email_key

    envelope = _envelope()
    created = now - timedelta(days=400)

    def user_rows(chunk: range) -> list[tuple[Any, ...]]:
        made = []
        for n in chunk:
            user_id = _uuid(b"user", n)
            aead = _cipher(n)
            email = f"user{n}@scale.example"
            made.append(
                (
                    user_id,
                    seal_user(aead, "users", "email", user_id, email),
                    envelope.blind_index(email_key(email)),
                    seal_user(aead, "users", "full_name", user_id, f"User {n}"),
                    "$argon2id$v=19$m=19456,t=2,p=1$placeholderplaceholder$" + "x" * 43,
                    True,
                    False,
                    created,
                    created,
                    created,
                    False,
                )
            )
        return made

    def key_rows(chunk: range) -> list[tuple[Any, ...]]:
        return [
            (_uuid(b"user", n), envelope.wrap(_uuid(b"user", n), _user_key(n)), created)
            for n in chunk
        ]

    await _copy(
        conn,
        "users",
        (
            "id",
            "email",
            "email_key",
            "full_name",
            "hashed_password",
            "is_active",
            "is_superuser",
            "created_at",
            "updated_at",
            "email_verified_at",
            "mfa_enabled",
        ),
        users,
        user_rows,
    )
    await _copy(conn, "user_keys", ("user_id", "wrapped_key", "created_at"), users, key_rows)


def _ended(n: int, total: int, ended: int) -> bool:
    # Spreads ``ended`` of ``total`` evenly over the counter (Bresenham): ended sessions sit
    # between live ones on every page, as they do in a table written over months.
    return (n * ended) // total != ((n + 1) * ended) // total


def _owner(n: int, users: int) -> int:
    # The user of session ``n``: scattered over the accounts (Knuth's multiplicative hash),
    # and recomputable for its refresh token.
    return (n * 2_654_435_761) % users


async def seed_sessions(conn: Any, sessions: int, ended: int, users: int, now: datetime) -> None:
    """``sessions`` sessions with one refresh token each; ``ended`` of them purgeable. Their
    IP address and user agent are sealed with the owner's key, as ``db/sessions.py`` does."""
    from authkeep.db.sealed import seal_user

    gone = now - timedelta(days=2)
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"

    def shape(n: int) -> tuple[datetime, datetime, datetime | None]:
        # (created_at, expires_at, revoked_at)
        if _ended(n, sessions, ended):
            if n % 10 == 0:
                return gone - timedelta(days=3), now + timedelta(days=9), gone
            return gone - timedelta(days=14), gone, None
        created = now - timedelta(seconds=(n * 7919) % (13 * 86400))
        return created, created + timedelta(days=14), None

    def session_rows(chunk: range) -> list[tuple[Any, ...]]:
        rows = []
        for n in chunk:
            created, expires, revoked = shape(n)
            sid = _uuid(b"session", n)
            aead = _cipher(_owner(n, users))
            rows.append(
                (
                    sid,
                    _uuid(b"user", _owner(n, users)),
                    created,
                    created,
                    expires,
                    revoked,
                    None if revoked is None else "logout",
                    seal_user(aead, "auth_sessions", "ip", sid, f"203.0.113.{n % 250}"),
                    seal_user(aead, "auth_sessions", "user_agent", sid, agent),
                    created,
                    "pwd",
                )
            )
        return rows

    def token_rows(chunk: range) -> list[tuple[Any, ...]]:
        rows = []
        for n in chunk:
            created, expires, revoked = shape(n)
            sid = _uuid(b"session", n)
            rows.append(
                (
                    sid.hex,
                    _uuid(b"user", _owner(n, users)),
                    sid,
                    hashlib.sha256(sid.bytes).hexdigest(),
                    created,
                    expires,
                    revoked,
                )
            )
        return rows

    await _copy(
        conn,
        "auth_sessions",
        (
            "id",
            "user_id",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "revoked_reason",
            "ip",
            "user_agent",
            "auth_time",
            "amr",
        ),
        sessions,
        session_rows,
    )
    await _copy(
        conn,
        "refresh_tokens",
        ("jti", "user_id", "session_id", "token_hash", "created_at", "expires_at", "revoked_at"),
        sessions,
        token_rows,
    )


def _details(action: str, outcome: str, n: int) -> dict[str, Any]:
    if action == "auth.login":
        return {"method": "password"} if outcome == "success" else {"reason": "bad_password"}
    if action == "auth.logout":
        return {"reason": "logout", "sessions_ended": 1}
    if action == "session.revoked":
        return {"reason": "revoked_by_user", "sessions_ended": 1}
    if action == "member.added":
        return {"role": "viewer"}
    if action == "authz.denied":
        return {"permission": "org:update", "path": f"/api/v1/orgs/{n % 997}"}
    if action == "org.updated":
        return {"fields": ["name"]}
    return {}


AUDIT_COLUMNS = (
    "at",
    "org_id",
    "actor_user_id",
    "actor_api_key_id",
    "request_id",
    "ip",
    "action",
    "entity_type",
    "entity_id",
    "outcome",
    "details",
    "prev_hash",
    "hash",
)


def _chains(orgs: int) -> list[tuple[uuid.UUID | None, int]]:
    # (org_id, weight): half of all events are the platform's, the rest spread evenly.
    return [(None, max(orgs, 1)), *((_uuid(b"org", k), 1) for k in range(orgs))]


def _lanes(orgs: int, lanes: int) -> list[list[tuple[uuid.UUID | None, int]]]:
    # The chains of each lane, heaviest first to the lightest lane: the lanes end together.
    split: list[list[tuple[uuid.UUID | None, int]]] = [[] for _ in range(lanes)]
    for chain in sorted(_chains(orgs), key=lambda c: -c[1]):
        min(split, key=lambda lane: sum(w for _, w in lane)).append(chain)
    return split


def _audit_lane(
    database: str, lane: int, lanes: int, rows: int, orgs: int, users: int, now: datetime
) -> int:
    """Write this lane's share of the audit rows, its chains' (a chain's rows are all written
    by one process, in order, so ids grow along it)."""
    from authkeep.db.audit import chain_key, entry_hash, genesis_hash, normalize_details
    from authkeep.db.audit_ips import ip_context
    from authkeep.security.envelope import Envelope

    envelope = _envelope()
    mine = _lanes(orgs, lanes)[lane]
    if not mine:
        return 0
    weight = sum(w for _, w in _chains(orgs))
    share = rows * sum(w for _, w in mine) // weight
    cumulative = list(itertools.accumulate(w for _, w in mine))
    org_ids = [org for org, _ in mine]
    rng = random.Random(lane)
    actions = [(a, o) for a, o, w in _ACTIONS for _ in range(w)]
    heads = {chain_key(org): genesis_hash(chain_key(org)) for org in org_ids}
    start = now - timedelta(days=180)
    step = (now - timedelta(minutes=5) - start) / max(share, 1)

    def audit_rows(chunk: range) -> list[tuple[Any, ...]]:
        made = []
        for n in chunk:
            org = rng.choices(org_ids, cum_weights=cumulative)[0]
            action, outcome = actions[rng.randrange(len(actions))]
            owner = rng.randrange(users)
            actor: uuid.UUID | None = _uuid(b"user", owner)
            if action == "auth.login" and outcome == "failure":
                actor = None  # a failed sign-in names no account
            content: dict[str, Any] = {
                "org_id": org,
                "actor_user_id": actor,
                "actor_api_key_id": None,
                "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "action": action,
                "entity_type": None if actor is None else "user",
                "entity_id": None if actor is None else str(actor),
                "outcome": outcome,
                "details": normalize_details(_details(action, outcome, n)),
            }
            # The address sealed as db/audit_ips.py seals it: the actor's key, else the
            # master ring, bound to what the row says.
            context = ip_context(
                **{k: content[k] for k in ("org_id", "actor_user_id", "actor_api_key_id")},
                **{k: content[k] for k in ("request_id", "action", "entity_type", "entity_id")},
            )
            address = f"198.51.100.{n % 250}"
            content["ip"] = (
                envelope.seal(address, context=context)
                if actor is None
                else Envelope.seal_with(_cipher(owner), address, context=context)
            )
            at = start + step * n
            chain = chain_key(org)
            prev = heads[chain]
            heads[chain] = row_hash = entry_hash(at=at, prev_hash=prev, **content)
            made.append(
                (
                    at,
                    org,
                    actor,
                    None,
                    content["request_id"],
                    content["ip"],
                    action,
                    content["entity_type"],
                    content["entity_id"],
                    outcome,
                    json.dumps(content["details"]),
                    prev,
                    row_hash,
                )
            )
        return made

    async def run() -> None:
        conn = await _connect(database)
        try:
            await _copy(conn, "audit_log", AUDIT_COLUMNS, share, audit_rows, quiet=lane != 0)
        finally:
            await conn.close()

    asyncio.run(run())
    return share


def seed_audit(database: str, rows: int, orgs: int, users: int, now: datetime) -> int:
    """About ``rows`` chained audit rows over ``orgs`` organization chains and the platform
    chain, computed and copied by one process per core (each owning whole chains); returns
    the rows written."""
    if rows <= 0:
        return 0
    lanes = min(os.cpu_count() or 1, len(_chains(orgs)))
    with concurrent.futures.ProcessPoolExecutor(lanes) as pool:
        shares = [
            pool.submit(_audit_lane, database, lane, lanes, rows, orgs, users, now)
            for lane in range(lanes)
        ]
        return sum(share.result() for share in shares)


async def _without_secondary_indexes(conn: Any, table: str) -> list[str]:
    """Drop ``table``'s indexes, unique and foreign-key constraints (not its primary key);
    return the statements that put them back exactly as the migrations made them, foreign
    keys last.

    Building a B-tree once over sorted keys is many times faster than growing it by random
    inserts (the hashes, user ids and entity ids of millions of rows are random keys), and
    a foreign key validated once is a join instead of a look-up per row."""
    constraints = await conn.fetch(
        "SELECT conname, contype, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype IN ('u', 'f') ORDER BY contype DESC",
        table,
    )
    indexes = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes AS i WHERE i.tablename = $1 "
        "AND i.schemaname = current_schema() AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c "
        "WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))"
        "::regclass AND c.contype IN ('p', 'u'))",
        table,
    )
    restore: list[str] = []
    foreign: list[str] = []
    for row in constraints:
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{row["conname"]}"')
        add = f'ALTER TABLE {table} ADD CONSTRAINT "{row["conname"]}" {row["definition"]}'
        (foreign if row["contype"] == "f" else restore).append(add)
    for row in indexes:
        await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        restore.append(row["indexdef"])
    return restore + foreign


async def _connect(database: str) -> Any:
    import asyncpg

    return await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + database)


async def _bulk(
    conn: Any, tables: Sequence[str], phases: Sequence[tuple[str, Callable[[], Any]]]
) -> dict[str, float]:
    # Load with the tables' secondary structures dropped, rebuild them, then VACUUM ANALYZE.
    timings: dict[str, float] = {}
    restore: list[str] = []
    for table in tables:
        restore += await _without_secondary_indexes(conn, table)
    for name, run in phases:
        started = time.perf_counter()
        await run()
        timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    await conn.execute("SET maintenance_work_mem = '512MB'")
    # Primary and unique keys first (foreign keys need them), foreign keys last.
    for statement in sorted(restore, key=lambda sql: "FOREIGN KEY" in sql):
        await conn.execute(statement)
    timings["indexes and keys"] = time.perf_counter() - started
    started = time.perf_counter()
    for table in tables:
        await conn.execute(f"VACUUM ANALYZE {table}")
    timings["vacuum analyze"] = time.perf_counter() - started
    return timings


def create_and_migrate(database: str) -> None:
    """Drop ``database`` if it exists, create it, and migrate it with ``authkeep migrate``."""
    pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    pg(f'CREATE DATABASE "{database}"')
    subprocess.run(
        [sys.executable, "-m", "authkeep", "migrate"],
        env={**os.environ, **scale_env(database)},
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


async def seed(
    database: str, *, users: int, sessions: int, expired: int, audit: int, orgs: int
) -> dict[str, float]:
    """Fill the migrated ``database``; returns seconds per phase."""
    now = datetime.now(UTC)
    conn = await _connect(database)
    try:
        return await _bulk(
            conn,
            ("users", "user_keys", "auth_sessions", "refresh_tokens", "audit_log"),
            (
                ("users", lambda: seed_users(conn, users, now)),
                ("sessions", lambda: seed_sessions(conn, sessions, expired, users, now)),
                ("audit", lambda: asyncio.to_thread(seed_audit, database, audit, orgs, users, now)),
            ),
        )
    finally:
        await conn.close()


async def reseed_sessions(database: str, *, sessions: int, expired: int) -> dict[str, float]:
    """Replace every session and refresh token of a seeded ``database`` with a fresh set
    (after a purge emptied the ended ones); returns seconds per phase."""
    now = datetime.now(UTC)
    conn = await _connect(database)
    try:
        users = await conn.fetchval(
            "SELECT count(*) FROM users WHERE hashed_password LIKE '%placeholderplaceholder%'"
        )
        await conn.execute("TRUNCATE refresh_tokens, auth_sessions")
        return await _bulk(
            conn,
            ("auth_sessions", "refresh_tokens"),
            (("sessions", lambda: seed_sessions(conn, sessions, expired, int(users), now)),),
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=2_000_000)
    parser.add_argument("--expired", type=int, default=1_000_000, help="sessions purge may delete")
    parser.add_argument("--audit", type=int, default=10_000_000, help="audit rows")
    parser.add_argument("--orgs", type=int, default=100, help="organization chains")
    parser.add_argument(
        "--sessions-only",
        action="store_true",
        help="replace the sessions of an already seeded --database (after a purge)",
    )
    args = parser.parse_args()
    if args.expired > args.sessions:
        parser.error("--expired cannot exceed --sessions")
    if args.users < 1 and (args.sessions or args.audit):
        parser.error("sessions and audit rows need --users of at least 1")
    started = time.perf_counter()
    if args.sessions_only:
        timings = asyncio.run(
            reseed_sessions(args.database, sessions=args.sessions, expired=args.expired)
        )
        for name, seconds in timings.items():
            print(f"{name:16} {seconds:8.1f} s")
        return
    create_and_migrate(args.database)
    timings = asyncio.run(
        seed(
            args.database,
            users=args.users,
            sessions=args.sessions,
            expired=args.expired,
            audit=args.audit,
            orgs=args.orgs,
        )
    )
    for name, seconds in timings.items():
        print(f"{name:16} {seconds:8.1f} s")
    print(f"{args.database}: seeded in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
