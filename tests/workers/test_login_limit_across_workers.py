"""The per-email login limit holds across processes: four ``authkeep serve`` processes (on
four ports, so the load is spread for certain) share PostgreSQL and Redis; 200 concurrent
logins for one email, dealt round-robin to them, let exactly the configured number through.

An in-process limiter would let each worker admit its own five; a read-then-write counter
would let a race admit more. The moving window's atomic Lua script admits exactly five.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from authkeep import Settings
from conftest import TEST_SECRET
from helpers import PASSWORD
from servers import Server, serving

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

WORKERS = 4
ATTEMPTS = 200
LIMIT = 5
REQUEST_TIMEOUT = 60.0


@pytest.fixture
def servers(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[list[Server]]:
    """Four servers on the test session's PostgreSQL database (as its restricted app role)
    and one Redis key prefix.

    Started one after the other: each runs the (idempotent) migrations and grants at start,
    and concurrent GRANTs on one object can fail in PostgreSQL.
    """
    settings = make_settings()
    assert settings.redis_url is not None
    assert settings.migration_database_url is not None
    assert settings.database_app_role is not None
    env = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": TEST_SECRET,
        "AUTHKEEP_DATABASE_URL": settings.database_url,
        "AUTHKEEP_MIGRATION_DATABASE_URL": settings.migration_database_url,
        "AUTHKEEP_DATABASE_APP_ROLE": settings.database_app_role,
        "AUTHKEEP_AUDIT_PURGE_ROLE": settings.audit_purge_role,
        "AUTHKEEP_REDIS_URL": settings.redis_url.get_secret_value(),
        "AUTHKEEP_REDIS_PREFIX": settings.redis_prefix,
        "AUTHKEEP_HASH_WORKERS": "1",
        "AUTHKEEP_LOG_LEVEL": "WARNING",
        # Only the per-email limit is under test: every other budget is out of reach.
        "AUTHKEEP_LOGIN_RATE_LIMIT": f"{LIMIT}/minute",
        "AUTHKEEP_RATE_LIMIT_PER_MINUTE": "1000000",
        "AUTHKEEP_LOGIN_IP_FAILURE_LIMIT": "100000/minute",
        "AUTHKEEP_REGISTER_RATE_LIMIT": "100000/minute",
    }
    with (
        serving(env, tmp_path, "w0") as w0,
        serving(env, tmp_path, "w1") as w1,
        serving(env, tmp_path, "w2") as w2,
        serving(env, tmp_path, "w3") as w3,
    ):
        yield [w0, w1, w2, w3]


# PostgreSQL + Redis only: SQLite and in-process limits are one process's by design.
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_concurrent_logins_across_workers_admit_exactly_the_limit(
    servers: list[Server],
) -> None:
    email = f"crowd-{uuid.uuid4().hex[:8]}@example.com"
    limits = httpx.Limits(max_connections=ATTEMPTS, max_keepalive_connections=ATTEMPTS)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as http:
        created = await http.post(
            servers[0].url + "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert created.status_code == 202, created.text
        body = {"email": email, "password": PASSWORD}
        responses = await asyncio.gather(
            *(
                http.post(servers[n % WORKERS].url + "/api/v1/auth/login", json=body)
                for n in range(ATTEMPTS)
            )
        )
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: LIMIT, 429: ATTEMPTS - LIMIT}, (
        statuses,
        [server.log_tail(1500) for server in servers],
    )
    per_worker = Counter(
        n % WORKERS for n, response in enumerate(responses) if response.status_code == 429
    )
    assert len(per_worker) == WORKERS  # every worker refused some: the budget is shared
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == str(LIMIT)
