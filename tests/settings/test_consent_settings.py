"""``AUTHKEEP_CONSENT_PURPOSES``: a JSON object of purposes, each with its current version and
whether it is required; anything else is refused in one line naming the setting (and the
purpose), and ``check-config`` prints it as it is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from authkeep.cli import app
from authkeep.settings import ConsentPurpose, Settings

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"
PURPOSES = '{"terms": {"version": "2026-11", "required": true}, "marketing": {"version": "1"}}'


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, env="test", secret_key=STRONG, **values)  # type: ignore[call-arg]


def test_purposes_are_read_from_the_environment_in_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHKEEP_CONSENT_PURPOSES", PURPOSES)
    purposes = settings().consent_purposes
    assert list(purposes) == ["terms", "marketing"]
    assert purposes["terms"] == ConsentPurpose(version="2026-11", required=True)
    assert purposes["marketing"] == ConsentPurpose(version="1", required=False)


@pytest.mark.parametrize("value", ["", "  ", "{}"])
def test_the_default_and_an_empty_value_mean_no_purpose(value: str) -> None:
    assert settings().consent_purposes == {}
    assert settings(consent_purposes=value).consent_purposes == {}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('["terms"]', "is not a JSON object"),
        ("{not json", "is not a JSON object"),
        ('{"Terms": {"version": "1"}}', "purpose names are 1 to 32 characters"),
        ('{"terms/../x": {"version": "1"}}', "purpose names are 1 to 32 characters"),
        ('{"' + "a" * 33 + '": {"version": "1"}}', "purpose names are 1 to 32 characters"),
        ('{"terms": "2026-11"}', "purpose 'terms' must be an object"),
        ('{"terms": {}}', "version: Field required"),
        ('{"terms": {"version": ""}}', "a consent version is 1 to 32 printable"),
        ('{"terms": {"version": " 1"}}', "a consent version is 1 to 32 printable"),
        ('{"terms": {"version": "' + "v" * 33 + '"}}', "a consent version is 1 to 32"),
        ('{"terms": {"version": "1\\n2"}}', "a consent version is 1 to 32 printable"),
        ('{"terms": {"version": "1", "required": "yes"}}', "required: Input should be a valid"),
        ('{"terms": {"version": "1", "mandatory": true}}', "mandatory: Extra inputs"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_setting(value: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(consent_purposes=value)
    message = str(caught.value)
    assert "AUTHKEEP_CONSENT_PURPOSES" in message
    assert says in message


def test_at_most_32_purposes() -> None:
    many = {f"p{n}": {"version": "1"} for n in range(33)}
    with pytest.raises(ValidationError, match="names 33 purposes; at most 32"):
        settings(consent_purposes=many)


def test_check_config_prints_the_purposes_as_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("AUTHKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTHKEEP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("AUTHKEEP_CONSENT_PURPOSES", PURPOSES)
    result = CliRunner().invoke(app, ["check-config"])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if "AUTHKEEP_CONSENT_PURPOSES" in line]
    assert line.split(maxsplit=1)[1] == (
        '{"terms": {"version": "2026-11", "required": true}, '
        '"marketing": {"version": "1", "required": false}}'
    )

    monkeypatch.setenv("AUTHKEEP_CONSENT_PURPOSES", '{"terms": {"version": ""}}')
    refused = CliRunner().invoke(app, ["check-config"])
    assert refused.exit_code == 1
    [only] = refused.output.strip().splitlines()
    assert only.startswith("REFUSE  AUTHKEEP_CONSENT_PURPOSES: purpose 'terms'")
