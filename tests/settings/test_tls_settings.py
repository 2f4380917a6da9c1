"""TLS settings: production warns about a database or Redis on another host reached without
verified TLS; a CA file that cannot be used, or that would be ignored, is refused; SQLite
ignores the database's TLS settings (a warning); ``check-config`` prints each of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from authkeep.cli import app
from authkeep.settings import InspectedSettings, Problem, Settings, find_problems
from helpers import TEST_DATA_KEY
from tls_helpers import Authority

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"
REMOTE_PG = "postgresql+asyncpg://app:pw@db.internal:5432/authkeep"
OWNER_PG = "postgresql+asyncpg://owner:pw@db-owner.internal:5432/authkeep"
TLS_SETTINGS = (
    "AUTHKEEP_DATABASE_SSL_MODE",
    "AUTHKEEP_DATABASE_SSL_CA_FILE",
    "AUTHKEEP_DATABASE_URL",
    "AUTHKEEP_MIGRATION_DATABASE_SSL_MODE",
    "AUTHKEEP_MIGRATION_DATABASE_SSL_CA_FILE",
    "AUTHKEEP_MIGRATION_DATABASE_URL",
    "AUTHKEEP_AUDIT_PURGE_DATABASE_SSL_MODE",
    "AUTHKEEP_AUDIT_PURGE_DATABASE_SSL_CA_FILE",
    "AUTHKEEP_REDIS_URL",
    "AUTHKEEP_REDIS_SSL_CA_FILE",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AUTHKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Authority.create(tmp_path_factory.mktemp("pki"), "settings-ca").cert_file


def tls_problems(env: str = "production", **values: Any) -> list[Problem]:
    """The TLS-related problems of settings made of ``values`` (loaded even when refused)."""
    if env == "production":
        values.setdefault("trusted_hosts", ["api.example.com"])
        values.setdefault("email_backend", "smtp")
        values.setdefault("public_url", "https://app.example.com")
        values.setdefault("data_keys", [TEST_DATA_KEY])
    settings = InspectedSettings(_env_file=None, env=env, secret_key=STRONG, **values)  # type: ignore[call-arg]
    # Only this capability's problems (the SQLite, role and Redis-absent notes are others').
    return [
        p
        for p in find_problems(settings)
        if p.setting in TLS_SETTINGS and ("TLS" in p.message or "SSL" in p.message)
    ]


class TestProductionWarnsAboutUnverifiedRemoteConnections:
    def test_a_remote_database_without_a_mode(self) -> None:
        [problem] = tls_problems(database_url=REMOTE_PG)
        assert problem.level == "warning"
        assert problem.setting == "AUTHKEEP_DATABASE_SSL_MODE"
        assert "reaches db.internal without verified TLS" in problem.message
        assert "AUTHKEEP_DATABASE_SSL_MODE=verify-full" in problem.message

    def test_require_is_called_unverified(self) -> None:
        [problem] = tls_problems(database_url=REMOTE_PG, database_ssl_mode="require")
        assert "encrypted but unverified" in problem.message

    def test_disable_is_called_clear_text(self) -> None:
        [problem] = tls_problems(database_url=REMOTE_PG, database_ssl_mode="disable")
        assert "in clear text" in problem.message

    def test_verify_full_is_quiet(self, ca_file: Path) -> None:
        assert (
            tls_problems(
                database_url=REMOTE_PG,
                database_ssl_mode="verify-full",
                database_ssl_ca_file=ca_file,
            )
            == []
        )

    def test_verify_full_in_the_url_is_quiet(self) -> None:
        assert tls_problems(database_url=REMOTE_PG + "?ssl=verify-full") == []

    def test_a_loopback_database_is_quiet(self) -> None:
        for host in ("localhost", "127.0.0.1", "[::1]"):
            assert tls_problems(database_url=f"postgresql+asyncpg://app@{host}/a") == []

    def test_development_is_quiet(self) -> None:
        assert tls_problems("development", database_url=REMOTE_PG) == []

    def test_the_migration_connection_inherits_and_may_override(self, ca_file: Path) -> None:
        verified = {
            "database_url": REMOTE_PG,
            "migration_database_url": OWNER_PG,
            "database_ssl_mode": "verify-full",
            "database_ssl_ca_file": ca_file,
        }
        assert tls_problems(**verified) == []
        [problem] = tls_problems(**verified, migration_database_ssl_mode="require")
        assert problem.setting == "AUTHKEEP_MIGRATION_DATABASE_SSL_MODE"
        assert "AUTHKEEP_MIGRATION_DATABASE_URL reaches db-owner.internal" in problem.message
        # The CA inherited from the app's setting is simply not used by require: no refusal.
        assert problem.level == "warning"

    def test_the_audit_purge_connection_is_checked(self) -> None:
        problems = tls_problems(
            database_url="postgresql+asyncpg://app@127.0.0.1/a",
            audit_purge_database_url="postgresql+asyncpg://purge@db.internal/a",
        )
        assert [p.setting for p in problems] == ["AUTHKEEP_DATABASE_SSL_MODE"]
        assert "AUTHKEEP_AUDIT_PURGE_DATABASE_URL reaches db.internal" in problems[0].message

    def test_one_problem_per_connection_not_three(self) -> None:
        # Migrations and the purge use the app's URL and settings here: said once.
        assert len(tls_problems(database_url=REMOTE_PG)) == 1

    def test_redis_in_clear_text(self) -> None:
        [problem] = tls_problems(redis_url="redis://cache.internal:6379/0")
        assert problem.setting == "AUTHKEEP_REDIS_URL"
        assert problem.level == "warning"
        assert "in clear text (redis://)" in problem.message
        assert "rediss://" in problem.message

    def test_redis_with_verification_turned_off_in_the_url(self) -> None:
        [problem] = tls_problems(redis_url="rediss://cache.internal:6380/0?ssl_cert_reqs=none")
        assert "verification turned off" in problem.message

    def test_verified_or_local_redis_is_quiet(self) -> None:
        assert tls_problems(redis_url="rediss://cache.internal:6380/0") == []
        assert tls_problems(redis_url="redis://127.0.0.1:6379/0") == []
        assert tls_problems(redis_url="unix:///run/redis.sock") == []

    def test_the_redis_password_is_never_in_the_message(self) -> None:
        [problem] = tls_problems(redis_url="redis://:hunter2-s3cr3t@cache.internal:6379/0")
        assert "hunter2-s3cr3t" not in problem.message


class TestRefusals:
    def test_a_missing_ca_file_is_refused_everywhere(self, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere.pem"
        for env in ("development", "production"):
            [problem] = tls_problems(
                env,
                database_url=REMOTE_PG,
                database_ssl_mode="verify-full",
                database_ssl_ca_file=missing,
            )
            assert problem.level == "refuse"
            assert problem.message.startswith("AUTHKEEP_DATABASE_SSL_CA_FILE: ")
            assert "does not exist" in problem.message
        with pytest.raises(ValidationError, match="AUTHKEEP_DATABASE_SSL_CA_FILE"):
            Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=REMOTE_PG,
                database_ssl_mode="verify-full",
                database_ssl_ca_file=missing,
            )

    def test_a_file_without_a_certificate_is_refused(self, tmp_path: Path) -> None:
        garbage = tmp_path / "ca.pem"
        garbage.write_text("-----BEGIN NOTHING-----\n")
        problems = tls_problems(
            "development", redis_url="rediss://c:6380", redis_ssl_ca_file=garbage
        )
        assert [(p.setting, p.level) for p in problems] == [
            ("AUTHKEEP_REDIS_SSL_CA_FILE", "refuse")
        ]
        assert "holds no PEM certificate" in problems[0].message

    @pytest.mark.parametrize("mode", [None, "disable", "require"])
    def test_a_ca_without_verify_full_is_refused(self, ca_file: Path, mode: str | None) -> None:
        [problem] = tls_problems(
            "development",
            database_url=REMOTE_PG,
            database_ssl_mode=mode,
            database_ssl_ca_file=ca_file,
        )
        assert problem.level == "refuse"
        assert "used with verify-full only" in problem.message

    def test_a_redis_ca_without_rediss_is_refused(self, ca_file: Path) -> None:
        for url in ("redis://cache.internal:6379/0", None):
            [problem] = tls_problems("development", redis_url=url, redis_ssl_ca_file=ca_file)
            assert problem.setting == "AUTHKEEP_REDIS_SSL_CA_FILE"
            assert problem.level == "refuse"
            assert "not a rediss:// URL" in problem.message

    def test_libpq_sslmode_in_the_url_is_refused(self) -> None:
        [problem] = tls_problems("development", database_url=REMOTE_PG + "?sslmode=require")
        assert problem.level == "refuse"
        assert "set AUTHKEEP_DATABASE_SSL_MODE instead" in problem.message

    def test_sqlite_ignores_the_database_tls_settings(self, ca_file: Path) -> None:
        problems = tls_problems(
            "development",
            database_url="sqlite+aiosqlite:///./a.db",
            database_ssl_mode="verify-full",
            database_ssl_ca_file=ca_file,
        )
        assert [(p.setting, p.level) for p in problems] == [
            ("AUTHKEEP_DATABASE_SSL_MODE", "warning")
        ]
        assert "is SQLite" in problems[0].message
        assert "ignored" in problems[0].message

    def test_a_mode_the_driver_does_not_know_is_one_line(self) -> None:
        with pytest.raises(ValidationError) as caught:
            Settings(_env_file=None, database_ssl_mode="verify-ca")  # type: ignore[call-arg]
        assert "'disable', 'require' or 'verify-full'" in str(caught.value)


class TestCheckConfig:
    def test_prints_the_warning_and_the_refusal(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("AUTHKEEP_ENV", "production")
        monkeypatch.setenv("AUTHKEEP_DATABASE_URL", REMOTE_PG)
        monkeypatch.setenv("AUTHKEEP_REDIS_URL", "redis://cache.internal:6379/0")
        monkeypatch.setenv("AUTHKEEP_REDIS_SSL_CA_FILE", str(tmp_path / "missing.pem"))
        result = CliRunner().invoke(app, ["check-config"])
        assert result.exit_code == 1
        lines = result.output.splitlines()
        assert any(
            line.startswith("WARN") and "AUTHKEEP_DATABASE_URL reaches db.internal" in line
            for line in lines
        )
        assert any(
            line.startswith("REFUSE") and "AUTHKEEP_REDIS_SSL_CA_FILE: " in line for line in lines
        )
        # Each new setting has its line, the CA file shown as its path.
        assert any(line.startswith("AUTHKEEP_DATABASE_SSL_MODE ") for line in lines)
        assert any(
            line.startswith("AUTHKEEP_REDIS_SSL_CA_FILE ") and "missing.pem" in line
            for line in lines
        )
