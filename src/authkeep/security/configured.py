"""The keys the settings configure: the server secret ring and the data-key box.

Below the composition root (``authkeep.wiring`` re-exports these) so that the migrations
(``authkeep.db.migrate``), which encrypt existing data, build the very keys the running
service will read it with, without importing the services.
"""

from __future__ import annotations

import secrets

import structlog

from authkeep.security.data_keys import SecretBox
from authkeep.security.envelope import Envelope
from authkeep.security.key_ring import SecretRing
from authkeep.settings import Settings, load_or_create_dev_data_key, load_or_create_dev_secret

__all__ = [
    "TEST_DATA_KEY_PURPOSE",
    "DataKeysMissing",
    "build_data_box",
    "build_envelope",
    "build_secret_ring",
    "has_data_keys",
    "signing_secret",
]

log = structlog.get_logger("authkeep")

TEST_DATA_KEY_PURPOSE = b"authkeep/test-data-key/v1"


def signing_secret(settings: Settings) -> str:
    """The HS256 secret: configured, or (development only) generated once and kept."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if settings.env == "test":
        return secrets.token_urlsafe(48)
    value, created = load_or_create_dev_secret(settings.secret_key_file)
    log.warning(
        "development_secret_key",
        file=str(settings.secret_key_file),
        created=created,
        hint="set AUTHKEEP_SECRET_KEY in production; this key is for this machine only",
    )
    return value


def build_secret_ring(settings: Settings) -> SecretRing:
    """The server secret and its predecessors (``AUTHKEEP_PREVIOUS_SECRET_KEYS``): the
    root of every symmetric key (HS256, keyed hashes), whatever signs the tokens."""
    previous = [value.get_secret_value() for value in settings.previous_secret_keys]
    return SecretRing.from_secrets(signing_secret(settings), previous)


def build_data_box(settings: Settings) -> SecretBox:
    """The data-key box: ``AUTHKEEP_DATA_KEYS``; in development a key generated once into
    ``AUTHKEEP_DATA_KEYS_FILE``; under test a fixed key derived from a public constant — the
    same in every process and across restarts and secret rotations, as a test's data must
    be (a test environment holds nothing worth protecting)."""
    if settings.data_keys:
        return SecretBox.from_entries(key.get_secret_value() for key in settings.data_keys)
    if settings.env == "test":
        root = SecretRing.from_secrets(TEST_DATA_KEY_PURPOSE)
        return SecretBox(SecretRing([root.derive(TEST_DATA_KEY_PURPOSE).newest]))
    entry, created = load_or_create_dev_data_key(settings.data_keys_file)
    log.warning(
        "development_data_key",
        file=str(settings.data_keys_file),
        created=created,
        hint="set AUTHKEEP_DATA_KEYS in production; this key is for this machine only",
    )
    return SecretBox.from_entries([entry])


class DataKeysMissing(ValueError):
    """Production without ``AUTHKEEP_DATA_KEYS``: no key to seal personal data with."""


def has_data_keys(settings: Settings) -> bool:
    """Whether ``settings`` give data keys: configured, or (outside production) generated
    or derived. Production never falls back to a generated key: what it sealed would be
    lost with the file."""
    return bool(settings.data_keys) or not settings.is_production


def build_envelope(settings: Settings) -> Envelope:
    """The envelope of personal data that ``settings`` configure; :class:`DataKeysMissing`
    in production without ``AUTHKEEP_DATA_KEYS``."""
    if not has_data_keys(settings):
        raise DataKeysMissing("AUTHKEEP_DATA_KEYS is required in production")
    return Envelope(build_data_box(settings))
