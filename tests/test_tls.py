"""authkeep.tls without servers: the contexts each mode builds, what counts as local, how a
Redis URL can turn verification off, and the messages failures become."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from authkeep.db.engine import Database, is_unavailable
from authkeep.tls import (
    DatabaseTLS,
    TLSError,
    database_hosts,
    explain_redis,
    is_local,
    redis_tls_options,
    redis_verifies,
)
from tls_helpers import Authority


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("pki"), "unit-ca")


def test_unset_mode_leaves_the_urls_choice() -> None:
    assert DatabaseTLS().connect_arg() is None


def test_disable_is_clear_text() -> None:
    assert DatabaseTLS("disable").connect_arg() == "disable"


def test_require_encrypts_and_checks_nothing() -> None:
    context = DatabaseTLS("require").connect_arg()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_verify_full_checks_chain_and_host_against_the_ca_only(ca: Authority) -> None:
    context = DatabaseTLS("verify-full", ca.cert_file).connect_arg()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    # Only the configured CA: not the system's public CAs as well.
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "unit-ca"),),)]


def test_an_unreadable_ca_file_is_a_tls_error_naming_the_setting(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    tls = DatabaseTLS("verify-full", garbage, ca_setting="AUTHKEEP_MIGRATION_DATABASE_SSL_CA_FILE")
    with pytest.raises(TLSError, match=r"AUTHKEEP_MIGRATION_DATABASE_SSL_CA_FILE: .* no PEM"):
        tls.connect_arg()
    with pytest.raises(TLSError, match="does not exist"):
        Database(
            "postgresql+asyncpg://u@db.internal/x",
            tls=DatabaseTLS("verify-full", tmp_path / "missing.pem"),
        )


def test_sqlite_ignores_tls(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tls=DatabaseTLS("verify-full"))
    assert db.dialect == "sqlite"


@pytest.mark.parametrize(
    ("host", "local"),
    [
        (None, True),
        ("/var/run/postgresql", True),
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("db.internal", False),
        ("10.0.0.5", False),
        ("localhost.example.com", False),
    ],
)
def test_what_counts_as_local(host: str | None, local: bool) -> None:
    assert is_local(host) is local


def test_database_hosts_reads_multi_host_urls() -> None:
    assert database_hosts("postgresql+asyncpg://u:p@db.internal:5432/x") == ["db.internal"]
    url = "postgresql+asyncpg://u@/x?host=a.internal:5432&host=b.internal:5433"
    assert database_hosts(url) == ["a.internal", "b.internal"]
    assert database_hosts("postgresql+asyncpg://u@/x?host=/run/postgresql") == ["/run/postgresql"]


@pytest.mark.parametrize(
    ("url", "verifies"),
    [
        ("rediss://cache.internal:6380/0", True),
        ("rediss://:pw@cache.internal:6380/0?ssl_cert_reqs=required", True),
        ("rediss://cache.internal:6380/0?ssl_cert_reqs=none", False),
        ("rediss://cache.internal:6380/0?ssl_cert_reqs=optional", False),
        ("rediss://cache.internal:6380/0?ssl_check_hostname=false", False),
        ("redis://cache.internal:6379/0", False),
    ],
)
def test_redis_url_verification(url: str, verifies: bool) -> None:
    assert redis_verifies(url) is verifies


def test_redis_options_verify_explicitly(ca: Authority) -> None:
    assert redis_tls_options("redis://cache:6379/0", ca.cert_file) == {}
    options = redis_tls_options("rediss://cache:6380/0", ca.cert_file)
    assert options["ssl_cert_reqs"] == "required"
    assert options["ssl_check_hostname"] is True
    assert options["ssl_ca_certs"] == str(ca.cert_file)


def test_messages_name_host_and_port_never_the_password() -> None:
    refused = ConnectionError('PostgreSQL server at "db:5432" rejected SSL upgrade')
    message = DatabaseTLS("require").explain(refused, "postgresql+asyncpg://app:s3cr3t@db:5432/x")
    assert message is not None
    assert "s3cr3t" not in message
    assert "at db:5432 over TLS (AUTHKEEP_DATABASE_SSL_MODE=require)" in message
    redis_message = explain_redis(
        ssl.SSLError(1, "[SSL] record layer failure"), "rediss://:s3cr3t@cache:6380/0", None
    )
    assert redis_message is not None
    assert "s3cr3t" not in redis_message


def test_an_outage_is_not_called_a_tls_failure() -> None:
    assert DatabaseTLS("verify-full").explain(ConnectionRefusedError(111, "refused"), "x") is None
    assert explain_redis(TimeoutError(), "rediss://cache:6380/0", None) is None


def test_a_tls_failure_mid_service_is_an_outage_to_requests() -> None:
    # So a request that meets it gets the usual 503, never a 500.
    assert is_unavailable(TLSError("cannot connect to PostgreSQL at db:5432 over TLS"))
