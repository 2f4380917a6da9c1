"""``AUTHKEEP_SESSION_IDLE_TIMEOUT`` beside the absolute lifetime
(``AUTHKEEP_REFRESH_TOKEN_EXPIRE_DAYS``): how it is read, its default, and its bounds."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from authkeep import Settings
from authkeep.settings import InspectedSettings, find_problems


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings read AUTHKEEP_* variables and ./.env: neither may leak into these tests.
    for name in list(os.environ):
        if name.startswith("AUTHKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def make(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_are_seven_days_idle_within_fourteen_days() -> None:
    settings = make()

    assert settings.session_idle_timeout == timedelta(days=7)
    assert settings.session_lifetime == timedelta(days=14)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("86400", timedelta(days=1)),
        (" 3600 ", timedelta(hours=1)),
        ("P2D", timedelta(days=2)),
        ("PT12H", timedelta(hours=12)),
    ],
)
def test_the_environment_gives_seconds_or_an_iso_duration(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: timedelta
) -> None:
    monkeypatch.setenv("AUTHKEEP_SESSION_IDLE_TIMEOUT", raw)

    assert make().session_idle_timeout == expected


def test_the_default_fits_a_shorter_absolute_lifetime() -> None:
    # AUTHKEEP_REFRESH_TOKEN_EXPIRE_DAYS=3 worked before the idle timeout existed: it must
    # keep working, the idle timeout then being the whole lifetime.
    settings = make(refresh_token_expire_days=3)

    assert settings.session_idle_timeout == timedelta(days=3)
    assert all(p.setting != "AUTHKEEP_SESSION_IDLE_TIMEOUT" for p in find_problems(settings))


def test_an_idle_timeout_longer_than_the_lifetime_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        make(session_idle_timeout="P15D")

    message = str(caught.value)
    assert "AUTHKEEP_SESSION_IDLE_TIMEOUT" in message
    assert "AUTHKEEP_REFRESH_TOKEN_EXPIRE_DAYS" in message


def test_an_idle_timeout_equal_to_the_lifetime_is_accepted() -> None:
    assert make(session_idle_timeout="P14D").session_idle_timeout == timedelta(days=14)


def test_an_idle_timeout_shorter_than_an_access_token_is_refused() -> None:
    # Clients refresh when the access token runs out; every session would end right there.
    with pytest.raises(ValidationError) as caught:
        make(session_idle_timeout=600, access_token_expire_minutes=30)

    assert "AUTHKEEP_ACCESS_TOKEN_EXPIRE_MINUTES" in str(caught.value)


@pytest.mark.parametrize("raw", ["soon", "-5", "0", "P"])
def test_nonsense_is_a_settings_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("AUTHKEEP_SESSION_IDLE_TIMEOUT", raw)

    with pytest.raises(ValidationError) as caught:
        make()

    assert "session_idle_timeout" in str(caught.value)


def test_check_config_lists_the_out_of_range_idle_timeout() -> None:
    settings = InspectedSettings(_env_file=None, session_idle_timeout="P30D")  # type: ignore[call-arg]

    problems = [p for p in find_problems(settings) if p.setting == "AUTHKEEP_SESSION_IDLE_TIMEOUT"]
    assert [p.level for p in problems] == ["refuse"]
