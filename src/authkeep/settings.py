"""Configuration, read from ``AUTHKEEP_*`` environment variables (and a ``.env`` file).

Every security-relevant rule about configuration lives here, in :func:`find_problems`, so
that the service (which refuses to start), ``authkeep check-config`` (which prints them) and
the tests all read the same list.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import limits
from limits import RateLimitItem
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

MIN_SECRET_LENGTH = 32
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
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
# NIST SP 800-63B §5.2.2: at most 100 consecutive failed authentication attempts per account.
NIST_MAX_FAILURES = 100

SECRET_HINT = (
    "set AUTHKEEP_SECRET_KEY to a random value of at least 32 characters, for example "
    "the output of: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
)


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

    database_url: str = "sqlite+aiosqlite:///./authkeep.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    redis_url: SecretStr | None = None
    redis_prefix: str = "authkeep:"

    access_token_expire_minutes: int = Field(default=30, ge=1, le=24 * 60)
    refresh_token_expire_days: int = Field(default=14, ge=1, le=365)
    refresh_reuse_interval_seconds: int = Field(default=10, ge=0, le=300)
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
    register_rate_limit: str = "10/hour"
    refresh_rate_limit: str = "30/minute"
    password_change_rate_limit: str = "5 per 15 minutes"

    allowed_origins: list[str] = Field(default_factory=list)
    trusted_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1"])
    trusted_proxies: list[str] = Field(default_factory=list)
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
    database_app_role: str | None = None

    audit_enabled: bool = True
    audit_retention_days: int = Field(default=730, ge=1)
    audit_purge_role: str = "authkeep_audit_purger"
    audit_purge_database_url: str | None = None

    metrics_allowed_ips: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Platform admin routes: client IPs/CIDRs allowed in; empty means no IP restriction.
    admin_allowed_ips: list[str] = Field(default_factory=list)

    @field_validator(
        "login_rate_limit",
        "login_ip_failure_limit",
        "register_rate_limit",
        "refresh_rate_limit",
        "password_change_rate_limit",
    )
    @classmethod
    def _one_limit(cls, value: str, info: ValidationInfo) -> str:
        if len(parse_limits(value, info.field_name)) != 1:
            raise ValueError(f"AUTHKEEP_{str(info.field_name).upper()} must be one limit")
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
    def migrations_url(self) -> str:
        """Where migrations run: the owner role's URL, else the app's own."""
        return self.migration_database_url or self.database_url

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
                "AUTHKEEP_SECRET_KEY is not set; production needs a strong one: " + SECRET_HINT,
                "production",
            )
        )
    else:
        weakness = secret_weakness(settings.secret_key.get_secret_value())
        if weakness:
            problems.append(Problem("AUTHKEEP_SECRET_KEY", f"{weakness}: {SECRET_HINT}", "refuse"))
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
    if "trusted_hosts" not in settings.model_fields_set or not settings.trusted_hosts:
        problems.append(
            Problem(
                "AUTHKEEP_TRUSTED_HOSTS",
                "AUTHKEEP_TRUSTED_HOSTS is not set; production must list the host names it "
                'serves, e.g. ["api.example.com"]',
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
    return problems


def load_or_create_dev_secret(path: Path) -> tuple[str, bool]:
    """Return the development signing secret kept in ``path``, creating it once.

    The file is created with 0600 permissions (owner read/write only) so that another local
    user cannot mint tokens. Returns the secret and whether it was just created.
    """
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing and secret_weakness(existing) is None:
        return existing, False
    value = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)
    return value, True
