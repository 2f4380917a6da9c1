"""What encryption at rest costs: login and the authenticated read, with and without it, and
how fast ``authkeep keys rotate-data`` moves 100,000 accounts to a new data key.

    .venv/bin/python bench/privacy.py [--seconds 5] [--rounds 3] [--users 100000]
                                      [--baseline-rev REV] [--skip-http]

(a) **Before/after**: the revision before encryption at rest (``--baseline-rev``, default
the last commit without it) is checked out into a temporary git worktree and served beside
the current code — each ``uvicorn … create_app`` with one worker on its own PostgreSQL
database, Redis revocation, rate limiter off, log level WARNING — so both run the same
requests on the same machine in the same minutes. wrk alternates between them
(``harness.alternate_rounds``): a login storm (``POST /api/v1/auth/login``, 64
connections; argon2id dominates it, the encryption adds the user-key unwrap, two seals of
the session's IP address and user agent, and the email's open) and the authenticated read
(``GET /api/v1/auth/me``: the user row with its wrapped key in one query, email and name
opened). Target: at most 10 % slower.

(b) **Rotation throughput**: ``--users`` accounts (each with its user key, sealed email and
name, blind index) are written straight into a fresh database with COPY, under data key
``k1``; then ``DataRotation`` runs with the ring ``[k2, k1]`` (what ``authkeep keys
rotate-data`` runs) and reports rows per second per phase: re-wrapping user keys and
re-indexing emails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from harness import (
    ROOT,
    WrkResult,
    alternate_rounds,
    authkeep_token,
    free_port,
    header,
    median_run,
    pg,
    pg_url,
    rounds_note,
    server,
    uvicorn_command,
    wrk,
)

# The last commit before encryption at rest (users' email, name, sessions' IP addresses...).
BASELINE_REV = "0441a6a"
PASSWORD = "privacy bench passphrase, long enough"
REDIS = os.environ.get("AUTHKEEP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "privacy-bench-secret-" + "x" * 40
K1 = "k1:" + "A" * 43
K2 = "k2:" + "B" * 43
LOGIN_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email": "%s", "password": "%s"}'
"""


def _env(database: str) -> dict[str, str]:
    return {
        "AUTHKEEP_ENV": "development",
        "AUTHKEEP_SECRET_KEY": SECRET,
        "AUTHKEEP_DATA_KEYS": f'["{K1}"]',
        "AUTHKEEP_DATABASE_URL": pg_url(database),
        "AUTHKEEP_REDIS_URL": REDIS,
        "AUTHKEEP_REDIS_PREFIX": f"bench-privacy-{uuid.uuid4().hex[:8]}:",
        "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        "AUTHKEEP_TRUSTED_HOSTS": '["127.0.0.1", "localhost"]',
    }


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Path]:
    """A temporary git worktree of ``rev`` (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="authkeep-baseline-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(path), rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True
        )


def _fresh_database(name: str) -> None:
    pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg(f'CREATE DATABASE "{name}"')


def _migrate(env: dict[str, str], src: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "authkeep", "migrate"],
        env={**os.environ, **env, "PYTHONPATH": str(src)},
        check=True,
        cwd=src.parent,
        capture_output=True,
    )


def before_after(seconds: int, rounds: int, rev: str) -> None:
    with baseline_tree(rev) as tree:
        variants = {"without encryption": tree / "src", "with encryption": ROOT / "src"}
        with contextlib.ExitStack() as stack:
            targets: dict[tuple[str, str], tuple[str, dict[str, str], str | None]] = {}
            for label, src in variants.items():
                database = "bench_privacy_" + ("before" if src != ROOT / "src" else "after")
                _fresh_database(database)
                env = _env(database)
                _migrate(env, src)
                port = free_port()
                base = stack.enter_context(
                    server(
                        uvicorn_command("authkeep.http.app:create_app", port, factory=True),
                        port=port,
                        env={**env, "PYTHONPATH": str(src)},
                        cwd=src.parent,
                    )
                )
                email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
                token = authkeep_token(base, email, PASSWORD)
                targets[(label, "read")] = (base + "/api/v1/auth/me", {}, token)
                targets[(label, "login")] = (
                    base + "/api/v1/auth/login",
                    {"script": LOGIN_LUA % (email, PASSWORD)},
                    None,
                )

            def measure(url: str, extra: dict[str, str], token: str | None) -> WrkResult:
                headers = {"Authorization": f"Bearer {token}"} if token else None
                return wrk(url, seconds=seconds, headers=headers, script=extra.get("script"))

            for url, extra, token in targets.values():  # warm-up: caches, pools, JIT-free
                wrk(
                    url,
                    seconds=1,
                    script=extra.get("script"),
                    headers={"Authorization": f"Bearer {token}"} if token else None,
                )
            runs = alternate_rounds(
                {key: (lambda t=target: measure(*t)) for key, target in targets.items()}, rounds
            )
    print(f"(a) encryption at rest, before/after ({rounds_note(rounds)}, wrk -c64 {seconds}s)")
    print(f"{'variant':30} {header()}")
    for kind in ("login", "read"):
        base_run = median_run(runs[("without encryption", kind)])
        new_run = median_run(runs[("with encryption", kind)])
        for label, run in (("without encryption", base_run), ("with encryption", new_run)):
            print(f"{kind + ', ' + label:30} {run.row()}")
        cost = 1 - new_run.requests_per_second / base_run.requests_per_second
        verdict = "met" if cost <= 0.10 else "NOT met"
        change = f"{cost:.1%} slower" if cost >= 0 else f"{-cost:.1%} faster (noise)"
        print(f"{kind}: {change} with encryption (target at most 10 % slower: {verdict})")
    print()


async def _seed(database: str, users: int) -> None:
    import asyncpg

    from authkeep.security.data_keys import SecretBox
    from authkeep.security.emails import email_key
    from authkeep.security.envelope import Envelope, field_context

    envelope = Envelope(SecretBox.from_entries([K1]), cache_size=1)
    now = datetime.now(UTC)
    url = pg_url(database, driver="postgresql")
    conn = await asyncpg.connect(url)
    try:
        user_rows = []
        key_rows = []
        for n in range(users):
            user_id = uuid.uuid4()
            key = envelope.new_user_key()
            aead = envelope.remember(user_id, key)
            email = f"user{n}@example.com"
            user_rows.append(
                (
                    user_id,
                    envelope.seal_with(
                        aead, email, context=field_context("users", "email", user_id)
                    ),
                    envelope.blind_index(email_key(email)),
                    envelope.seal_with(
                        aead, f"User {n}", context=field_context("users", "full_name", user_id)
                    ),
                    "$argon2id$placeholder",
                    True,
                    False,
                    now,
                    now,
                    False,
                )
            )
            key_rows.append((user_id, envelope.wrap(user_id, key), now))
        await conn.copy_records_to_table(
            "users",
            records=user_rows,
            columns=[
                "id",
                "email",
                "email_key",
                "full_name",
                "hashed_password",
                "is_active",
                "is_superuser",
                "created_at",
                "updated_at",
                "mfa_enabled",
            ],
        )
        await conn.copy_records_to_table(
            "user_keys", records=key_rows, columns=["user_id", "wrapped_key", "created_at"]
        )
    finally:
        await conn.close()


async def _rotate(database: str) -> None:
    from authkeep.db.engine import Database
    from authkeep.security.data_keys import SecretBox
    from authkeep.security.envelope import Envelope
    from authkeep.services.privacy.rotation import DataRotation

    db = Database(pg_url(database))
    try:
        rotation = DataRotation(db, Envelope(SecretBox.from_entries([K2, K1])), batch_size=1000)
        started = time.perf_counter()
        report = await rotation.run()
        elapsed = time.perf_counter() - started
    finally:
        await db.close()
    for phase in report.phases:
        if phase.changed:
            print(
                f"{phase.name:28} {phase.changed:>9,} rows {phase.seconds:7.1f} s "
                f"{phase.rows_per_second:>10,.0f} rows/s"
            )
    print(f"{'all phases':28} {report.changed:>9,} rows {elapsed:7.1f} s")


def rotation(users: int) -> None:
    database = "bench_privacy_rotation"
    _fresh_database(database)
    env = _env(database)
    _migrate(env, ROOT / "src")
    started = time.perf_counter()
    asyncio.run(_seed(database, users))
    print(
        f"(b) rotate-data over {users:,} accounts (seeded with COPY in "
        f"{time.perf_counter() - started:.1f} s), PostgreSQL, batches of 1,000"
    )
    asyncio.run(_rotate(database))
    pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--users", type=int, default=100_000, help="accounts for (b)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="revision without it")
    parser.add_argument("--skip-http", action="store_true", help="only the rotation part")
    args = parser.parse_args()
    if not args.skip_http:
        before_after(args.seconds, args.rounds, args.baseline_rev)
    rotation(args.users)


if __name__ == "__main__":
    main()
