"""Settings of the email flows: the verification mode's defaults, the link lifetimes and the
mail limits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from authkeep import Settings
from authkeep.settings import find_problems
from helpers import TEST_DATA_KEY

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AUTHKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def make(**values: Any) -> Settings:
    if values.get("env") == "production":
        values.update(
            secret_key=STRONG,
            trusted_hosts=["api.example.com"],
            email_backend="smtp",
            public_url="https://app.example.com",
            data_keys=[TEST_DATA_KEY],
        )
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("env", "mode"), [("production", "required"), ("development", "optional"), ("test", "optional")]
)
def test_verification_is_required_in_production_and_optional_elsewhere(env: str, mode: str) -> None:
    settings = make(env=env)
    assert settings.email_verification == settings.verification_mode == mode
    assert make(env=env, email_verification="off").verification_mode == "off"


def test_production_warns_when_verification_is_not_required() -> None:
    def warnings(settings: Settings) -> list[str]:
        return [
            p.level for p in find_problems(settings) if p.setting == "AUTHKEEP_EMAIL_VERIFICATION"
        ]

    assert warnings(make(env="production")) == []
    assert warnings(make(env="production", email_verification="optional")) == ["warning"]
    assert warnings(make(env="development")) == []


def test_defaults_of_the_link_lifetimes_and_mail_limits() -> None:
    settings = make()
    assert settings.password_reset_expire_minutes == 60
    assert settings.email_verification_expire_hours == 48
    assert settings.email_change_expire_hours == 24
    assert settings.mail_recipient_rate_limit == "5 per hour"
    assert settings.mail_ip_rate_limit == "20 per hour"


@pytest.mark.parametrize(
    "values",
    [
        {"mail_ip_rate_limit": "lots"},
        {"mail_recipient_rate_limit": "1/minute; 2/hour"},
        {"email_verification": "sometimes"},
        {"password_reset_expire_minutes": 0},
    ],
)
def test_bad_values_are_refused_with_the_setting_named(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        make(**values)
    assert next(iter(values)) in str(caught.value).lower().replace("authkeep_", "")
