"""Deployment proof: the production layout — ``authkeep serve --workers 4`` in production
mode, on a fresh PostgreSQL database (the app connecting as a restricted role, migrations as
the owner) and Redis — attacked over real HTTP with the whole corpus of ``tests/attacks``.

Every attack must end in its expected 4xx and never a 500, whichever worker answers: the
kernel deals connections to the four processes, so a check that held in one process only (a
revocation, a login counter) would show here. Each attack comes from its own loopback
address (``127.0.0.N``), a real peer of its own, so that one attack's failed logins do not
throttle the next one's set-up, exactly as two attackers on two hosts would not.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from attacks.corpus import ATTACKS, Target, attack_settings, check, make_target
from authkeep import Settings
from authkeep.security.keys import generate_key
from conftest import GENEROUS_LIMITS, TEST_SECRET, _pg_admin, pg_async_url, unavailable
from helpers import TEST_DATA_KEY
from servers import Server, serving

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

WORKERS = 4
NAMES = sorted(ATTACKS)


@dataclass(frozen=True)
class Deployment:
    server: Server
    settings: Settings
    """What the attacker's signer needs: the deployment's key directory."""


def env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[tuple[str, str, str]]:
    """A new PostgreSQL database and its two restricted roles, dropped afterwards."""
    tag = uuid.uuid4().hex[:10]
    name, app_role, purge_role = f"authkeep_deploy_{tag}", f"ak_app_{tag}", f"ak_purge_{tag}"
    role = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
    try:
        asyncio.run(
            _pg_admin(
                [
                    f'CREATE DATABASE "{name}"',
                    f"CREATE ROLE {app_role} {role}",
                    f"CREATE ROLE {purge_role} {role}",
                ]
            )
        )
    except Exception as exc:
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    try:
        yield name, app_role, purge_role
    finally:
        asyncio.run(
            _pg_admin(
                [
                    f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                    f"DROP ROLE IF EXISTS {app_role}",
                    f"DROP ROLE IF EXISTS {purge_role}",
                ]
            )
        )


def worker_pids(server: Server) -> list[int]:
    """The worker processes uvicorn spawned under ``server`` (multiprocessing children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.proc.pid and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def deployment(
    fresh_database: tuple[str, str, str],
    redis_available: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    name, app_role, purge_role = fresh_database
    workdir = tmp_path_factory.mktemp("deploy")
    keys = workdir / "keys"
    keys.mkdir()
    generate_key(keys, "EdDSA")
    values = {**GENEROUS_LIMITS, **attack_settings()}
    env = {f"AUTHKEEP_{key.upper()}": env_value(value) for key, value in values.items()}
    env.update(
        {
            "AUTHKEEP_ENV": "production",
            "AUTHKEEP_SECRET_KEY": TEST_SECRET,
            "AUTHKEEP_JWT_KEYS_DIR": str(keys),
            "AUTHKEEP_DATABASE_URL": pg_async_url(name, app_role),
            "AUTHKEEP_MIGRATION_DATABASE_URL": pg_async_url(name),
            "AUTHKEEP_DATABASE_APP_ROLE": app_role,
            "AUTHKEEP_AUDIT_PURGE_ROLE": purge_role,
            "AUTHKEEP_REDIS_URL": redis_available,
            "AUTHKEEP_REDIS_PREFIX": f"authkeep-deploy:{uuid.uuid4().hex[:12]}:",
            "AUTHKEEP_TRUSTED_HOSTS": '["localhost", "127.0.0.1"]',
            "AUTHKEEP_EMAIL_BACKEND": "file",
            "AUTHKEEP_EMAIL_FILE_DIR": str(workdir / "mail"),
            "AUTHKEEP_PUBLIC_URL": "https://app.example.com",
            "AUTHKEEP_DATA_KEYS": TEST_DATA_KEY,
            # The attackers sign up and log in at once; verification links are another
            # test's subject (tests/http/test_signup.py). Production only warns about this.
            "AUTHKEEP_EMAIL_VERIFICATION": "optional",
            "AUTHKEEP_HASH_WORKERS": "1",
            "AUTHKEEP_LOG_LEVEL": "WARNING",
        }
    )
    with serving(env, workdir, "deploy", workers=WORKERS) as server:
        assert len(worker_pids(server)) == WORKERS, server.log_tail()
        signing = Settings(env="test", secret_key=TEST_SECRET, jwt_keys_dir=keys)
        yield Deployment(server, signing)


@pytest.fixture
async def attacker(deployment: Deployment, request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """A target on the deployment, from a loopback address of this test's own."""
    index = request.node.callspec.params.get("name")
    host = 10 + (NAMES.index(index) if index in NAMES else len(NAMES))
    transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{host}")
    async with httpx.AsyncClient(
        transport=transport, base_url=deployment.server.url, timeout=30.0
    ) as http:
        email = f"attacker-{uuid.uuid4().hex[:10]}@example.com"
        yield await make_target(http, deployment.settings, email)


@pytest.mark.parametrize("name", NAMES)
async def test_attack_is_refused_by_four_workers(
    name: str, attacker: Target, deployment: Deployment
) -> None:
    responses = await ATTACKS[name](attacker)
    check(responses, attacker.access_token, attacker.refresh_token, attacker.password)
    log = deployment.server.log_tail(1_000_000)
    assert "unhandled_error" not in log, log[-3000:]


@pytest.mark.parametrize("name", ["genuine"])
async def test_the_deployment_target_is_genuine(
    name: str, attacker: Target, deployment: Deployment
) -> None:
    """The starting position is real — the untampered token gets in, through every worker —
    so the refusals above are the deployment's doing. Also: the four workers are up."""
    assert len(worker_pids(deployment.server)) == WORKERS
    for _ in range(2 * WORKERS):
        response = await attacker.http.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {attacker.access_token}"}
        )
        assert response.status_code == 200
        assert response.json()["email"] == attacker.email


OVERSIZED_BODY = 5 * 1024 * 1024
OVERSIZED_HEADER = 200 * 1024


async def _exchange(port: int, head: bytes, body: list[bytes]) -> tuple[int | str, bytes]:
    """Send a whole request before reading anything (as most clients do), then read the answer
    to the end: its status (or the socket error in its place) and its body."""
    try:
        async with asyncio.timeout(30):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.9", 0)
            )
            try:
                writer.write(head)
                for chunk in body:
                    writer.write(chunk)
                    await writer.drain()
                answer = await reader.read()
            finally:
                writer.close()
    except OSError as exc:  # a reset: the answer never reached the client
        return type(exc).__name__, b""
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_oversized_requests_get_their_answer_not_a_reset(deployment: Deployment) -> None:
    """A 5 MB body (declared or chunked) and a 200 kB header, sent whole by a client that reads
    only afterwards, get their 413 and 431 from every worker. Before the lingering close, the
    workers answered and closed at once, and the unread rest made the kernel reset the
    connection: most of these clients saw "connection reset" instead."""
    port = int(deployment.server.url.rsplit(":", 1)[1])
    piece = b"x" * 65536
    pieces = [piece] * (OVERSIZED_BODY // len(piece))
    post = b"POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    post += b"Content-Type: application/json\r\n"
    declared = post + b"Content-Length: %d\r\n\r\n" % OVERSIZED_BODY
    chunked = post + b"Transfer-Encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * len(pieces) + [b"0\r\n\r\n"]
    header = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * OVERSIZED_HEADER
    cases = [(declared, pieces, 413), (chunked, chunks, 413), (header + b"\r\n\r\n", [], 431)]
    rounds = 3 * WORKERS
    limit = asyncio.Semaphore(2 * WORKERS)

    async def one(head: bytes, body: list[bytes]) -> tuple[int | str, bytes]:
        async with limit:
            return await _exchange(port, head, body)

    results = await asyncio.gather(
        *(one(head, body) for _ in range(rounds) for head, body, _status in cases)
    )
    expected = [status for _ in range(rounds) for _head, _body, status in cases]
    assert [status for status, _ in results] == expected
    details = {json.loads(body)["detail"] for _, body in results}
    assert details == {
        "Request body too large (limit 1048576 bytes)",
        "Request header fields too large (limit 16384 bytes)",
    }
