"""A real uvicorn server in a thread of the test process, for schemathesis to fuzz."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from authkeep import Settings, create_app
from authkeep.db.engine import Database
from authkeep.db.migrate import upgrade
from helpers import PASSWORD

FUZZ_USER = "fuzzer@example.com"


def fuzz_settings(database_url: str) -> Settings:
    """The fuzzed deployment: limits off (fuzzing is load, and 429s would hide the routes'
    own answers) and cheap hashing (no case is about the hash)."""
    return Settings(
        env="test",
        secret_key="fuzz-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        database_url=database_url,
        rate_limit_enabled=False,
        argon2_memory_kib=8192,
        argon2_time_cost=1,
        log_level="WARNING",
    )


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """authkeep on SQLite, served by uvicorn on a free loopback port."""
    path: Path = tmp_path_factory.mktemp("fuzz") / "authkeep.db"
    url = f"sqlite+aiosqlite:///{path}"

    async def migrate() -> None:
        db = Database(url)
        try:
            await upgrade(db)
        finally:
            await db.close()

    asyncio.run(migrate())
    config = uvicorn.Config(
        create_app(fuzz_settings(url)),
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
    response = httpx.post(
        base + "/api/v1/auth/register", json={"email": FUZZ_USER, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    yield base
    server.should_exit = True
    thread.join(timeout=15)


def fresh_token(base: str) -> str:
    """A new access token for the fuzz user (a fuzzed logout may have ended the last one)."""
    response = httpx.post(
        base + "/api/v1/auth/login", json={"email": FUZZ_USER, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
