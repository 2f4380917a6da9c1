"""Configuration that explains itself: ``check-config`` prints every setting (secrets hidden)
and each problem with its reason, exits 1 only on what the judged environment refuses; a
value that cannot be read is one line naming the setting for every command, never a
traceback; ``authkeep --version``."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from authkeep.cli import app
from authkeep.settings import Settings

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean development environment (no AUTHKEEP_* from outside, no .env) in tmp_path."""
    for name in list(os.environ):
        if name.startswith("AUTHKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTHKEEP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("AUTHKEEP_HASH_WORKERS", "1")
    return monkeypatch


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def line_of(output: str, variable: str) -> str:
    """The line that prints ``variable``'s value."""
    [line] = [line for line in output.splitlines() if line.split(" ", 1)[0] == variable]
    return line


def run_module(*args: str, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    environ.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "authkeep", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestEverySettingIsPrinted:
    def test_every_field_of_the_settings_model_has_its_line(self, env: pytest.MonkeyPatch) -> None:
        result = invoke("check-config")
        assert result.exit_code == 0, result.output
        for name in Settings.model_fields:
            line_of(result.output, f"AUTHKEEP_{name.upper()}")

    def test_secrets_are_hidden(self, env: pytest.MonkeyPatch) -> None:
        secrets = {
            "AUTHKEEP_SECRET_KEY": STRONG,
            "AUTHKEEP_SMTP_PASSWORD": "smtp-pass-0987",
            "AUTHKEEP_REDIS_URL": "redis://:redis-pass-456@cache:6379/0",
            "AUTHKEEP_MIGRATION_DATABASE_URL": "postgresql+asyncpg://owner:owner-pass-1@db/a",
            "AUTHKEEP_CHALLENGE_SECRET": "challenge-secret-777",
        }
        for name, value in secrets.items():
            env.setenv(name, value)
        output = invoke("check-config").output
        for value in ("pZ4-qL9", "smtp-pass-0987", "redis-pass-456", "owner-pass-1", "777"):
            assert value not in output
        assert "set (34 characters, hidden)" in line_of(output, "AUTHKEEP_SECRET_KEY")
        assert "owner:***@db/a" in line_of(output, "AUTHKEEP_MIGRATION_DATABASE_URL")

    def test_the_generated_development_secret_is_shown_as_the_source(
        self, env: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        before = line_of(invoke("check-config").output, "AUTHKEEP_SECRET_KEY")
        assert "generates a key into .authkeep-secret" in before
        (tmp_path / ".authkeep-secret").write_text("x" * 64 + "\n")
        after = line_of(invoke("check-config").output, "AUTHKEEP_SECRET_KEY")
        assert "uses the generated key in .authkeep-secret" in after

    def test_a_default_is_called_a_default_not_unset(self, env: pytest.MonkeyPatch) -> None:
        output = invoke("check-config").output
        assert "(default)" in line_of(output, "AUTHKEEP_TRUSTED_HOSTS")
        assert "AUTHKEEP_TRUSTED_HOSTS is not set" not in output
        assert "AUTHKEEP_TRUSTED_HOSTS is left at its default (localhost, 127.0.0.1)" in output
        assert "production must list the host names" in output


class TestExitStatus:
    def test_development_defaults_pass_in_development(self, env: pytest.MonkeyPatch) -> None:
        result = invoke("check-config")
        assert result.exit_code == 0, result.output
        assert "no problem that development would refuse" in result.output
        # ... and say that production would not take them.
        assert "production would refuse this configuration: see --production" in result.output

    def test_production_judges_them_with_the_flag(self, env: pytest.MonkeyPatch) -> None:
        result = invoke("check-config", "--production")
        assert result.exit_code == 1
        assert "problem(s) that production would refuse" in result.output
        assert "PROD    AUTHKEEP_PUBLIC_URL is not an https:// URL" in result.output

    def test_what_every_environment_refuses_fails_in_development(
        self, env: pytest.MonkeyPatch
    ) -> None:
        env.setenv("AUTHKEEP_SECRET_KEY", "changeme")
        result = invoke("check-config")
        assert result.exit_code == 1
        assert "REFUSE  AUTHKEEP_SECRET_KEY is a well-known placeholder" in result.output
        assert "1 problem(s) that development would refuse" in result.output


class TestValuesThatCannotBeRead:
    def test_a_plain_text_list_is_accepted(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("AUTHKEEP_TRUSTED_HOSTS", "api.example.com, www.example.com")
        result = invoke("check-config")
        assert result.exit_code == 0, result.output
        line = line_of(result.output, "AUTHKEEP_TRUSTED_HOSTS")
        assert '["api.example.com", "www.example.com"]' in line
        assert "(default)" not in line

    @pytest.mark.parametrize(
        ("variable", "value", "says"),
        [
            ("AUTHKEEP_TRUSTED_HOSTS", '["api.example.com"', "is not a JSON list of strings"),
            ("AUTHKEEP_ACCESS_TOKEN_EXPIRE_MINUTES", "abc", "should be a valid integer"),
            ("AUTHKEEP_DATABASE_URL", "mysql://root:db-pass-3@x/db", "mysql database"),
            ("AUTHKEEP_DATABASE_URL", "postgresql+psycopg2://x/db", "psycopg2 driver"),
        ],
    )
    def test_check_config_prints_one_line_naming_the_setting(
        self, env: pytest.MonkeyPatch, variable: str, value: str, says: str
    ) -> None:
        env.setenv(variable, value)
        result = invoke("check-config")
        assert result.exit_code == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        [line] = result.output.strip().splitlines()
        assert line.startswith(f"REFUSE  {variable}")
        assert says in line
        assert "db-pass-3" not in result.output

    @pytest.mark.parametrize(
        "command",
        [["migrate"], ["purge"], ["worker"], ["seed-demo"], ["create-admin", "--email", "a@b.c"]],
    )
    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("AUTHKEEP_ACCESS_TOKEN_EXPIRE_MINUTES", "abc"),
            ("AUTHKEEP_DATABASE_URL", "mysql://root:db-pass-3@x/db"),
        ],
    )
    def test_every_command_refuses_in_one_line(
        self, env: pytest.MonkeyPatch, command: list[str], variable: str, value: str
    ) -> None:
        env.setenv(variable, value)
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith("error: configuration refused: ")
        assert variable in line
        assert "db-pass-3" not in line

    @pytest.mark.parametrize("command", [["serve", "--port", "1"], ["migrate"], ["check-config"]])
    def test_no_traceback_from_the_console_command(self, command: list[str]) -> None:
        done = run_module(*command, extra={"AUTHKEEP_DATABASE_URL": "mysql://x"})
        assert done.returncode in (1, 2)
        assert "Traceback" not in done.stdout + done.stderr
        assert "MySQLdb" not in done.stdout + done.stderr
        assert "AUTHKEEP_DATABASE_URL names the mysql database" in done.stdout + done.stderr


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"authkeep {version('authkeep')}"
    done = run_module("--version", extra={})
    assert done.returncode == 0
    assert done.stdout.strip() == f"authkeep {version('authkeep')}"
