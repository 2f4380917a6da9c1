"""A real uvicorn server in a thread of the test process, for schemathesis to fuzz: on SQLite
and on a fresh PostgreSQL database (as the restricted app role, with Redis), the fuzz user a
platform admin who also administers an organization, so that every route is reached past
its authorization check (``/api/v1/admin/*``, ``/api/v1/audit``, ``/api/v1/api-keys``)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from authkeep import Settings, create_app
from authkeep.db.engine import Database
from authkeep.db.migrate import upgrade
from authkeep.db.roles import RoleConfig
from authkeep.http.app import Authkeep
from conftest import _pg_admin, pg_async_url, unavailable
from helpers import PASSWORD

FUZZ_USER = "fuzzer@example.com"
FUZZ_SECRET = "fuzz-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
_ROLE = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"


def fuzz_settings(database_url: str, **overrides: Any) -> Settings:
    """The fuzzed deployment: limits off (fuzzing is load, and 429s would hide the routes'
    own answers) and cheap hashing (no case is about the hash)."""
    return Settings(
        env="test",
        secret_key=FUZZ_SECRET,
        database_url=database_url,
        rate_limit_enabled=False,
        argon2_memory_kib=8192,
        argon2_time_cost=1,
        log_level="WARNING",
        **overrides,
    )


class FuzzLogin:
    """The fuzz user's access token on one server: one login reused by case after case, and a
    new one on demand (a fuzzed logout may have ended the session, a sensitive route may want
    a more recent sign-in). One kept-alive client: a client per login would build a TLS
    context each time, which costs more than the login."""

    def __init__(self, base: str) -> None:
        self._http = httpx.Client(base_url=base)
        self._token: str | None = None

    def token(self) -> str:
        """The current access token (logs in the first time)."""
        return self._token or self.renew()

    def renew(self) -> str:
        """Log in afresh and return the new access token."""
        response = self._http.post(
            "/api/v1/auth/login", json={"email": FUZZ_USER, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        self._token = str(response.json()["access_token"])
        return self._token

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True)
class FuzzTarget:
    """A running server, the backend under it and the fuzz user's login there."""

    url: str
    backend: str
    login: FuzzLogin


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])],
)
def fuzz_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of a fresh, migrated database: a SQLite file, or a PostgreSQL database of
    this module alone, migrated by the owner and used by a restricted app role (and Redis),
    as in production; dropped afterwards."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("fuzz") / "authkeep.db"
        url = f"sqlite+aiosqlite:///{path}"
        _migrate(url, None)
        yield fuzz_settings(url)
        return
    redis_url: str = request.getfixturevalue("redis_available")
    tag = uuid.uuid4().hex[:10]
    name, app_role, purge_role = f"authkeep_fuzz_{tag}", f"ak_fuzz_{tag}", f"ak_fuzz_purge_{tag}"
    try:
        asyncio.run(
            _pg_admin(
                [
                    f'CREATE DATABASE "{name}"',
                    f"CREATE ROLE {app_role} {_ROLE}",
                    f"CREATE ROLE {purge_role} {_ROLE}",
                ]
            )
        )
    except Exception as exc:
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    try:
        _migrate(pg_async_url(name), RoleConfig(app_role=app_role, purge_role=purge_role))
        yield fuzz_settings(
            pg_async_url(name, app_role),
            migration_database_url=pg_async_url(name),
            database_app_role=app_role,
            audit_purge_role=purge_role,
            audit_purge_database_url=pg_async_url(name, purge_role),
            redis_url=redis_url,
            redis_prefix=f"authkeep-fuzz:{tag}:",
        )
    finally:
        # The database first: a role that still holds grants in it cannot be dropped.
        asyncio.run(
            _pg_admin(
                [
                    f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                    f"DROP ROLE IF EXISTS {app_role}",
                    f"DROP ROLE IF EXISTS {purge_role}",
                ]
            )
        )


def _migrate(owner_url: str, roles: RoleConfig | None) -> None:
    async def run() -> None:
        db = Database(owner_url)
        try:
            await upgrade(db, role_config=roles)
        finally:
            await db.close()

    asyncio.run(run())


async def _create_platform_admin(settings: Settings) -> None:
    # As `authkeep create-admin` does: platform admins exist only through the CLI.
    authkeep = Authkeep(settings)
    services = await authkeep.start()
    try:
        await services.accounts.register(email=FUZZ_USER, password=PASSWORD, is_superuser=True)
    finally:
        await authkeep.stop()


@pytest.fixture(scope="module")
def live_server(fuzz_database: Settings) -> Iterator[FuzzTarget]:
    """authkeep served by uvicorn on a free loopback port; the fuzz user is a platform admin
    and the admin of one organization (its active one at every login)."""
    asyncio.run(_create_platform_admin(fuzz_database))
    config = uvicorn.Config(
        create_app(fuzz_database),
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the fuzzed server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    login = FuzzLogin(base)
    created = httpx.post(
        base + "/api/v1/orgs",
        json={"name": "Fuzz Org"},
        headers={"Authorization": f"Bearer {login.token()}"},
    )
    assert created.status_code == 201, created.text
    # Then a new login: it starts in the organization just made.
    login.renew()
    backend = "postgres" if fuzz_database.database_url.startswith("postgresql") else "sqlite"
    yield FuzzTarget(base, backend, login)
    login.close()
    server.should_exit = True
    thread.join(timeout=15)
