"""Configuration, read from ``AUTHKEEP_*`` environment variables (and a ``.env`` file).

Every security-relevant rule about configuration lives here, in :func:`find_problems`, so
that the service (which refuses to start), ``authkeep check-config`` (which prints them) and
the tests all read the same list.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

import limits
from limits import RateLimitItem
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from authkeep import tls
from authkeep.tls import DatabaseTLS, SSLMode

Environment = Literal["development", "test", "production"]

MIN_SECRET_LENGTH = 32
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_ED25519_KEY = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]=?")
# Values copied from tutorials, templates and .env.example files; a key that equals one
# of them (ignoring case) is as good as public.
WEAK_SECRETS = frozenset(
    {
        "secret",
        "secretkey",
        "secret-key",
        "secret_key",
        "mysecret",
        "supersecret",
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "change-this",
        "change-me-in-production",
        "changeme-in-production",
        "change_me_in_production",
        "your-secret-key",
        "your_secret_key",
        "yoursecretkey",
        "your-secret-key-here",
        "your-256-bit-secret",
        "jwt-secret",
        "jwtsecret",
        "password",
        "development",
        "default",
        "test",
        "insecure",
        "django-insecure",
        "notsecret",
        "keyboardcat",
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
    }
)
_MIN_DISTINCT_SECRET_CHARS = 10
DEFAULT_IDLE_TIMEOUT = timedelta(days=7)
MIN_IDLE_TIMEOUT = timedelta(minutes=1)
_DIGITS = re.compile(r"\s*[0-9]+\s*")
# NIST SP 800-63B §5.2.2: at most 100 consecutive failed authentication attempts per account.
NIST_MAX_FAILURES = 100

SECRET_HINT = (
    "set AUTHKEEP_SECRET_KEY to a random value of at least 32 characters, for example "
    "the output of: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
)


# An AUTHKEEP_DATA_KEYS entry: a key id, ':', then 32 bytes in unpadded base64url.
DATA_KEY_ENTRY = re.compile(r"^[A-Za-z0-9_-]{1,32}:[A-Za-z0-9_-]{43}=?$")


def parse_limits(value: str, field: str | None = None) -> list[RateLimitItem]:
    """Parse a limit in ``limits`` notation (``5/minute``, ``5 per 15 minutes``; several
    separated by ``;``), or raise ValueError naming the setting."""
    try:
        return limits.parse_many(value)
    except ValueError:
        name = f"AUTHKEEP_{(field or 'limit').upper()}"
        raise ValueError(
            f"{name} is not a limit in 'limits' notation, e.g. '5/minute' or "
            "'5 per 15 minutes' (several separated by ';')"
        ) from None


DEFAULT_TRUSTED_HOSTS = ("localhost", "127.0.0.1")
TextList = Annotated[list[str], NoDecode]
"""A list setting: read from the environment as a JSON list or as comma-separated text."""
# The async drivers authkeep runs on; a bare dialect means its driver here.
DATABASE_DRIVERS = {"postgresql": "asyncpg", "postgres": "asyncpg", "sqlite": "aiosqlite"}
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\+([A-Za-z0-9_]+))?://")


CONSENT_PURPOSE_NAME = re.compile(r"[a-z0-9_-]{1,32}")
"""A consent purpose's name (``AUTHKEEP_CONSENT_PURPOSES`` keys, the URL's ``{purpose}``)."""
CONSENT_VERSION = re.compile(r"[!-~](?:[ -~]{0,30}[!-~])?")
"""A purpose's version: 1-32 printable ASCII characters, no space at either end."""
MAX_CONSENT_PURPOSES = 32


class ConsentPurpose(BaseModel):
    """One entry of ``AUTHKEEP_CONSENT_PURPOSES``: the purpose's current version (the text
    users agree to) and whether sign-up needs it (docs/privacy.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    required: StrictBool = False

    @field_validator("version")
    @classmethod
    def _short_text(cls, value: str) -> str:
        if not CONSENT_VERSION.fullmatch(value):
            raise ValueError(
                "a consent version is 1 to 32 printable ASCII characters without a space at "
                'either end, e.g. "2026-11" or "v3"'
            )
        return value


def parse_consent_purposes(value: object) -> dict[str, ConsentPurpose]:
    """``AUTHKEEP_CONSENT_PURPOSES``: a JSON object (or a mapping), purpose name -> ``{"version":
    ..., "required": ...}``; empty text is no purpose. ValueError naming the setting and the
    purpose otherwise."""
    name = "AUTHKEEP_CONSENT_PURPOSES"
    parsed: object = value
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = json.loads(text) if text else {}
        except ValueError:
            parsed = None
    if not isinstance(parsed, dict):
        raise ValueError(
            f"{name} is not a JSON object; write it as "
            '{"terms": {"version": "2026-11", "required": true}, "marketing": {"version": "1"}}'
        )
    if len(parsed) > MAX_CONSENT_PURPOSES:
        raise ValueError(f"{name} names {len(parsed)} purposes; at most {MAX_CONSENT_PURPOSES}")
    purposes: dict[str, ConsentPurpose] = {}
    for purpose, entry in parsed.items():
        # Names appear in URLs (PUT /auth/me/consents/{purpose}) and audit rows: plain ones.
        if not isinstance(purpose, str) or not CONSENT_PURPOSE_NAME.fullmatch(purpose):
            raise ValueError(
                f"{name}: purpose names are 1 to 32 characters of a-z, 0-9, '_' and '-'; "
                f"{str(purpose)[:40]!r} is not one"
            )
        if isinstance(entry, ConsentPurpose):
            purposes[purpose] = entry
            continue
        try:
            purposes[purpose] = ConsentPurpose.model_validate(entry)
        except ValidationError as exc:
            reasons = "; ".join(
                ("".join(f"{part}: " for part in error["loc"]))
                + str(error["msg"]).removeprefix("Value error, ")
                for error in exc.errors()
            )
            raise ValueError(
                f"{name}: purpose {purpose!r} must be an object such as "
                f'{{"version": "2026-11", "required": true}} ({reasons})'
            ) from None
    return purposes


def parse_text_list(value: str, name: str) -> list[str]:
    """``value`` as a list: a JSON list of strings (``["a", "b"]``), else comma-separated
    (``a, b``); empty text is an empty list. ValueError naming ``name`` otherwise."""
    text = value.strip()
    if not text.startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(
            f"{name} is not a JSON list of strings; write it as JSON, e.g. "
            '["api.example.com", "www.example.com"], or comma-separated: '
            "api.example.com,www.example.com"
        )
    return items


def supported_database_url(url: str, name: str = "AUTHKEEP_DATABASE_URL") -> str:
    """``url`` with the async driver authkeep uses, or ValueError naming ``name``.

    ``postgresql://`` (and ``postgres://``) mean ``postgresql+asyncpg://``, ``sqlite://``
    means ``sqlite+aiosqlite://``; any other dialect or driver is refused here, in one line,
    rather than at the first query with an import error. The message never holds the URL
    (it may carry a password).
    """
    match = _URL_SCHEME.match(url.strip())
    example = "postgresql+asyncpg://user:password@host:5432/db or sqlite+aiosqlite:///./authkeep.db"
    if match is None:
        raise ValueError(f"{name} is not a database URL; use {example}")
    dialect, driver = match.group(1).lower(), match.group(2)
    wanted = DATABASE_DRIVERS.get(dialect)
    if wanted is None:
        raise ValueError(
            f"{name} names the {dialect} database, which authkeep does not support; use {example}"
        )
    if driver is not None and driver.lower() != wanted:
        raise ValueError(
            f"{name} names the {driver} driver; authkeep runs on {wanted} only: use {example}"
        )
    canonical = "postgresql" if wanted == "asyncpg" else dialect
    return f"{canonical}+{wanted}://" + url.strip()[match.end() :]


def failures_per_day(items: list[RateLimitItem]) -> int:
    """The most events ``items`` together let through in any 24 hours."""
    day = 24 * 60 * 60
    return min(item.amount * -(-day // item.get_expiry()) for item in items)


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem.

    ``refuse`` problems stop the service in every environment; ``production`` problems stop
    it in production only (elsewhere they are warnings); the rest are warnings everywhere.
    """

    setting: str
    message: str
    level: Literal["refuse", "production", "warning"]

    def blocks(self, env: Environment) -> bool:
        """Whether this problem stops a service running in ``env``."""
        return self.level == "refuse" or (self.level == "production" and env == "production")


def secret_weakness(value: str) -> str | None:
    """Say why ``value`` is unfit as a signing secret, or return None when it is fine."""
    lowered = value.strip().lower()
    if lowered in WEAK_SECRETS or any(
        lowered == weak * (len(lowered) // len(weak)) for weak in WEAK_SECRETS if weak
    ):
        return "AUTHKEEP_SECRET_KEY is a well-known placeholder value"
    if len(value) < MIN_SECRET_LENGTH:
        return f"AUTHKEEP_SECRET_KEY is shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(value)) < _MIN_DISTINCT_SECRET_CHARS:
        return "AUTHKEEP_SECRET_KEY has too few distinct characters to be random"
    return None


class Settings(BaseSettings):
    """All of authkeep's settings. Build one per application: there is no global instance."""

    model_config = SettingsConfigDict(
        env_prefix="AUTHKEEP_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # When False, construction never raises for a configuration *problem* (bad types still
    # raise): ``check-config`` uses this to list every problem instead of the first.
    enforce: ClassVar[bool] = True

    env: Environment = "development"
    secret_key: SecretStr | None = None
    secret_key_file: Path = Path(".authkeep-secret")
    # Rotation (docs/key-rotation.md): secrets that verify and read but never sign or write.
    # A JSON list or comma-separated; newest first.
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Data keys (docs/data-keys.md): "<key id>:<base64url of 32 bytes>", newest first; the
    # first seals, all open. Development generates one into the file; production needs them.
    data_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    data_keys_file: Path = Path(".authkeep-data-keys")
    # When AUTHKEEP_SECRET_KEY was made (a date): check-config reports its age from it.
    secret_key_created_at: date | None = None
    # check-config warns about a key older than this (0: never).
    key_max_age_days: int = Field(default=90, ge=0, le=3650)
    # `authkeep keys rotate`: how long a new asymmetric key sits in the JWKS before it signs.
    jwt_key_prepublish_hours: int = Field(default=24, ge=0, le=24 * 30)

    database_url: str = "sqlite+aiosqlite:///./authkeep.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    redis_url: SecretStr | None = None
    redis_prefix: str = "authkeep:"
    # TLS to PostgreSQL and Redis (docs/deployment.md, authkeep.tls). No mode: the URL's own
    # choice. The CA files are PEM bundles; Redis takes TLS from a rediss:// URL.
    database_ssl_mode: SSLMode | None = None
    database_ssl_ca_file: Path | None = None
    redis_ssl_ca_file: Path | None = None

    access_token_expire_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # The absolute session lifetime: no refresh carries a session past it.
    refresh_token_expire_days: int = Field(default=14, ge=1, le=365)
    # How long a session may go without a refresh before it ends: integer seconds or an
    # ISO 8601 duration (``P7D``). Left unset, it is 7 days or the absolute lifetime if
    # shorter; set explicitly, it must lie between the access-token and session lifetimes.
    session_idle_timeout: timedelta = Field(default=DEFAULT_IDLE_TIMEOUT, ge=MIN_IDLE_TIMEOUT)
    refresh_reuse_interval_seconds: int = Field(default=10, ge=0, le=300)
    # How recent a sign-in (or step-up) a sensitive route needs (docs/mfa.md).
    step_up_max_age_seconds: int = Field(default=600, ge=10, le=24 * 3600)
    # Passkeys (docs/passkeys.md). The relying party id is the site's domain (unset: the host
    # of AUTHKEEP_PUBLIC_URL, else localhost); its name is what authenticators show (unset:
    # AUTHKEEP_PRODUCT_NAME); the origins are where ceremonies may run (unset: the public
    # URL, else http://localhost:8000); a ceremony's challenge lives this long.
    webauthn_rp_id: str | None = Field(default=None, max_length=253)
    webauthn_rp_name: str | None = Field(default=None, min_length=1, max_length=100)
    webauthn_origins: TextList = Field(default_factory=list)
    webauthn_challenge_expire_seconds: int = Field(default=300, ge=30, le=3600)
    jwt_issuer: str = "authkeep"
    jwt_audience: str = "authkeep"
    jwt_leeway_seconds: int = Field(default=10, ge=0, le=300)
    jwt_keys_dir: Path | None = None

    rate_limit_enabled: bool = True
    rate_limit_per_minute: int = Field(default=60, ge=1)
    login_rate_limit: str = "5/minute"
    login_ip_failure_limit: str = "5 per 15 minutes"
    # Progressive delay: failed logins per account, several windows (see docs/rate-limits.md).
    login_account_failure_limits: str = "10 per 15 minutes; 20 per hour; 100 per day"
    login_known_client_days: int = Field(default=30, ge=0, le=365)
    # A challenge after failed logins (docs/challenge.md): failures per email or per client
    # IP, within the failure windows above, before each attempt needs a solved challenge.
    # 0 = never; off as well when rate limiting is off.
    challenge_after_failures: int = Field(default=3, ge=0, le=1000)
    challenge_provider: Literal["altcha", "turnstile", "hcaptcha", "recaptcha"] = "altcha"
    # ALTCHA's cost: the largest secret number; a client needs about half as many SHA-256
    # hashes (1,000,000: roughly a second of a phone's CPU in the widget).
    challenge_altcha_max_number: int = Field(default=1_000_000, ge=1, le=100_000_000)
    challenge_expire_seconds: int = Field(default=300, ge=10, le=3600)
    # Turnstile, hCaptcha, reCAPTCHA: the secret and site key from the service's console,
    # and its siteverify URL (None: the service's public one).
    challenge_secret: SecretStr | None = None
    challenge_site_key: str | None = Field(default=None, max_length=200)
    challenge_verify_url: str | None = None
    register_rate_limit: str = "10/hour"
    refresh_rate_limit: str = "30/minute"
    password_change_rate_limit: str = "5 per 15 minutes"
    # POST /auth/password/strength, per client IP: a sign-up page's meter (debounced).
    password_strength_rate_limit: str = "30/minute"
    # Emails the open flows (register, resend, forgot, email change) may cause, per
    # recipient address (over it: the email is silently skipped, the answer unchanged) and
    # per client IP (over it: 429). Counted alike for existing and unknown addresses.
    mail_recipient_rate_limit: str = "5 per hour"
    mail_ip_rate_limit: str = "20 per hour"
    # Second-factor code checks (MFA verify at login, TOTP confirm, step-up with a code),
    # counted per user AND per client IP (docs/mfa.md).
    mfa_rate_limit: str = "5 per minute"
    # GET /auth/me/export, per user: each one reads and signs everything held about them.
    export_rate_limit: str = "5 per hour"

    # Accounts by email (docs/email.md). None: required in production, optional elsewhere.
    email_verification: Literal["required", "optional", "off"] | None = None
    email_verification_expire_hours: int = Field(default=48, ge=1, le=14 * 24)
    password_reset_expire_minutes: int = Field(default=60, ge=5, le=24 * 60)
    email_change_expire_hours: int = Field(default=24, ge=1, le=7 * 24)
    # Consents (docs/privacy.md): purpose name -> its current version and whether sign-up
    # needs it, as a JSON object. Empty: no purpose, register needs no consent.
    consent_purposes: Annotated[dict[str, ConsentPurpose], NoDecode] = Field(default_factory=dict)
    # Deletion and retention (docs/privacy.md): days between a deletion request (the account
    # is locked at once) and its erasure by `authkeep purge`, during which the owner can
    # cancel through the emailed link; 0 erases at once. Accounts unused for
    # inactive_account_days are warned, then scheduled for deletion (0: never).
    account_deletion_grace_days: int = Field(default=14, ge=0, le=365)
    inactive_account_days: int = Field(default=0, ge=0, le=36_500)

    # List settings: a JSON list or comma-separated text (see _text_list).
    allowed_origins: TextList = Field(default_factory=list)
    trusted_hosts: TextList = Field(default_factory=lambda: list(DEFAULT_TRUSTED_HOSTS))
    trusted_proxies: TextList = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    demo_mode: bool = False

    argon2_memory_kib: int = Field(default=19 * 1024, ge=8 * 1024)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)
    hash_workers: int = Field(default=0, ge=0, description="0 means one per CPU core")
    hash_queue_limit: int = Field(default=256, ge=1)

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Database roles (PostgreSQL): the app connects with database_url as a restricted role;
    # migrations run as the schema owner and grant that role what it needs.
    migration_database_url: str | None = None
    # Unset: as AUTHKEEP_DATABASE_SSL_MODE / _SSL_CA_FILE (the same server, as a rule).
    migration_database_ssl_mode: SSLMode | None = None
    migration_database_ssl_ca_file: Path | None = None
    database_app_role: str | None = None

    audit_enabled: bool = True
    audit_retention_days: int = Field(default=730, ge=1)
    audit_purge_role: str = "authkeep_audit_purger"
    audit_purge_database_url: str | None = None
    audit_purge_database_ssl_mode: SSLMode | None = None
    audit_purge_database_ssl_ca_file: Path | None = None
    # Signed checkpoints of the audit chains (docs/audit.md): an Ed25519 private key as
    # base64url of its 32 bytes; development generates one into the key file.
    audit_checkpoint_key: SecretStr | None = None
    audit_checkpoint_key_file: Path = Path(".authkeep-audit-key")
    audit_checkpoint_public_keys: TextList = Field(default_factory=list)
    audit_checkpoint_dir: Path | None = None
    audit_checkpoint_interval_seconds: int = Field(default=3600, ge=0, le=7 * 24 * 3600)

    metrics_allowed_ips: TextList = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Platform admin routes: client IPs/CIDRs allowed in; empty means no IP restriction.
    admin_allowed_ips: TextList = Field(default_factory=list)

    # Mail and the outbox (docs/email.md). None: console outside production; production
    # must choose (the console would print reset links into the process's logs).
    email_backend: Literal["console", "file", "smtp"] | None = None
    email_file_dir: Path = Path("./authkeep-mail")
    email_from: str = "authkeep <no-reply@localhost>"
    email_templates_dir: Path | None = None
    public_url: str | None = None
    product_name: str = Field(default="authkeep", min_length=1, max_length=100)
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Invitations into organizations (docs/authorization.md): days a pending one stays
    # acceptable.
    invitation_expire_days: int = Field(default=7, ge=1, le=90)
    outbox_in_process: bool = True
    outbox_max_attempts: int = Field(default=12, ge=1, le=100)
    outbox_batch_size: int = Field(default=20, ge=1, le=1000)
    outbox_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    outbox_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    outbox_backoff_base_seconds: float = Field(default=5.0, ge=0, le=3600)
    outbox_backoff_max_seconds: float = Field(default=3600.0, ge=0, le=7 * 24 * 3600)
    # Webhooks (docs/webhooks.md). false: no event is written (endpoints can still be managed).
    webhooks_enabled: bool = True
    # CIDRs webhook deliveries may reach although they are not public (loopback, private,
    # link-local...): local development and tests. Empty: public addresses only.
    webhook_allowed_networks: TextList = Field(default_factory=list)
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    # Seconds between attempts after the first (Standard Webhooks: 5 s, 5 min, 30 min, 2 h,
    # 5 h, 10 h, 10 h); a JSON list or comma-separated numbers.
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    # Failed attempts in a row (any delivery) that disable an endpoint; 0: never.
    webhook_failure_limit: int = Field(default=50, ge=0, le=100_000)
    # How long the previous signing secret keeps signing after a rotation (0: not at all).
    webhook_secret_rotation_hours: int = Field(default=24, ge=0, le=24 * 30)
    webhook_max_endpoints: int = Field(default=20, ge=1, le=1000)

    @field_validator(
        "login_rate_limit",
        "login_ip_failure_limit",
        "register_rate_limit",
        "refresh_rate_limit",
        "password_change_rate_limit",
        "password_strength_rate_limit",
        "mail_recipient_rate_limit",
        "mail_ip_rate_limit",
        "mfa_rate_limit",
        "export_rate_limit",
    )
    @classmethod
    def _one_limit(cls, value: str, info: ValidationInfo) -> str:
        if len(parse_limits(value, info.field_name)) != 1:
            raise ValueError(f"AUTHKEEP_{str(info.field_name).upper()} must be one limit")
        return value

    @field_validator(
        "allowed_origins",
        "trusted_hosts",
        "trusted_proxies",
        "audit_checkpoint_public_keys",
        "metrics_allowed_ips",
        "admin_allowed_ips",
        "webauthn_origins",
        "webhook_allowed_networks",
        mode="before",
    )
    @classmethod
    def _text_list(cls, value: object, info: ValidationInfo) -> object:
        # Operators write AUTHKEEP_TRUSTED_HOSTS=api.example.com as often as the JSON form;
        # both mean the same, and a malformed JSON list is one line naming the setting.
        if not isinstance(value, str):
            return value
        return parse_text_list(value, f"AUTHKEEP_{str(info.field_name).upper()}")

    @field_validator("database_url", "migration_database_url", "audit_purge_database_url")
    @classmethod
    def _supported_database(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return supported_database_url(value, f"AUTHKEEP_{str(info.field_name).upper()}")

    @field_validator("previous_secret_keys", "data_keys", mode="before")
    @classmethod
    def _secret_list(cls, value: object) -> object:
        # JSON when it looks like JSON, else comma-separated: a secret with a comma needs JSON.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("login_account_failure_limits")
    @classmethod
    def _many_limits(cls, value: str, info: ValidationInfo) -> str:
        parse_limits(value, info.field_name)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    "AUTHKEEP_TRUSTED_PROXIES must list IP addresses or CIDR networks"
                ) from None
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    "AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS must list IP addresses or CIDR networks"
                ) from None
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _retry_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            value = parse_text_list(value, "AUTHKEEP_WEBHOOK_RETRY_SCHEDULE")
        if isinstance(value, list):
            try:
                delays = [float(item) for item in value]
            except (TypeError, ValueError):
                raise ValueError(
                    "AUTHKEEP_WEBHOOK_RETRY_SCHEDULE must list seconds, e.g. 5,300,1800"
                ) from None
            if not 1 <= len(delays) <= 50 or any(
                not 0 <= delay <= 7 * 24 * 3600 for delay in delays
            ):
                raise ValueError(
                    "AUTHKEEP_WEBHOOK_RETRY_SCHEDULE needs 1 to 50 delays of 0 to 604800 s"
                )
            return delays
        return value

    @field_validator("admin_allowed_ips")
    @classmethod
    def _admin_ips_are_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    "AUTHKEEP_ADMIN_ALLOWED_IPS must list IP addresses or CIDR networks"
                ) from None
        return value

    @field_validator("metrics_allowed_ips")
    @classmethod
    def _metrics_ips_are_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    "AUTHKEEP_METRICS_ALLOWED_IPS must list IP addresses or CIDR networks"
                ) from None
        return value

    @field_validator("database_app_role", "audit_purge_role")
    @classmethod
    def _role_is_identifier(cls, value: str | None) -> str | None:
        # Role names are spliced into GRANT statements (identifiers cannot be bound
        # parameters): only plain lower-case identifiers, so no SQL can ride along.
        if value is not None and not _ROLE_NAME.fullmatch(value):
            raise ValueError(
                "database role names must match [a-z_][a-z0-9_]{0,62} (plain identifiers)"
            )
        return value

    @field_validator("audit_checkpoint_key", "audit_checkpoint_public_keys")
    @classmethod
    def _checkpoint_keys_are_ed25519(
        cls, value: SecretStr | list[str] | None, info: ValidationInfo
    ) -> SecretStr | list[str] | None:
        # 32 raw bytes in base64url: 43 characters, one optional "=" of padding.
        texts = [value.get_secret_value()] if isinstance(value, SecretStr) else value or []
        if any(not _ED25519_KEY.fullmatch(text.strip()) for text in texts):
            raise ValueError(
                f"AUTHKEEP_{str(info.field_name).upper()} must hold Ed25519 keys as base64url "
                "of 32 bytes; 'authkeep audit checkpoint-key' prints a new pair"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(
                "AUTHKEEP_PUBLIC_URL must be an absolute http(s) URL without query or "
                "fragment, e.g. https://app.example.com"
            )
        return value.rstrip("/")

    @field_validator("webauthn_rp_id")
    @classmethod
    def _rp_id_is_a_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return webauthn_rp_id(value)

    @field_validator("webauthn_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        return [webauthn_origin(item) for item in value]

    @field_validator("consent_purposes", mode="before")
    @classmethod
    def _consent_purposes(cls, value: object) -> object:
        return parse_consent_purposes(value)

    @field_validator("session_idle_timeout", mode="before")
    @classmethod
    def _idle_timeout_seconds(cls, value: object) -> object:
        # pydantic reads a bare number in an environment string as a malformed duration;
        # operators write seconds, so "604800" means 604800 seconds.
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            return int(value)
        return value

    @model_validator(mode="after")
    def _default_idle_within_lifetime(self) -> Settings:
        # Only the default is fitted to a short absolute lifetime (AUTHKEEP_REFRESH_TOKEN_
        # EXPIRE_DAYS=3 keeps working); an explicit value out of range is refused below.
        if "session_idle_timeout" not in self.model_fields_set:
            self.session_idle_timeout = min(DEFAULT_IDLE_TIMEOUT, self.session_lifetime)
        return self

    @model_validator(mode="after")
    def _default_email_verification(self) -> Settings:
        # Resolved here so that check-config prints the mode in force, not "not set".
        if self.email_verification is None:
            self.email_verification = self.verification_mode
        return self

    @model_validator(mode="after")
    def _default_webauthn(self) -> Settings:
        # Resolved here (check-config prints what is in force) and before the problems are
        # judged. Unset, passkeys live where users open the site: AUTHKEEP_PUBLIC_URL.
        site = urlsplit(self.link_base)
        if self.webauthn_rp_id is None:
            self.webauthn_rp_id = site.hostname or "localhost"
        if self.webauthn_rp_name is None:
            self.webauthn_rp_name = self.product_name
        if "webauthn_origins" not in self.model_fields_set:
            self.webauthn_origins = [webauthn_origin(f"{site.scheme}://{site.netloc}")]
        return self

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if not type(self).enforce:
            return self
        blocking = [p for p in find_problems(self) if p.blocks(self.env)]
        if blocking:
            raise ValueError("unsafe configuration: " + "; ".join(f"{p.message}" for p in blocking))
        return self

    @property
    def is_production(self) -> bool:
        """True when running with ``AUTHKEEP_ENV=production``."""
        return self.env == "production"

    @property
    def session_lifetime(self) -> timedelta:
        """The absolute session lifetime (``AUTHKEEP_REFRESH_TOKEN_EXPIRE_DAYS``)."""
        return timedelta(days=self.refresh_token_expire_days)

    @property
    def migrations_url(self) -> str:
        """Where migrations run: the owner role's URL, else the app's own."""
        return self.migration_database_url or self.database_url

    @property
    def database_tls(self) -> DatabaseTLS:
        """TLS of the app's database connections (``AUTHKEEP_DATABASE_SSL_*``)."""
        return DatabaseTLS(self.database_ssl_mode, self.database_ssl_ca_file)

    @property
    def migration_database_tls(self) -> DatabaseTLS:
        """TLS of the migrations' connection: ``AUTHKEEP_MIGRATION_DATABASE_SSL_*``, each
        defaulting to the app's."""
        return self._connection_tls("migration_database")

    @property
    def audit_purge_database_tls(self) -> DatabaseTLS:
        """TLS of ``authkeep audit purge``'s connection: ``AUTHKEEP_AUDIT_PURGE_DATABASE_
        SSL_*``, each defaulting to the app's."""
        return self._connection_tls("audit_purge_database")

    def _connection_tls(self, prefix: str) -> DatabaseTLS:
        mode: SSLMode | None = getattr(self, f"{prefix}_ssl_mode")
        ca_file: Path | None = getattr(self, f"{prefix}_ssl_ca_file")
        own = f"AUTHKEEP_{prefix.upper()}"
        url_set = getattr(self, f"{prefix}_url") is not None
        return DatabaseTLS(
            mode if mode is not None else self.database_ssl_mode,
            ca_file if ca_file is not None else self.database_ssl_ca_file,
            mode_setting=f"{own}_SSL_MODE" if mode is not None else "AUTHKEEP_DATABASE_SSL_MODE",
            ca_setting=(
                f"{own}_SSL_CA_FILE" if ca_file is not None else "AUTHKEEP_DATABASE_SSL_CA_FILE"
            ),
            url_setting=f"{own}_URL" if url_set else "AUTHKEEP_DATABASE_URL",
        )

    @property
    def verification_mode(self) -> Literal["required", "optional", "off"]:
        """``AUTHKEEP_EMAIL_VERIFICATION``: as set, else required in production and optional
        elsewhere (so a development quick start signs in without reading mail)."""
        if self.email_verification is not None:
            return self.email_verification
        return "required" if self.is_production else "optional"

    @property
    def mail_backend(self) -> Literal["console", "file", "smtp"]:
        """The email transport in use: the configured one, else the console."""
        return self.email_backend or "console"

    @property
    def link_base(self) -> str:
        """Where the links in emails start: ``AUTHKEEP_PUBLIC_URL``, else the local server."""
        return self.public_url or "http://localhost:8000"

    @property
    def hash_worker_count(self) -> int:
        """How many password hashes may run at once (one per core by default)."""
        return self.hash_workers or os.cpu_count() or 1


class InspectedSettings(Settings):
    """Settings that load even when unsafe, so every problem can be reported at once."""

    enforce: ClassVar[bool] = False


def find_problems(settings: Settings) -> list[Problem]:
    """Every problem with ``settings``, whatever the environment."""
    problems: list[Problem] = []
    if settings.secret_key is None:
        problems.append(
            Problem(
                "AUTHKEEP_SECRET_KEY",
                "AUTHKEEP_SECRET_KEY is not set (development signs with a key generated once "
                f"into {settings.secret_key_file}); production needs a strong one: " + SECRET_HINT,
                "production",
            )
        )
    else:
        weakness = secret_weakness(settings.secret_key.get_secret_value())
        if weakness:
            problems.append(Problem("AUTHKEEP_SECRET_KEY", f"{weakness}: {SECRET_HINT}", "refuse"))
    problems.extend(_previous_secret_problems(settings))
    problems.extend(_data_key_problems(settings))
    problems.extend(_idle_timeout_problems(settings))
    problems.extend(_challenge_problems(settings))
    problems.extend(_webauthn_problems(settings))
    if any(origin.strip() == "*" for origin in settings.allowed_origins):
        problems.append(
            Problem(
                "AUTHKEEP_ALLOWED_ORIGINS",
                "AUTHKEEP_ALLOWED_ORIGINS contains '*'; list your front-end origins instead, "
                'e.g. ["https://app.example.com"]',
                "refuse",
            )
        )
    if any(host.strip() == "*" for host in settings.trusted_hosts):
        problems.append(
            Problem(
                "AUTHKEEP_TRUSTED_HOSTS",
                "AUTHKEEP_TRUSTED_HOSTS contains '*', which turns the Host check off; "
                'list your domains, e.g. ["api.example.com"]',
                "production",
            )
        )
    if not settings.trusted_hosts:
        problems.append(
            Problem(
                "AUTHKEEP_TRUSTED_HOSTS",
                "AUTHKEEP_TRUSTED_HOSTS is empty, so no Host header is accepted; list the "
                'host names this service answers to, e.g. ["api.example.com"] or '
                "api.example.com",
                "production",
            )
        )
    elif "trusted_hosts" not in settings.model_fields_set:
        default = ", ".join(DEFAULT_TRUSTED_HOSTS)
        problems.append(
            Problem(
                "AUTHKEEP_TRUSTED_HOSTS",
                f"AUTHKEEP_TRUSTED_HOSTS is left at its default ({default}), which fits a local "
                "server only; production must list the host names it serves, e.g. "
                '["api.example.com"] or api.example.com',
                "production",
            )
        )
    if settings.demo_mode:
        problems.append(
            Problem(
                "AUTHKEEP_DEMO_MODE",
                "AUTHKEEP_DEMO_MODE is true; demo accounts have public passwords, set it to false",
                "production",
            )
        )
    if not settings.rate_limit_enabled:
        problems.append(
            Problem(
                "AUTHKEEP_RATE_LIMIT_ENABLED",
                "AUTHKEEP_RATE_LIMIT_ENABLED is false: logins are not protected against "
                "brute force; set it to true outside load tests",
                "warning",
            )
        )
    if settings.rate_limit_enabled:
        allowed = failures_per_day(limits.parse_many(settings.login_account_failure_limits))
        if allowed > NIST_MAX_FAILURES:
            problems.append(
                Problem(
                    "AUTHKEEP_LOGIN_ACCOUNT_FAILURE_LIMITS",
                    f"AUTHKEEP_LOGIN_ACCOUNT_FAILURE_LIMITS lets {allowed} failed logins per "
                    f"account through in 24 hours; NIST SP 800-63B allows at most "
                    f"{NIST_MAX_FAILURES}: add a tier such as '100 per day'",
                    "warning",
                )
            )
    if not settings.audit_enabled:
        problems.append(
            Problem(
                "AUTHKEEP_AUDIT_ENABLED",
                "AUTHKEEP_AUDIT_ENABLED is false: nothing is written to the audit log; "
                "set it to true outside benchmarks",
                "production",
            )
        )
    if settings.audit_checkpoint_key is None and settings.env == "production":
        # A warning, not a refusal: deployments configured before checkpoints existed keep
        # starting (docs/audit.md, "Decision — checkpoints are not mandatory").
        problems.append(
            Problem(
                "AUTHKEEP_AUDIT_CHECKPOINT_KEY",
                "AUTHKEEP_AUDIT_CHECKPOINT_KEY is not set: no signed checkpoints of the audit "
                "log, so a database owner can rewrite a whole chain unnoticed; set it (from "
                "'authkeep audit checkpoint-key') or run 'authkeep audit checkpoint' from a "
                "job that holds the key",
                "warning",
            )
        )
    if (
        settings.database_url.startswith("postgresql")
        and settings.migrations_url == settings.database_url
    ):
        problems.append(
            Problem(
                "AUTHKEEP_MIGRATION_DATABASE_URL",
                "the app connects as the role that owns the schema, which can drop the audit "
                "log's append-only trigger; set AUTHKEEP_MIGRATION_DATABASE_URL to the owner "
                "and AUTHKEEP_DATABASE_URL to a restricted role (see docs/audit.md)",
                "warning",
            )
        )
    if settings.database_url.startswith("sqlite"):
        problems.append(
            Problem(
                "AUTHKEEP_DATABASE_URL",
                "AUTHKEEP_DATABASE_URL is SQLite: fine for one process, but production should "
                "use postgresql+asyncpg:// (row-level security, several workers)",
                "warning",
            )
        )
    if settings.redis_url is None:
        problems.append(
            Problem(
                "AUTHKEEP_REDIS_URL",
                "AUTHKEEP_REDIS_URL is not set: rate limits and revocations are per process, "
                "so run a single worker or set it",
                "warning",
            )
        )
    problems += _mail_problems(settings)
    problems += _tls_problems(settings)
    problems += _webhook_problems(settings)
    return problems


def _webhook_problems(settings: Settings) -> list[Problem]:
    """Webhook settings that open a way into the network or cut deliveries short."""
    problems: list[Problem] = []
    if settings.is_production and settings.webhook_allowed_networks:
        problems.append(
            Problem(
                "AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS",
                "AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS lets webhook endpoints reach non-public "
                "networks: any organization admin could make authkeep post into them; "
                "leave it empty in production unless every admin is trusted",
                "warning",
            )
        )
    if settings.webhook_timeout_seconds >= settings.outbox_lease_seconds / 2:
        problems.append(
            Problem(
                "AUTHKEEP_WEBHOOK_TIMEOUT_SECONDS",
                "AUTHKEEP_WEBHOOK_TIMEOUT_SECONDS is not below half of "
                "AUTHKEEP_OUTBOX_LEASE_SECONDS: the worker cuts every send off at half the "
                "lease, so a slow endpoint times out earlier than configured",
                "warning",
            )
        )
    if len(settings.webhook_retry_schedule) + 1 > settings.outbox_max_attempts:
        problems.append(
            Problem(
                "AUTHKEEP_WEBHOOK_RETRY_SCHEDULE",
                "AUTHKEEP_WEBHOOK_RETRY_SCHEDULE has more attempts than "
                "AUTHKEEP_OUTBOX_MAX_ATTEMPTS allows: the last ones never happen",
                "warning",
            )
        )
    return problems


def _mail_problems(settings: Settings) -> list[Problem]:
    """Where production email would leak a link or a password, or go nowhere."""
    problems: list[Problem] = []
    if settings.is_production and settings.verification_mode != "required":
        problems.append(
            Problem(
                "AUTHKEEP_EMAIL_VERIFICATION",
                f"AUTHKEEP_EMAIL_VERIFICATION is {settings.verification_mode}: accounts sign "
                "in with addresses nobody proved they own (anyone can sign up as someone "
                "else); set it to required",
                "warning",
            )
        )
    if settings.mail_backend == "console":
        problems.append(
            Problem(
                "AUTHKEEP_EMAIL_BACKEND",
                "AUTHKEEP_EMAIL_BACKEND is console (the default): emails, with their "
                "single-use links, are printed to stdout and nobody receives them; set it "
                "to smtp (or file)",
                "production",
            )
        )
    if settings.public_url is None or not settings.public_url.startswith("https://"):
        problems.append(
            Problem(
                "AUTHKEEP_PUBLIC_URL",
                "AUTHKEEP_PUBLIC_URL is not an https:// URL: the links in emails would point "
                "to localhost or travel in clear; set it, e.g. https://app.example.com",
                "production",
            )
        )
    loopback = settings.smtp_host in ("localhost", "127.0.0.1", "::1")
    if (
        settings.mail_backend == "smtp"
        and settings.smtp_tls == "none"
        and settings.smtp_password is not None
        and not loopback
    ):
        problems.append(
            Problem(
                "AUTHKEEP_SMTP_TLS",
                "AUTHKEEP_SMTP_TLS is none with a password: the SMTP credentials and every "
                "email would cross the network in clear; use starttls or ssl",
                "production",
            )
        )
    return problems


def _tls_problems(settings: Settings) -> list[Problem]:
    """TLS to PostgreSQL and Redis (authkeep.tls, docs/deployment.md)."""
    problems: list[Problem] = []
    ca_files = [
        ("database_ssl_ca_file", settings.database_ssl_ca_file),
        ("migration_database_ssl_ca_file", settings.migration_database_ssl_ca_file),
        ("audit_purge_database_ssl_ca_file", settings.audit_purge_database_ssl_ca_file),
        ("redis_ssl_ca_file", settings.redis_ssl_ca_file),
    ]
    for field, path in ca_files:
        problem = tls.ca_file_problem(path) if path is not None else None
        if problem is not None:
            name = f"AUTHKEEP_{field.upper()}"
            problems.append(
                Problem(
                    name,
                    f"{name}: {problem}; it must be a readable PEM bundle of the CA "
                    "certificates that issued the server's certificate",
                    "refuse",
                )
            )
    connections = [
        (settings.database_url, settings.database_tls, "database"),
        (settings.migrations_url, settings.migration_database_tls, "migration_database"),
        (
            settings.audit_purge_database_url or settings.database_url,
            settings.audit_purge_database_tls,
            "audit_purge_database",
        ),
    ]
    for url, chosen, prefix in connections:
        problems += _database_tls_problems(settings, url, chosen, prefix)
    problems += _redis_tls_problems(settings)
    # One connection's problem is often another's (they inherit): say it once.
    return list(dict.fromkeys(problems))


def _database_tls_problems(
    settings: Settings, url: str, chosen: DatabaseTLS, prefix: str
) -> list[Problem]:
    own = [f"{prefix}_ssl_mode", f"{prefix}_ssl_ca_file"]
    set_here = [f"AUTHKEEP_{f.upper()}" for f in own if getattr(settings, f) is not None]
    if url.startswith("sqlite"):
        if not set_here:
            return []
        return [
            Problem(
                set_here[0],
                f"{' and '.join(set_here)} set, but {chosen.url_setting} is SQLite (a local "
                "file, no connection to encrypt): ignored",
                "warning",
            )
        ]
    problems: list[Problem] = []
    if tls.url_has_sslmode(url):
        problems.append(
            Problem(
                chosen.url_setting,
                f"{chosen.url_setting} carries sslmode=, which the asyncpg driver does not "
                f"know (every connection would fail); set {chosen.mode_setting} instead",
                "refuse",
            )
        )
    if chosen.mode is not None and tls.url_ssl(url) is not None:
        problems.append(
            Problem(
                chosen.mode_setting,
                f"{chosen.mode_setting} overrides the ssl= parameter of {chosen.url_setting}; "
                "keep one of them",
                "warning",
            )
        )
    # A CA inherited from the app's setting by a connection whose own mode says otherwise
    # is simply not used there (that mode is this connection's explicit choice).
    inherited = chosen.ca_setting != f"AUTHKEEP_{prefix.upper()}_SSL_CA_FILE" and (
        chosen.mode_setting == f"AUTHKEEP_{prefix.upper()}_SSL_MODE"
    )
    if chosen.ca_file is not None and chosen.mode != "verify-full" and not inherited:
        problems.append(
            Problem(
                chosen.ca_setting,
                f"{chosen.ca_setting} is set but {chosen.mode_setting} is "
                f"{chosen.mode or 'not set'}: the CA is used with verify-full only, so the "
                f"server's certificate would go unchecked; set {chosen.mode_setting}="
                "verify-full",
                "refuse",
            )
        )
    mode = chosen.mode or tls.url_ssl(url)
    remote = [host for host in tls.database_hosts(url) if not tls.is_local(host)]
    if settings.is_production and remote and mode != "verify-full":
        how = {
            "disable": "in clear text",
            "require": "encrypted but unverified (anyone on the path can pose as the server)",
        }.get(mode or "", "without verified TLS (clear text if the server offers no TLS)")
        problems.append(
            Problem(
                chosen.mode_setting,
                f"{chosen.url_setting} reaches {remote[0]} {how}: a man in the middle reads "
                "or rewrites queries, password hashes and rows; set "
                f"{chosen.mode_setting}=verify-full and {chosen.ca_setting} to the server's CA",
                "warning",
            )
        )
    return problems


def _redis_tls_problems(settings: Settings) -> list[Problem]:
    url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
    if settings.redis_ssl_ca_file is not None and (url is None or not tls.is_rediss(url)):
        return [
            Problem(
                "AUTHKEEP_REDIS_SSL_CA_FILE",
                "AUTHKEEP_REDIS_SSL_CA_FILE is set but AUTHKEEP_REDIS_URL is not a rediss:// "
                "URL: Redis would be reached in clear text and the CA never used; write the "
                "URL as rediss://",
                "refuse",
            )
        ]
    if url is None or not settings.is_production or tls.is_local(tls.redis_host(url)):
        return []
    if tls.redis_verifies(url):
        return []
    how = (
        "over TLS with verification turned off in its query"
        if tls.is_rediss(url)
        else "in clear text (redis://)"
    )
    return [
        Problem(
            "AUTHKEEP_REDIS_URL",
            f"AUTHKEEP_REDIS_URL reaches {tls.redis_host(url)} {how}: anyone on the path can "
            "read or forge revocations and rate-limit counters; use rediss:// (certificate "
            "and host name checked) with AUTHKEEP_REDIS_SSL_CA_FILE for a private CA",
            "warning",
        )
    ]


def _previous_secret_problems(settings: Settings) -> list[Problem]:
    """A previous secret still verifies tokens: a weak one lets anybody forge them."""
    problems: list[Problem] = []
    for position, secret in enumerate(settings.previous_secret_keys, start=1):
        weakness = secret_weakness(secret.get_secret_value())
        if weakness:
            reason = weakness.replace("AUTHKEEP_SECRET_KEY", "it")
            problems.append(
                Problem(
                    "AUTHKEEP_PREVIOUS_SECRET_KEYS",
                    f"AUTHKEEP_PREVIOUS_SECRET_KEYS entry {position}: {reason}; a previous "
                    "secret still verifies tokens, so remove it",
                    "refuse",
                )
            )
    return problems


MIN_PRODUCTION_POW = 10_000
"""Below this ALTCHA cost a password sprayer's CPU barely notices the challenge."""


def _data_key_problems(settings: Settings) -> list[Problem]:
    if not settings.data_keys:
        return [
            Problem(
                "AUTHKEEP_DATA_KEYS",
                "AUTHKEEP_DATA_KEYS is not set (development seals stored secrets with a key "
                f"generated once into {settings.data_keys_file}); production needs its own: "
                "run `authkeep keys data-key` and keep the output with your secret key",
                "production",
            )
        ]
    problems = []
    seen: set[str] = set()
    for position, entry in enumerate(settings.data_keys, start=1):
        text = entry.get_secret_value().strip()
        if not DATA_KEY_ENTRY.match(text):
            problems.append(
                Problem(
                    "AUTHKEEP_DATA_KEYS",
                    f"AUTHKEEP_DATA_KEYS entry {position} is not '<key id>:<base64url of 32 "
                    "random bytes>' (id: 1-32 letters, digits, '-' or '_'); "
                    "`authkeep keys data-key` prints a valid one",
                    "refuse",
                )
            )
            continue
        kid = text.partition(":")[0]
        if kid in seen:
            problems.append(
                Problem(
                    "AUTHKEEP_DATA_KEYS",
                    f"AUTHKEEP_DATA_KEYS names key id {kid!r} twice; every key needs its own id",
                    "refuse",
                )
            )
        seen.add(kid)
    return problems


def _challenge_problems(settings: Settings) -> list[Problem]:
    """The challenge after failed logins (docs/challenge.md)."""
    problems: list[Problem] = []
    provider = settings.challenge_provider
    if provider != "altcha" and settings.challenge_secret is None:
        problems.append(
            Problem(
                "AUTHKEEP_CHALLENGE_SECRET",
                f"AUTHKEEP_CHALLENGE_PROVIDER={provider} needs AUTHKEEP_CHALLENGE_SECRET "
                "(the secret key from the service's console) to verify tokens",
                "refuse",
            )
        )
    url = settings.challenge_verify_url
    if provider != "altcha" and url is not None and not url.startswith("https://"):
        problems.append(
            Problem(
                "AUTHKEEP_CHALLENGE_VERIFY_URL",
                "AUTHKEEP_CHALLENGE_VERIFY_URL is not https: the challenge secret would travel "
                "in clear text and anyone on the path could answer 'success'",
                "production",
            )
        )
    if provider == "altcha" and settings.challenge_altcha_max_number < MIN_PRODUCTION_POW:
        problems.append(
            Problem(
                "AUTHKEEP_CHALLENGE_ALTCHA_MAX_NUMBER",
                f"AUTHKEEP_CHALLENGE_ALTCHA_MAX_NUMBER is below {MIN_PRODUCTION_POW}: the "
                "proof of work costs a password sprayer almost nothing (default 1000000)",
                "production",
            )
        )
    return problems


_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def webauthn_rp_id(value: str) -> str:
    """``value`` as a WebAuthn relying-party id (a lower-case domain name), or ValueError."""
    text = value.strip().lower()
    try:
        ipaddress.ip_address(text)
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip or not _DOMAIN.fullmatch(text):
        raise ValueError(
            "AUTHKEEP_WEBAUTHN_RP_ID must be a domain name such as example.com (no scheme, "
            "port, path or IP address)"
        )
    return text


def webauthn_origin(value: str) -> str:
    """``value`` as a browser writes an origin in a ceremony's clientDataJSON (lower case,
    no default port, no path), or ValueError: a stored origin must compare equal to it."""
    parts = urlsplit(value.strip().rstrip("/"))
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or port == -1
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise ValueError(
            "AUTHKEEP_WEBAUTHN_ORIGINS must list web origins: scheme, host and optional "
            'port, e.g. ["https://app.example.com"]'
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _webauthn_problems(settings: Settings) -> list[Problem]:
    """Passkey origins a browser would refuse, or that an attacker on the network could
    answer from (docs/passkeys.md)."""
    rp_id = settings.webauthn_rp_id or "localhost"
    if not settings.webauthn_origins:
        return [
            Problem(
                "AUTHKEEP_WEBAUTHN_ORIGINS",
                "AUTHKEEP_WEBAUTHN_ORIGINS is empty, so no passkey ceremony can succeed; list "
                'the origins of your sign-in pages, e.g. ["https://app.example.com"]',
                "refuse",
            )
        ]
    problems: list[Problem] = []
    for origin in settings.webauthn_origins:
        host = urlsplit(origin).hostname or ""
        if origin.startswith("http://"):
            problems.append(
                Problem(
                    "AUTHKEEP_WEBAUTHN_ORIGINS",
                    f"AUTHKEEP_WEBAUTHN_ORIGINS lists {origin}: over http:// anyone on the "
                    "network can rewrite the page that runs the passkey ceremony (and sign "
                    "in with the victim's passkey); use https:// origins",
                    "production",
                )
            )
        if host != rp_id and not host.endswith("." + rp_id):
            problems.append(
                Problem(
                    "AUTHKEEP_WEBAUTHN_ORIGINS",
                    f"AUTHKEEP_WEBAUTHN_ORIGINS lists {origin}, whose host is neither "
                    f"AUTHKEEP_WEBAUTHN_RP_ID ({rp_id}) nor a subdomain of it: browsers refuse "
                    "passkey ceremonies there; set the rp id to the site's domain",
                    "refuse",
                )
            )
    return problems


def _idle_timeout_problems(settings: Settings) -> list[Problem]:
    idle = settings.session_idle_timeout
    if idle > settings.session_lifetime:
        return [
            Problem(
                "AUTHKEEP_SESSION_IDLE_TIMEOUT",
                f"AUTHKEEP_SESSION_IDLE_TIMEOUT ({idle}) is longer than the absolute session "
                f"lifetime, AUTHKEEP_REFRESH_TOKEN_EXPIRE_DAYS ({settings.session_lifetime}); "
                "lower it or raise the lifetime",
                "refuse",
            )
        ]
    access = timedelta(minutes=settings.access_token_expire_minutes)
    if idle < access:
        # Clients refresh when their access token runs out: a shorter idle timeout would end
        # every session at its first refresh.
        return [
            Problem(
                "AUTHKEEP_SESSION_IDLE_TIMEOUT",
                f"AUTHKEEP_SESSION_IDLE_TIMEOUT ({idle}) is shorter than the access-token "
                f"lifetime, AUTHKEEP_ACCESS_TOKEN_EXPIRE_MINUTES ({access}), so every session "
                "would end at its first refresh; raise it",
                "refuse",
            )
        ]
    return []


def load_or_create_dev_data_key(path: Path) -> tuple[str, bool]:
    """Return the development data key entry kept in ``path`` (0600), creating it once.

    Returns the ``"<id>:<key>"`` entry and whether it was just created."""

    def make() -> str:
        material = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        return f"dev-{secrets.token_hex(4)}:{material}"

    return load_or_create_once(path, lambda found: bool(DATA_KEY_ENTRY.match(found)), make)


def load_or_create_once(
    path: Path, valid: Callable[[str], bool], make: Callable[[], str]
) -> tuple[str, bool]:
    """The valid value kept in ``path``, or a new one written there (0600); and whether it
    was just created. Several processes may start at once (``authkeep serve --workers 4``
    on a fresh checkout): the value is written in full to a file of this process's own,
    then linked to ``path``, which fails if another process got there first — then its
    value is the one, and every worker seals and signs with the same key. An existing file
    with an invalid value is replaced, as before."""
    existing = _read_stripped(path)
    if valid(existing):
        return existing, False
    value = make()
    staged = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _write_private(staged, value)
    try:
        if existing:
            os.replace(staged, path)
            return value, True
        try:
            os.link(staged, path)
        except FileExistsError:
            won = _read_stripped(path)
            if valid(won):
                return won, False
            os.replace(staged, path)
        return value, True
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


def _write_private(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def _read_stripped(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def load_or_create_dev_secret(path: Path) -> tuple[str, bool]:
    """Return the development signing secret kept in ``path``, creating it once.

    The file is created with 0600 permissions (owner read/write only) so that another local
    user cannot mint tokens. Returns the secret and whether it was just created.
    """
    return load_or_create_once(
        path,
        lambda found: bool(found) and secret_weakness(found) is None,
        lambda: secrets.token_urlsafe(48),
    )
