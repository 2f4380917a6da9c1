"""The ``authkeep`` command line: check-config, seed-demo, create-admin, migrate and serve's
refusal of an unsafe configuration. In-process through typer's runner, on SQLite files."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from authkeep.cli import DEMO_USERS, app
from authkeep.db import users as user_rows
from authkeep.db.engine import Database
from authkeep.security.configured import build_envelope
from authkeep.settings import Settings
from helpers import TEST_DATA_KEY

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"
ADMIN_PASSWORD = "a long and private admin passphrase"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> pytest.MonkeyPatch:
    """A clean environment (no AUTHKEEP_* from outside, no .env) on a fresh SQLite file."""
    for name in list(os.environ):
        if name.startswith("AUTHKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTHKEEP_ENV", "development")
    monkeypatch.setenv("AUTHKEEP_SECRET_KEY", STRONG)
    monkeypatch.setenv("AUTHKEEP_DATABASE_URL", db_url)
    monkeypatch.setenv("AUTHKEEP_HASH_WORKERS", "1")
    return monkeypatch


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def users(url: str) -> dict[str, bool]:
    """email -> is_superuser of every user in the database (opened with the data key the
    commands used: the environment's, or the development key file in the working directory)."""
    envelope = build_envelope(Settings())

    async def read() -> dict[str, bool]:
        db = Database(url)
        try:
            async with db.reading() as conn:
                found, _ = await user_rows.search(conn, envelope, offset=0, limit=100)
        finally:
            await db.close()
        return {user.email: user.is_superuser for user in found}

    return asyncio.run(read())


def production(env: pytest.MonkeyPatch) -> None:
    """A configuration production accepts."""
    env.setenv("AUTHKEEP_ENV", "production")
    env.setenv("AUTHKEEP_TRUSTED_HOSTS", '["api.example.com"]')
    env.setenv("AUTHKEEP_DATABASE_URL", "postgresql+asyncpg://app:db-pass-123@db:5432/authkeep")
    env.setenv("AUTHKEEP_REDIS_URL", "redis://:redis-pass-456@cache:6379/0")
    env.setenv("AUTHKEEP_EMAIL_BACKEND", "smtp")
    env.setenv("AUTHKEEP_PUBLIC_URL", "https://app.example.com")
    env.setenv("AUTHKEEP_DATA_KEYS", f'["{TEST_DATA_KEY}"]')


class TestCheckConfig:
    def test_a_sound_production_configuration_passes(self, env: pytest.MonkeyPatch) -> None:
        production(env)
        result = invoke("check-config")
        assert result.exit_code == 0, result.output
        assert "AUTHKEEP_ENV" in result.output
        assert "production" in result.output
        assert "no problem that production would refuse" in result.output
        # Every secret is hidden: the key, and the passwords inside URLs.
        for secret in (STRONG, "db-pass-123", "redis-pass-456"):
            assert secret not in result.output
        assert "hidden" in result.output

    def test_it_prints_every_security_setting(self, env: pytest.MonkeyPatch) -> None:
        result = invoke("check-config")
        for name in (
            "AUTHKEEP_SECRET_KEY",
            "AUTHKEEP_DATABASE_URL",
            "AUTHKEEP_REDIS_URL",
            "AUTHKEEP_ALLOWED_ORIGINS",
            "AUTHKEEP_TRUSTED_HOSTS",
            "AUTHKEEP_TRUSTED_PROXIES",
            "AUTHKEEP_DEMO_MODE",
            "AUTHKEEP_MAX_BODY_BYTES",
            "AUTHKEEP_RATE_LIMIT_ENABLED",
            "AUTHKEEP_ACCESS_TOKEN_EXPIRE_MINUTES",
        ):
            assert name in result.output
        assert STRONG not in result.output

    def test_development_defaults_would_be_refused_by_production(
        self, env: pytest.MonkeyPatch
    ) -> None:
        env.delenv("AUTHKEEP_SECRET_KEY")
        result = invoke("check-config", "--production")
        assert result.exit_code == 1
        assert "AUTHKEEP_SECRET_KEY is not set" in result.output
        assert "AUTHKEEP_TRUSTED_HOSTS is left at its default" in result.output

    @pytest.mark.parametrize(
        ("variable", "value", "message"),
        [
            ("AUTHKEEP_SECRET_KEY", "changeme", "AUTHKEEP_SECRET_KEY is a well-known placeholder"),
            ("AUTHKEEP_ALLOWED_ORIGINS", '["*"]', "AUTHKEEP_ALLOWED_ORIGINS contains '*'"),
            ("AUTHKEEP_DEMO_MODE", "true", "AUTHKEEP_DEMO_MODE is true"),
            ("AUTHKEEP_TRUSTED_HOSTS", "[]", "AUTHKEEP_TRUSTED_HOSTS is empty"),
        ],
    )
    def test_each_refused_setting_fails_the_check(
        self, env: pytest.MonkeyPatch, variable: str, value: str, message: str
    ) -> None:
        production(env)
        env.setenv(variable, value)
        result = invoke("check-config")
        assert result.exit_code == 1, result.output
        assert message in result.output
        # Every problem is listed, not only the first.
        assert "no problem that production would refuse" not in result.output

    def test_a_value_of_the_wrong_type_is_reported(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("AUTHKEEP_MAX_BODY_BYTES", "lots")
        result = invoke("check-config")
        assert result.exit_code == 1
        assert "AUTHKEEP_MAX_BODY_BYTES" in result.output


class TestSeedDemo:
    def test_it_refuses_without_demo_mode(self, env: pytest.MonkeyPatch, db_url: str) -> None:
        result = invoke("seed-demo")
        assert result.exit_code == 1
        assert "AUTHKEEP_DEMO_MODE=true" in result.output
        assert not Path(db_url.split("///", 1)[1]).exists()

    def test_it_always_refuses_in_production(self, env: pytest.MonkeyPatch, db_url: str) -> None:
        production(env)
        env.setenv("AUTHKEEP_DATABASE_URL", db_url)
        refused = invoke("seed-demo")
        assert refused.exit_code == 1
        assert "never runs in production" in refused.output
        env.setenv("AUTHKEEP_DEMO_MODE", "true")
        also_refused = invoke("seed-demo")
        assert also_refused.exit_code == 2
        assert "AUTHKEEP_DEMO_MODE" in also_refused.output
        assert not Path(db_url.split("///", 1)[1]).exists()

    def test_it_seeds_once_in_demo_mode(self, env: pytest.MonkeyPatch, db_url: str) -> None:
        env.setenv("AUTHKEEP_DEMO_MODE", "true")
        first = invoke("seed-demo")
        assert first.exit_code == 0, first.output
        assert "3 new" in first.output
        assert set(users(db_url)) == set(DEMO_USERS)
        again = invoke("seed-demo")
        assert again.exit_code == 0, again.output
        assert "0 new" in again.output
        assert len(users(db_url)) == 3


class TestCreateAdmin:
    def test_it_creates_then_promotes(self, env: pytest.MonkeyPatch, db_url: str) -> None:
        env.setenv("AUTHKEEP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        created = invoke("create-admin", "--email", "Root@Example.com")
        assert created.exit_code == 0, created.output
        assert "created platform admin Root@example.com" in created.output
        assert ADMIN_PASSWORD not in created.output
        assert users(db_url) == {"Root@example.com": True}

        env.setenv("AUTHKEEP_DEMO_MODE", "true")
        assert invoke("seed-demo").exit_code == 0
        assert users(db_url)["viewer@demo.example.com"] is False
        promoted = invoke("create-admin", "--email", "VIEWER@demo.example.com")
        assert promoted.exit_code == 0, promoted.output
        assert "promoted viewer@demo.example.com" in promoted.output
        assert users(db_url)["viewer@demo.example.com"] is True

    def test_the_admin_password_follows_the_policy(
        self, env: pytest.MonkeyPatch, db_url: str
    ) -> None:
        env.setenv("AUTHKEEP_ADMIN_PASSWORD", "password1")
        result = invoke("create-admin", "--email", "root@example.com")
        assert result.exit_code == 1
        assert "too common" in result.output
        assert users(db_url) == {}

    def test_without_a_password_or_terminal_it_says_what_to_set(
        self, env: pytest.MonkeyPatch, db_url: str
    ) -> None:
        result = invoke("create-admin", "--email", "root@example.com")
        assert result.exit_code == 1
        assert "AUTHKEEP_ADMIN_PASSWORD" in result.output
        assert users(db_url) == {}


def test_migrate_creates_the_schema_on_a_fresh_sqlite_file(
    env: pytest.MonkeyPatch, db_url: str
) -> None:
    path = Path(db_url.split("///", 1)[1])
    assert not path.exists()
    for _ in range(2):  # and again: nothing left to do
        result = invoke("migrate")
        assert result.exit_code == 0, result.output
        assert "database is at head" in result.output

    async def inspect() -> tuple[set[str], str]:
        db = Database(db_url)
        try:
            async with db.reading() as conn:
                tables = set(
                    (
                        await conn.execute(
                            text("SELECT name FROM sqlite_master WHERE type='table'")
                        )
                    ).scalars()
                )
                version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one()
        finally:
            await db.close()
        return tables, version

    tables, version = asyncio.run(inspect())
    assert {"users", "auth_sessions", "refresh_tokens", "alembic_version"} <= tables
    from alembic.script import ScriptDirectory

    from authkeep.db.migrate import alembic_config

    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AUTHKEEP_SECRET_KEY", "changeme", "AUTHKEEP_SECRET_KEY"),
        ("AUTHKEEP_SECRET_KEY", "too-short-1234", "shorter than 32 characters"),
        ("AUTHKEEP_ALLOWED_ORIGINS", '["*"]', "AUTHKEEP_ALLOWED_ORIGINS"),
        ("AUTHKEEP_ENV", "production", "AUTHKEEP_TRUSTED_HOSTS"),
    ],
)
def test_serve_refuses_an_unsafe_configuration(
    env: pytest.MonkeyPatch, db_url: str, variable: str, value: str, message: str
) -> None:
    env.setenv(variable, value)
    result = invoke("serve", "--port", "1")
    assert result.exit_code == 2
    assert "configuration refused" in result.output
    assert message in result.output
    assert value not in result.output or variable == "AUTHKEEP_ENV"  # never the secret
    assert not Path(db_url.split("///", 1)[1]).exists()  # refused before migrating


def test_serve_refuses_several_workers_without_redis_in_production(
    env: pytest.MonkeyPatch,
) -> None:
    production(env)
    env.delenv("AUTHKEEP_REDIS_URL")
    result = invoke("serve", "--workers", "2", "--port", "1")
    assert result.exit_code == 2
    assert "AUTHKEEP_REDIS_URL" in result.output


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authkeep", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in ("serve", "migrate", "create-admin", "seed-demo", "check-config"):
        assert command in done.stdout
