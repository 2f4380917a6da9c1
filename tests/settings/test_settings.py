"""Configuration rules: weak secrets, CORS wildcard, production refusals, the dev key file."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from authkeep import Authkeep, Settings
from authkeep.settings import InspectedSettings, find_problems
from helpers import TEST_DATA_KEY

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"  # 34 characters, 34 distinct
ENVS = ["development", "test", "production"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings read AUTHKEEP_* variables and ./.env: neither may leak into these tests.
    for name in list(os.environ):
        if name.startswith("AUTHKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def make(**values: Any) -> Settings:
    """Settings from ``values`` only; production ones get its mandatory host list."""
    if values.get("env") == "production":
        values.setdefault("trusted_hosts", ["api.example.com"])
        values.setdefault("email_backend", "smtp")
        values.setdefault("public_url", "https://app.example.com")
        values.setdefault("data_keys", [TEST_DATA_KEY])
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def refusal(**values: Any) -> str:
    """The message of the refusal ``values`` must cause."""
    with pytest.raises(ValidationError) as caught:
        make(**values)
    return str(caught.value)


def test_a_strong_secret_is_accepted_in_every_environment() -> None:
    for env in ENVS:
        assert make(env=env, secret_key=STRONG).secret_key is not None


# Placeholders straight from tutorials and .env.example files, in the letter cases people
# type them. The repeated ones are long enough and varied enough to pass the length and
# distinct-character rules, so only the known-value rule can catch them.
PLACEHOLDERS = [
    "secret",
    "Secret",
    "SECRET",
    "changeme",
    "ChangeMe",
    "change-me-in-production",
    "CHANGE-ME-IN-PRODUCTION",
    "your-secret-key",
    "Your-Secret-Key",
    " changeme ",
    "changeme" * 4,
    "ChangeMe" * 4,
    "change-me-in-production" * 2,
    "your-secret-key" * 3,
    "YOUR-SECRET-KEY" * 3,
    # FastAPI's tutorial key: 64 random-looking hex characters, public all the same.
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("secret", PLACEHOLDERS)
def test_known_weak_secrets_are_refused_in_every_environment(secret: str, env: str) -> None:
    message = refusal(env=env, secret_key=secret)
    assert "well-known placeholder" in message
    assert "set AUTHKEEP_SECRET_KEY" in message
    assert "token_urlsafe" in message  # tells how to make a good one


@pytest.mark.parametrize("env", ENVS)
def test_a_secret_shorter_than_32_characters_is_refused(env: str) -> None:
    short = STRONG[:31]
    message = refusal(env=env, secret_key=short)
    assert "shorter than 32 characters" in message
    assert "set AUTHKEEP_SECRET_KEY" in message
    assert short not in message  # the refusal never repeats the secret
    assert make(env=env, secret_key=STRONG[:32]).secret_key is not None


@pytest.mark.parametrize("secret", ["a" * 40, "ab" * 20, "abcdefghi" * 4])
def test_a_secret_with_too_few_distinct_characters_is_refused(secret: str) -> None:
    message = refusal(secret_key=secret)
    assert "too few distinct characters" in message
    assert "set AUTHKEEP_SECRET_KEY" in message


def test_ten_distinct_characters_are_enough() -> None:
    assert make(secret_key="abcdefghij" * 4).secret_key is not None


def test_a_weak_secret_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHKEEP_SECRET_KEY", "CHANGEME")
    with pytest.raises(ValidationError, match="AUTHKEEP_SECRET_KEY"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("origins", [["*"], ["https://app.example.com", " * "]])
def test_a_wildcard_origin_is_refused(env: str, origins: list[str]) -> None:
    message = refusal(env=env, secret_key=STRONG, allowed_origins=origins)
    assert "AUTHKEEP_ALLOWED_ORIGINS" in message
    assert "https://app.example.com" in message  # an example of what to write instead


def test_listed_origins_are_accepted() -> None:
    settings = make(secret_key=STRONG, allowed_origins=["https://app.example.com"])
    assert settings.allowed_origins == ["https://app.example.com"]


def test_production_refuses_to_run_without_a_secret() -> None:
    message = refusal(env="production")
    assert "AUTHKEEP_SECRET_KEY is not set" in message
    assert "token_urlsafe" in message
    # Elsewhere a missing secret is fine: development generates one, tests use a random one.
    assert make(env="development").secret_key is None
    assert make(env="test").secret_key is None


def test_production_refuses_to_run_without_trusted_hosts() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, env="production", secret_key=STRONG)  # type: ignore[call-arg]
    assert "AUTHKEEP_TRUSTED_HOSTS is left at its default" in str(caught.value)
    assert '["api.example.com"]' in str(caught.value)
    with pytest.raises(ValidationError, match="AUTHKEEP_TRUSTED_HOSTS"):
        make(env="production", secret_key=STRONG, trusted_hosts=[])
    # The defaults are fine for development.
    assert make(env="development", secret_key=STRONG).trusted_hosts == ["localhost", "127.0.0.1"]


def test_trusted_hosts_from_the_environment_count_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHKEEP_ENV", "production")
    monkeypatch.setenv("AUTHKEEP_SECRET_KEY", STRONG)
    monkeypatch.setenv("AUTHKEEP_TRUSTED_HOSTS", '["api.example.com"]')
    monkeypatch.setenv("AUTHKEEP_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("AUTHKEEP_PUBLIC_URL", "https://app.example.com")
    monkeypatch.setenv("AUTHKEEP_DATA_KEYS", TEST_DATA_KEY)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.is_production
    assert settings.trusted_hosts == ["api.example.com"]


def test_production_refuses_demo_mode() -> None:
    message = refusal(env="production", secret_key=STRONG, demo_mode=True)
    assert "AUTHKEEP_DEMO_MODE is true" in message
    assert "set it to false" in message
    assert make(env="development", secret_key=STRONG, demo_mode=True).demo_mode


def test_a_refusal_lists_every_blocking_problem_at_once() -> None:
    message = refusal(
        env="production", secret_key="changeme", allowed_origins=["*"], demo_mode=True
    )
    for setting in ("AUTHKEEP_SECRET_KEY", "AUTHKEEP_ALLOWED_ORIGINS", "AUTHKEEP_DEMO_MODE"):
        assert setting in message


def test_inspected_settings_load_anyway_and_list_every_problem() -> None:
    values: dict[str, Any] = {
        "env": "production",
        "secret_key": "changeme",
        "allowed_origins": ["*"],
        "demo_mode": True,
        "rate_limit_enabled": False,
    }
    inspected = InspectedSettings(_env_file=None, **values)  # type: ignore[call-arg]
    problems = find_problems(inspected)
    by_setting = {problem.setting: problem for problem in problems}
    assert {
        "AUTHKEEP_SECRET_KEY",
        "AUTHKEEP_ALLOWED_ORIGINS",
        "AUTHKEEP_TRUSTED_HOSTS",
        "AUTHKEEP_DEMO_MODE",
        "AUTHKEEP_RATE_LIMIT_ENABLED",
    } <= set(by_setting)
    assert by_setting["AUTHKEEP_SECRET_KEY"].blocks("development")
    assert by_setting["AUTHKEEP_ALLOWED_ORIGINS"].blocks("development")
    assert by_setting["AUTHKEEP_TRUSTED_HOSTS"].blocks("production")
    assert not by_setting["AUTHKEEP_TRUSTED_HOSTS"].blocks("development")
    assert not by_setting["AUTHKEEP_RATE_LIMIT_ENABLED"].blocks("production")
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_inspected_settings_of_a_sound_production_configuration_have_no_blocking_problem() -> None:
    inspected = InspectedSettings(  # type: ignore[call-arg]
        _env_file=None,
        env="production",
        secret_key=STRONG,
        trusted_hosts=["api.example.com"],
        database_url="postgresql+asyncpg://app@db/authkeep",
        redis_url="redis://cache:6379/0",
        email_backend="smtp",
        public_url="https://app.example.com",
        data_keys=[TEST_DATA_KEY],
    )
    assert [p for p in find_problems(inspected) if p.blocks("production")] == []


def _events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == name]


def test_development_generates_a_key_once_in_a_private_file(
    tmp_path: Path, log_output: io.StringIO
) -> None:
    key_file = tmp_path / "state" / ".authkeep-secret"
    settings = make(env="development", secret_key_file=key_file)

    first = Authkeep(settings)
    mode = stat.S_IMODE(key_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    secret = key_file.read_text().strip()
    assert len(secret) >= 32
    assert len(set(secret)) >= 10

    second = Authkeep(settings)
    assert key_file.read_text().strip() == secret
    assert second.keys.current.kid == first.keys.current.kid  # same key, so same kid

    events = _events(log_output, "development_secret_key")
    assert [event["created"] for event in events] == [True, False]
    assert all(event["file"] == str(key_file) for event in events)
    assert all(event["level"] == "warning" for event in events)
    assert secret not in log_output.getvalue()


def test_a_weak_key_left_in_the_file_is_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / ".authkeep-secret"
    key_file.write_text("changeme\n")
    Authkeep(make(env="development", secret_key_file=key_file), configure_logs=False)
    secret = key_file.read_text().strip()
    assert secret != "changeme"
    assert len(secret) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_no_key_file_outside_development(tmp_path: Path) -> None:
    key_file = tmp_path / ".authkeep-secret"
    Authkeep(make(env="test", secret_key_file=key_file), configure_logs=False)
    Authkeep(make(env="development", secret_key=STRONG, secret_key_file=key_file))
    assert not key_file.exists()


def test_the_default_key_file_is_git_ignored() -> None:
    default = Settings.model_fields["secret_key_file"].default
    gitignore = Path(__file__).resolve().parents[2] / ".gitignore"
    patterns = {line.strip() for line in gitignore.read_text().splitlines()}
    assert str(default) in patterns


def test_argon2_defaults_are_owasp() -> None:
    settings = make()
    assert (settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism) == (
        19456,
        2,
        1,
    )


def test_audit_checkpoint_keys_must_be_ed25519_base64url() -> None:
    from authkeep.security.audit_signing import CheckpointSigner

    signer = CheckpointSigner.generate()
    accepted = make(
        audit_checkpoint_key=signer.private_text(),
        audit_checkpoint_public_keys=[signer.public_text],
    )
    assert accepted.audit_checkpoint_key is not None
    assert "AUTHKEEP_AUDIT_CHECKPOINT_KEY" in refusal(audit_checkpoint_key="not-a-key")
    assert "AUTHKEEP_AUDIT_CHECKPOINT_PUBLIC_KEYS" in refusal(
        audit_checkpoint_public_keys=[signer.public_text, "A" * 44]
    )


def test_production_without_a_checkpoint_key_is_warned_not_refused() -> None:
    settings = InspectedSettings(_env_file=None, env="production", secret_key=STRONG)  # type: ignore[call-arg]
    [problem] = [p for p in find_problems(settings) if p.setting == "AUTHKEEP_AUDIT_CHECKPOINT_KEY"]
    assert problem.level == "warning"
    assert "rewrite" in problem.message


def test_the_default_checkpoint_key_file_is_git_ignored() -> None:
    default = Settings.model_fields["audit_checkpoint_key_file"].default
    gitignore = Path(__file__).resolve().parents[2] / ".gitignore"
    assert str(default) in {line.strip() for line in gitignore.read_text().splitlines()}
