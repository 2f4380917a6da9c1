"""Which keys a configuration uses, how old each is, and which are past their maximum age
(the key section of ``authkeep check-config``).

A key's id is printed, never the key. Ages come from what can be known without a database:
the time a key file's kid starts with (or its modification time), the development secret
file's modification time, and ``AUTHKEEP_SECRET_KEY_CREATED_AT`` for a secret from the
environment (whose age nothing else reveals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from authkeep.security.key_ring import kid_of
from authkeep.security.key_schedule import key_files, key_started
from authkeep.settings import Settings

__all__ = ["KeyAge", "key_ages", "key_report_lines"]


@dataclass(frozen=True, slots=True)
class KeyAge:
    """One key of the configuration."""

    source: str
    kid: str
    role: str
    """``signs``, ``verifies`` (kept for rotation) or ``pre-published``."""
    age: timedelta | None
    """None: unknown (a secret from the environment without its creation date)."""


def _secret_age(settings: Settings, now: datetime) -> timedelta | None:
    if settings.secret_key_created_at is not None:
        created = datetime.combine(settings.secret_key_created_at, time(), UTC)
        return now - created
    if settings.secret_key is None and settings.secret_key_file.is_file():
        mtime = settings.secret_key_file.stat().st_mtime
        return now - datetime.fromtimestamp(mtime, UTC)
    return None


def key_ages(settings: Settings, now: datetime | None = None) -> list[KeyAge]:
    """Every key ``settings`` uses, the signing/writing one first in each source."""
    moment = now or datetime.now(UTC)
    found: list[KeyAge] = []
    if settings.secret_key is not None:
        found.append(
            KeyAge(
                "AUTHKEEP_SECRET_KEY",
                kid_of(settings.secret_key.get_secret_value()),
                "signs",
                _secret_age(settings, moment),
            )
        )
    elif settings.secret_key_file.is_file():
        secret = settings.secret_key_file.read_text().strip()
        found.append(
            KeyAge(
                str(settings.secret_key_file),
                kid_of(secret),
                "signs",
                _secret_age(settings, moment),
            )
        )
    for previous in settings.previous_secret_keys:
        found.append(
            KeyAge(
                "AUTHKEEP_PREVIOUS_SECRET_KEYS",
                kid_of(previous.get_secret_value()),
                "verifies",
                None,
            )
        )
    if settings.jwt_keys_dir is not None and settings.jwt_keys_dir.is_dir():
        files = key_files(settings.jwt_keys_dir)
        starts = [key_started(path) for path in files]
        active = [i for i, at in enumerate(starts) if at <= moment]
        signing = active[-1] if active else 0
        for index, (path, started) in enumerate(zip(files, starts, strict=True)):
            role = "signs" if index == signing else "verifies"
            if started > moment:
                role = "pre-published"
            age = moment - started if started <= moment else None
            found.append(KeyAge("AUTHKEEP_JWT_KEYS_DIR", path.stem, role, age))
    return found


def _days(age: timedelta | None) -> str:
    return "age unknown" if age is None else f"{age.days} days old"


def key_report_lines(settings: Settings, now: datetime | None = None) -> list[str]:
    """The key section of check-config: one line per key, then a ``WARN`` line for each
    signing key older than ``AUTHKEEP_KEY_MAX_AGE_DAYS`` and for a secret of unknown age."""
    ages = key_ages(settings, now)
    lines = [f"KEY     {k.kid:<40} {k.role:<14} {_days(k.age):<16} {k.source}" for k in ages]
    limit = timedelta(days=settings.key_max_age_days)
    for key in ages:
        if key.role != "signs" or not settings.key_max_age_days:
            continue
        if key.age is not None and key.age > limit:
            lines.append(
                f"WARN    key {key.kid} ({key.source}) is {key.age.days} days old, past "
                f"AUTHKEEP_KEY_MAX_AGE_DAYS={settings.key_max_age_days}: rotate it "
                "(docs/key-rotation.md)"
            )
        elif key.age is None:
            lines.append(
                f"WARN    the age of {key.source} is unknown: set "
                "AUTHKEEP_SECRET_KEY_CREATED_AT to the date it was made"
            )
    return lines
