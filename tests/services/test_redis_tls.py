"""TLS to Redis: a throw-away ``redis-server`` that listens for TLS only, its certificate
issued for ``localhost`` by a CA made here. ``rediss://`` with that CA carries revocations
and rate limits (the limiter's own client included); an impostor's CA or a host name the
certificate does not name stops the start in one line naming the setting."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authkeep import Authkeep, Settings, create_app
from authkeep.tls import TLSError
from conftest import GENEROUS_LIMITS, TEST_SECRET
from helpers import PASSWORD, bearer, client_for, login, register, running
from tls_helpers import Authority, TLSRedis, tls_redis

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority]:
    """The CA that issues the server's certificate, and an impostor's."""
    directory = tmp_path_factory.mktemp("pki")
    return Authority.create(directory, "redis-test-ca"), Authority.create(directory, "impostor")


@pytest.fixture(scope="module")
def server(
    pki: tuple[Authority, Authority], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TLSRedis]:
    with tls_redis(pki[0], ["localhost"], tmp_path_factory.mktemp("redis")) as running_server:
        yield running_server


def settings_for(tmp_path: Path, sqlite_template: Path, **values: Any) -> Settings:
    path = tmp_path / "authkeep.db"
    shutil.copy(sqlite_template, path)
    base: dict[str, Any] = {
        "env": "test",
        "secret_key": TEST_SECRET,
        "database_url": f"sqlite+aiosqlite:///{path}",
        "hash_workers": 1,
        "argon2_memory_kib": 8192,
        "argon2_time_cost": 1,
        **GENEROUS_LIMITS,
    }
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


async def test_rediss_with_the_right_ca_carries_limits_and_revocations(
    server: TLSRedis, pki: tuple[Authority, Authority], tmp_path: Path, sqlite_template: Path
) -> None:
    settings = settings_for(
        tmp_path,
        sqlite_template,
        redis_url=server.url("localhost"),
        redis_ssl_ca_file=pki[0].cert_file,
    )
    application = create_app(settings)
    async with running(application), client_for(application) as http:
        ready = await http.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["redis"] == "ok"
        await register(http, "tls@example.com", verified=True)
        tokens = await login(http, "tls@example.com", PASSWORD)  # the limiter's client
        headers = bearer(tokens["access_token"])
        assert (await http.post("/api/v1/auth/logout", headers=headers)).status_code == 204
        # The revocation went through Redis (the only revocation store with a Redis URL).
        assert (await http.get("/api/v1/auth/me", headers=headers)).status_code == 401


async def start_refusal(settings: Settings) -> str:
    """The message of the TLSError that stops ``settings``' authkeep at start."""
    authkeep = Authkeep(settings, configure_logs=False)
    try:
        await authkeep.start()
    except TLSError as exc:
        return str(exc)
    await authkeep.stop()
    pytest.fail("authkeep started: the TLS failure went unnoticed")


async def test_a_ca_that_did_not_issue_the_certificate_is_refused_at_start(
    server: TLSRedis, pki: tuple[Authority, Authority], tmp_path: Path, sqlite_template: Path
) -> None:
    message = await start_refusal(
        settings_for(
            tmp_path,
            sqlite_template,
            redis_url=server.url("localhost"),
            redis_ssl_ca_file=pki[1].cert_file,
        )
    )
    assert message.startswith(f"cannot connect to Redis at localhost:{server.port} over TLS")
    assert "not trusted" in message
    assert "AUTHKEEP_REDIS_SSL_CA_FILE" in message


async def test_a_host_name_the_certificate_does_not_name_is_refused_at_start(
    server: TLSRedis, pki: tuple[Authority, Authority], tmp_path: Path, sqlite_template: Path
) -> None:
    message = await start_refusal(
        settings_for(
            tmp_path,
            sqlite_template,
            redis_url=server.url("127.0.0.1"),
            redis_ssl_ca_file=pki[0].cert_file,
        )
    )
    assert "does not name the host in AUTHKEEP_REDIS_URL" in message


async def test_without_the_ca_the_system_trust_store_refuses_a_private_ca(
    server: TLSRedis, tmp_path: Path, sqlite_template: Path
) -> None:
    # rediss:// alone still verifies: against the system's trust store, which does not hold
    # the test CA (no silent fallback to an unchecked connection).
    message = await start_refusal(
        settings_for(tmp_path, sqlite_template, redis_url=server.url("localhost"))
    )
    assert "the system's trust store" in message
