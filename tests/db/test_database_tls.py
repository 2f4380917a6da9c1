"""TLS to PostgreSQL, against a throw-away cluster that takes TLS connections only.

One cluster for the module (initdb in a temporary directory, ``ssl = on``, ``hostssl`` lines
alone in pg_hba.conf), its certificate issued for ``localhost`` only by a CA made here with
``cryptography``. With ``verify-full`` and that CA, authkeep migrates, starts, answers
``/health/ready`` and signs a user in, over an encrypted connection; an impostor's CA, a host
name the certificate does not name, clear text to this server or ``require`` to a server
without TLS are refused at start in one line that names the setting to fix.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from authkeep import Authkeep, Settings, create_app
from authkeep.cli import app as cli_app
from authkeep.db.engine import Database
from authkeep.db.migrate import run_migrations
from authkeep.tls import DatabaseTLS, TLSError
from conftest import PG_ADMIN_URL, TEST_SECRET, unavailable
from helpers import PASSWORD, app_of, authkeep_of, client_for, login, register, running
from tls_helpers import Authority, TLSPostgres, tls_postgres_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# The server's certificate names this host only: 127.0.0.1 is "another host" to it.
CERT_HOSTS = ["localhost"]


class Cluster:
    """The module's TLS-only cluster, its CA and an impostor's."""

    def __init__(self, pg: TLSPostgres, ca: Authority, impostor: Authority) -> None:
        self.pg = pg
        self.ca = ca
        self.impostor = impostor

    def url(self, host: str = "localhost") -> str:
        return f"postgresql+asyncpg://postgres@{host}:{self.pg.port}/authkeep"

    def settings(self, host: str = "localhost", **values: Any) -> Settings:
        base: dict[str, Any] = {
            "env": "test",
            "secret_key": TEST_SECRET,
            "database_url": self.url(host),
            "database_ssl_mode": "verify-full",
            "database_ssl_ca_file": self.ca.cert_file,
            "hash_workers": 1,
            "argon2_memory_kib": 8192,
            "argon2_time_cost": 1,
            "rate_limit_enabled": False,
        }
        base.update(values)
        return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster, started, with an ``authkeep`` database migrated over verify-full TLS
    (``authkeep migrate``'s own path)."""
    certs = tmp_path_factory.mktemp("pki")
    ca = Authority.create(certs, "authkeep-test-ca")
    impostor = Authority.create(certs, "impostor-ca")
    pg = tls_postgres_or_skip(ca, CERT_HOSTS)
    try:

        async def create() -> None:
            conn = await asyncpg.connect(pg.plain_url(), timeout=10)
            try:
                await conn.execute("CREATE DATABASE authkeep")
            finally:
                await conn.close()

        asyncio.run(create())
        found = Cluster(pg, ca, impostor)
        asyncio.run(run_migrations(found.settings()))
        yield found
    finally:
        pg.remove()


async def is_encrypted(db: Database) -> bool:
    """Whether ``db``'s connection to the server is TLS, as the server sees it."""
    async with db.reading() as conn:
        found = await conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
        return bool(found.scalar_one())


@pytest.fixture
async def served(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """authkeep on the cluster with verify-full and the right CA, started."""
    application = create_app(cluster.settings())
    async with running(application), client_for(application) as http:
        yield http


async def start_refusal(settings: Settings) -> str:
    """The message of the TLSError that stops ``settings``' authkeep at start."""
    authkeep = Authkeep(settings, configure_logs=False)
    try:
        await authkeep.start()
    except TLSError as exc:
        return str(exc)
    await authkeep.stop()
    pytest.fail("authkeep started: the TLS failure went unnoticed")


async def test_verify_full_with_the_right_ca_starts_is_ready_and_signs_in(
    served: httpx.AsyncClient, cluster: Cluster
) -> None:
    ready = await served.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "ok"
    await register(served, "tls@example.com", verified=True)
    tokens = await login(served, "tls@example.com", PASSWORD)
    me = await served.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    # The server itself says the connection is encrypted (not merely that it worked).
    db = Database(cluster.url(), tls=cluster.settings().database_tls)
    try:
        assert await is_encrypted(db)
    finally:
        await db.close()


async def test_a_ca_that_did_not_issue_the_certificate_is_refused_at_start(
    cluster: Cluster, log_output: Any
) -> None:
    message = await start_refusal(cluster.settings(database_ssl_ca_file=cluster.impostor.cert_file))
    assert "AUTHKEEP_DATABASE_SSL_CA_FILE" in message
    assert "not trusted" in message
    assert f"localhost:{cluster.pg.port}" in message
    # The log of a service that will not start says the same, in one line.
    lines = [json.loads(line) for line in log_output.getvalue().splitlines() if line]
    [failed] = [line for line in lines if line.get("event") == "authkeep_start_failed"]
    assert failed["reason"] == message


async def test_a_host_name_the_certificate_does_not_name_is_refused_at_start(
    cluster: Cluster,
) -> None:
    # The right CA, but reached as 127.0.0.1: the certificate names only localhost, and a
    # certificate for another host is what a man in the middle would present.
    message = await start_refusal(cluster.settings(host="127.0.0.1"))
    assert "does not name the host in AUTHKEEP_DATABASE_URL" in message
    assert "127.0.0.1" in message


async def test_require_without_a_ca_connects_encrypted(cluster: Cluster) -> None:
    # require: encrypted, nothing checked (so 127.0.0.1, which the certificate does not name,
    # connects too).
    settings = cluster.settings(
        host="127.0.0.1", database_ssl_mode="require", database_ssl_ca_file=None
    )
    db = Database(settings.database_url, tls=settings.database_tls)
    try:
        assert await is_encrypted(db)
    finally:
        await db.close()


async def test_clear_text_to_a_tls_only_server_is_refused_naming_the_mode(
    cluster: Cluster,
) -> None:
    message = await start_refusal(
        cluster.settings(database_ssl_mode="disable", database_ssl_ca_file=None)
    )
    assert "accepts TLS connections only" in message
    assert "AUTHKEEP_DATABASE_SSL_MODE=verify-full" in message


async def test_require_against_a_server_without_tls_is_refused() -> None:
    # The shared test server speaks no TLS: require must not fall back to clear text.
    try:
        await (await asyncpg.connect(PG_ADMIN_URL, ssl="disable", timeout=5)).close()
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    url = PG_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    db = Database(url, tls=DatabaseTLS("require"))
    try:
        with pytest.raises(TLSError, match="does not offer TLS, which AUTHKEEP_DATABASE_SSL_MODE"):
            await db.ping()
    finally:
        await db.close()


def test_migrate_names_the_setting_in_one_line_without_a_traceback(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    values = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_DATABASE_URL": cluster.url(),
        "AUTHKEEP_DATABASE_SSL_MODE": "verify-full",
        "AUTHKEEP_DATABASE_SSL_CA_FILE": str(cluster.impostor.cert_file),
    }
    result = CliRunner().invoke(cli_app, ["migrate"], env=values)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("error: cannot connect to PostgreSQL at localhost")
    assert "AUTHKEEP_DATABASE_SSL_CA_FILE" in line


async def test_readiness_fails_and_logs_the_setting_when_the_certificate_changes(
    served: httpx.AsyncClient, cluster: Cluster, log_output: Any
) -> None:
    assert (await served.get("/health/ready")).status_code == 200
    services = authkeep_of(app_of(served)).services
    # The server now presents a certificate from a CA authkeep does not trust (a man in the
    # middle, or a rotation the client was not told about): new connections are refused.
    await asyncio.to_thread(cluster.pg.present, cluster.impostor, CERT_HOSTS)
    try:
        await _wait_for_new_certificate(cluster)
        await services.db.engine.dispose()  # the pool's live connections predate the swap
        ready = await served.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["database"] == "unavailable"
        # The body says no more than before; the log says what to fix.
        assert "SSL" not in ready.text
        lines = [json.loads(line) for line in log_output.getvalue().splitlines() if line]
        [failed] = [line for line in lines if line.get("event") == "readiness_database_failed"]
        assert "AUTHKEEP_DATABASE_SSL_CA_FILE" in failed["reason"]
    finally:
        await asyncio.to_thread(cluster.pg.present, cluster.ca, CERT_HOSTS)
        await _wait_for_new_certificate(cluster, issuer=cluster.ca)
    await services.db.engine.dispose()
    assert (await served.get("/health/ready")).status_code == 200


async def _wait_for_new_certificate(cluster: Cluster, issuer: Authority | None = None) -> None:
    """Wait until the reloaded server presents a certificate from ``issuer`` (the impostor
    by default): ``pg_ctl reload`` only signals the postmaster."""
    import ssl

    wanted = issuer or cluster.impostor
    context = ssl.create_default_context(cafile=str(wanted.cert_file))
    for _ in range(100):
        try:
            conn = await asyncpg.connect(
                f"postgresql://postgres@localhost:{cluster.pg.port}/authkeep",
                ssl=context,
                timeout=5,
            )
        except (ssl.SSLError, OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.05)
            continue
        await conn.close()
        return
    pytest.fail("the cluster did not present the new certificate:\n" + cluster.pg.log_tail())
