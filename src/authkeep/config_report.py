"""What ``authkeep check-config`` prints: every setting (secrets hidden) and each problem.

The list of settings is derived from :class:`~authkeep.settings.Settings` itself, so a new
setting is printed the day it is added. Values are shown as the service will use them, with
where they come from (``(default)`` when not set); secrets never appear: a ``SecretStr`` shows
its length only, and passwords inside URLs are masked. A configuration that does not even
load (a value of the wrong type, a malformed list, an unsupported database URL) becomes one
line per setting, never a traceback and never the offending value (it may be a secret).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import SettingsError

from authkeep.settings import Environment, Problem, Settings

__all__ = ["LEVELS", "describe_load_error", "problem_lines", "setting_lines", "verdict"]

PREFIX = "AUTHKEEP_"
# Userinfo of a URL (``scheme://user:password@host``): the password part is masked.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
# Plain-text settings whose value is a credential all the same (belt and braces: secrets
# are SecretStr fields), by name: ``*_secret``, ``*_password``, ``*_private_key``.
_SECRET_NAME = re.compile(r"(?:^|_)(?:secret|password|private_key)$")
_FIELD_IN_SETTINGS_ERROR = re.compile(r'field "([a-z0-9_]+)"')
LEVELS = {
    "refuse": ("REFUSE", "refused in every environment"),
    "production": ("PROD", "refused in production, a warning elsewhere"),
    "warning": ("WARN", "a warning only"),
}


def env_name(field: str) -> str:
    """``trusted_hosts`` -> ``AUTHKEEP_TRUSTED_HOSTS``."""
    return PREFIX + field.upper()


def _hidden(secret: SecretStr) -> str:
    return f"set ({len(secret.get_secret_value())} characters, hidden)"


def _secret_source(settings: Settings) -> str:
    """What signs tokens when AUTHKEEP_SECRET_KEY is not set."""
    if settings.jwt_keys_dir is not None:
        return "not set (tokens are signed with the key pairs in AUTHKEEP_JWT_KEYS_DIR)"
    if settings.env == "test":
        return "not set (test: a random key for each process)"
    if settings.env == "production":
        return "not set"
    path = settings.secret_key_file
    if path.is_file():
        return f"not set: development uses the generated key in {path} (kept outside git)"
    return f"not set: development generates a key into {path} at start"


def show(name: str, value: object) -> str:
    """``value`` as printed: secrets hidden, passwords in URLs masked."""
    if isinstance(value, SecretStr):
        return _hidden(value)
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if any(isinstance(item, SecretStr) for item in value):
            return f"{len(value)} set (hidden)"
        return json.dumps([show(name, item) for item in value])
    if isinstance(value, Path | timedelta):
        return str(value)
    if isinstance(value, dict):
        # A JSON object setting (AUTHKEEP_CONSENT_PURPOSES), printed as it would be written.
        return json.dumps(
            {
                key: item.model_dump() if isinstance(item, BaseModel) else item
                for key, item in value.items()
            }
        )
    text = str(value)
    if _SECRET_NAME.search(name):
        return f"set ({len(text)} characters, hidden)"
    return _URL_PASSWORD.sub(r"\1:***@", text)


def setting_lines(settings: Settings) -> list[str]:
    """One line per setting, in the order they are declared."""
    lines = []
    explicit = settings.model_fields_set
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        shown = _secret_source(settings) if name == "secret_key" and value is None else None
        shown = shown or show(name, value)
        origin = "" if name in explicit else "  (default)"
        lines.append(f"{env_name(name):<46} {shown}{origin}")
    return lines


def problem_lines(problems: list[Problem]) -> list[str]:
    """Each problem: its level, then its reason and fix."""
    return [f"{LEVELS[problem.level][0]:<7} {problem.message}" for problem in problems]


def verdict(problems: list[Problem], judged_as: Environment) -> tuple[list[str], bool]:
    """The closing lines, and whether ``judged_as`` would refuse this configuration."""
    refused = [problem for problem in problems if problem.blocks(judged_as)]
    legend = "; ".join(f"{label}: {meaning}" for label, meaning in LEVELS.values())
    lines = [legend] if problems else []
    if refused:
        lines.append(f"{len(refused)} problem(s) that {judged_as} would refuse")
    else:
        lines.append(f"no problem that {judged_as} would refuse")
        if judged_as != "production" and any(p.blocks("production") for p in problems):
            lines.append("production would refuse this configuration: see --production")
    return lines, bool(refused)


def describe_load_error(exc: ValidationError | SettingsError) -> list[str]:
    """One line per setting that could not be read: which setting, and why (never the
    value: it may be a secret)."""
    if isinstance(exc, SettingsError):
        found = _FIELD_IN_SETTINGS_ERROR.search(str(exc))
        name = env_name(found.group(1)) if found else "a setting"
        return [f"{name}: cannot be read ({exc})"]
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"][:1])
        message = str(error["msg"]).removeprefix("Value error, ")
        if not field or message.startswith(PREFIX):
            lines.append(message)
        else:
            lines.append(f"{env_name(field)}: {message}")
    return lines
