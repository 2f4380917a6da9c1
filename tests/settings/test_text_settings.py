"""List settings as JSON or comma-separated text, and the database URLs authkeep supports."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from authkeep.settings import Settings, parse_text_list, supported_database_url

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["api.example.com", "www.example.com"]', ["api.example.com", "www.example.com"]),
        ("api.example.com", ["api.example.com"]),
        (" api.example.com , www.example.com ,", ["api.example.com", "www.example.com"]),
        ("", []),
        ("[]", []),
    ],
)
def test_a_list_is_json_or_comma_separated(text: str, expected: list[str]) -> None:
    assert parse_text_list(text, "AUTHKEEP_X") == expected


@pytest.mark.parametrize("text", ['["a"', "[1, 2]", '[{"a": 1}]', "[not json]"])
def test_a_broken_json_list_names_the_setting_and_both_forms(text: str) -> None:
    with pytest.raises(ValueError, match="AUTHKEEP_X is not a JSON list") as caught:
        parse_text_list(text, "AUTHKEEP_X")
    assert "comma-separated" in str(caught.value)


@pytest.mark.parametrize(
    "variable",
    [
        "AUTHKEEP_TRUSTED_HOSTS",
        "AUTHKEEP_ALLOWED_ORIGINS",
        "AUTHKEEP_TRUSTED_PROXIES",
        "AUTHKEEP_METRICS_ALLOWED_IPS",
        "AUTHKEEP_ADMIN_ALLOWED_IPS",
    ],
)
def test_every_list_setting_reads_plain_text_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    value = "10.0.0.1, 10.0.0.2" if "IPS" in variable or "PROXIES" in variable else "a.example"
    monkeypatch.setenv(variable, value)
    settings = Settings(_env_file=None, secret_key=STRONG)  # type: ignore[call-arg]
    expected = [part.strip() for part in value.split(",")]
    assert getattr(settings, variable.removeprefix("AUTHKEEP_").lower()) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:pw@db/auth", "postgresql+asyncpg://app:pw@db/auth"),
        ("postgres://app@db/auth", "postgresql+asyncpg://app@db/auth"),
        ("postgresql+asyncpg://db/auth", "postgresql+asyncpg://db/auth"),
        ("sqlite:///./authkeep.db", "sqlite+aiosqlite:///./authkeep.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
    ],
)
def test_supported_urls_get_their_async_driver(url: str, expected: str) -> None:
    assert supported_database_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://root:db-pass-3@x/db", "names the mysql database"),
        ("mssql+pyodbc://x/db", "names the mssql database"),
        ("postgresql+psycopg2://u:db-pass-3@x/db", "names the psycopg2 driver"),
        ("sqlite+pysqlite:///x.db", "names the pysqlite driver"),
        ("db.example.com:5432", "is not a database URL"),
    ],
)
def test_other_urls_are_refused_without_echoing_them(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        supported_database_url(url)
    assert "db-pass-3" not in str(caught.value)
    assert "postgresql+asyncpg://" in str(caught.value)


@pytest.mark.parametrize(
    "field", ["database_url", "migration_database_url", "audit_purge_database_url"]
)
def test_every_database_url_setting_is_checked(field: str) -> None:
    with pytest.raises(ValidationError, match=f"AUTHKEEP_{field.upper()} names the mysql"):
        Settings(_env_file=None, secret_key=STRONG, **{field: "mysql://x"})  # type: ignore[call-arg]
    mapped = Settings(_env_file=None, secret_key=STRONG, **{field: "postgresql://x/db"})  # type: ignore[call-arg]
    assert getattr(mapped, field) == "postgresql+asyncpg://x/db"
