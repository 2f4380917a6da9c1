"""TLS to PostgreSQL and Redis: what the settings mean, the client side of the handshake, and
what a failed handshake is called.

Imports nothing of authkeep's own: the settings (their problems), the engine and the wiring
all use it.

PostgreSQL, ``AUTHKEEP_DATABASE_SSL_MODE`` (and ``AUTHKEEP_MIGRATION_DATABASE_SSL_MODE``,
``AUTHKEEP_AUDIT_PURGE_DATABASE_SSL_MODE``, which default to it):

* not set: the URL's own choice — its ``?ssl=`` parameter, else ``PGSSLMODE``, else asyncpg's
  ``prefer`` (TLS when the server offers it, unverified; clear text otherwise);
* ``disable``: clear text;
* ``require``: TLS, the certificate unchecked. It stops a passive eavesdropper, not a man in
  the middle, who presents any certificate;
* ``verify-full``: TLS; the server's certificate must chain to ``…_SSL_CA_FILE`` (only that
  CA; without the setting, the system's trust store) and name the URL's host. Stops a man in
  the middle reading or rewriting queries, password hashes and rows.

Redis: a ``rediss://`` URL is TLS, always verified (certificate and host name), against
``AUTHKEEP_REDIS_SSL_CA_FILE`` added to the system's trust store (redis-py loads both).

A handshake that fails for a reason waiting will not cure — an unknown CA, a certificate for
another host, a server without TLS — becomes :class:`TLSError`, one line that names the
setting to fix. It is a ``ConnectionError``, so a request that meets it mid-service gets the
usual 503 (the database is unavailable to it), and the start of the service stops with it.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SSLMode = Literal["disable", "require", "verify-full"]
SSL_MODES: tuple[str, ...] = get_args(SSLMode)

# OpenSSL's verification results that mean "the certificate names another host".
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_REDIS_NO_VERIFY = {"none", "optional", "cert_none", "cert_optional"}
_FALSE = {"false", "no", "0", "off"}


class TLSError(ConnectionError):
    """A TLS connection to PostgreSQL or Redis failed for a reason a retry does not cure
    (wrong CA, wrong host name, a server without TLS, an unreadable CA file). The message
    names the setting to fix; it never holds a password."""


def ca_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a PEM CA bundle, or None when it loads."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        return f"{path} does not exist"
    except ssl.SSLError:
        return f"{path} holds no PEM certificate"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    return None


def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context that checks the certificate chain (to ``ca_file`` only, else to the
    system's trust store) and the host name, TLS 1.2 or newer."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def encrypting_context() -> ssl.SSLContext:
    """A client context that encrypts but checks nothing (``require``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True, slots=True)
class DatabaseTLS:
    """TLS of one database connection (the app's, the migrations', the audit purge's) and the
    settings that chose it, which messages name."""

    mode: SSLMode | None = None
    ca_file: Path | None = None
    mode_setting: str = "AUTHKEEP_DATABASE_SSL_MODE"
    ca_setting: str = "AUTHKEEP_DATABASE_SSL_CA_FILE"
    url_setting: str = "AUTHKEEP_DATABASE_URL"

    def connect_arg(self) -> ssl.SSLContext | str | None:
        """asyncpg's ``ssl`` argument; None leaves the URL's choice. Builds the context once
        (the CA file is read here): TLSError when the CA file cannot be loaded."""
        if self.mode is None:
            return None
        if self.mode == "disable":
            return "disable"
        if self.mode == "require":
            return encrypting_context()
        if self.ca_file is not None:
            problem = ca_file_problem(self.ca_file)
            if problem is not None:
                raise TLSError(f"{self.ca_setting}: {problem}")
        return verifying_context(self.ca_file)

    def explain(self, exc: BaseException, url: str) -> str | None:
        """One line about ``exc``, naming the setting to fix, when it is a TLS failure of a
        connection to ``url``; None for anything else (an outage, a bug)."""
        host = _host_port(url)
        chosen = (
            f"{self.mode_setting}={self.mode}"
            if self.mode is not None
            else f"the ssl parameter of {self.url_setting}"
        )
        where = f"cannot connect to PostgreSQL at {host} over TLS ({chosen})"
        for cause in _causes(exc):
            if isinstance(cause, ssl.SSLError):
                return f"{where}: " + _handshake_reason(
                    cause, self.ca_setting, self.ca_file, self.url_setting
                )
            text = str(cause)
            if isinstance(cause, ConnectionError) and "rejected SSL upgrade" in text:
                return (
                    f"{where}: the server does not offer TLS, which {chosen} requires; turn "
                    "ssl on in the server (or, on a network you trust, set "
                    f"{self.mode_setting}=disable)"
                )
            if "no encryption" in text and "pg_hba.conf" in text:
                # The server takes only TLS connections (hostssl) and this one was clear.
                return (
                    f"cannot connect to PostgreSQL at {host}: the server accepts TLS "
                    f"connections only; set {self.mode_setting}=verify-full and "
                    f"{self.ca_setting} to its CA"
                )
        return None


def _handshake_reason(
    error: ssl.SSLError, ca_setting: str, ca_file: Path | None, url_setting: str
) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or "certificate verify failed"
        if error.verify_code in _NAME_MISMATCH:
            return (
                f"the server's certificate does not name the host in {url_setting} "
                f"({detail}); use a host name the certificate names"
            )
        trusted = f"the CA in {ca_setting} ({ca_file})" if ca_file else "the system's trust store"
        return (
            f"the server's certificate is not trusted by {trusted} ({detail}); set "
            f"{ca_setting} to the PEM of the CA that issued it"
        )
    # Not every SSLError carries OpenSSL's reason (one raised by hand, an EOF).
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    return f"the TLS handshake failed ({reason}); is the server speaking TLS on that port?"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it was raised from (SQLAlchemy's ``orig`` included)."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in found):
        found.append(current)
        nxt = getattr(current, "orig", None)
        current = (
            nxt if isinstance(nxt, BaseException) else current.__cause__ or current.__context__
        )
    return found


def _host_port(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(unparsable URL)"
    host = parsed.host or "(default host)"
    return f"{host}:{parsed.port}" if parsed.port else host


def is_local(host: str | None) -> bool:
    """Whether ``host`` never leaves the machine: a loopback name or address, a Unix socket
    path, or none at all (drivers then use the local socket)."""
    if not host or host.startswith("/"):
        return True
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def database_hosts(url: str) -> list[str | None]:
    """The hosts a PostgreSQL URL reaches (several with ``?host=a:5432&host=b:5432``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return [None]
    if parsed.host:
        return [parsed.host]
    query = parsed.query.get("host")
    listed = [query] if isinstance(query, str) else list(query or ())
    return [item.rsplit(":", 1)[0] if not item.startswith("/") else item for item in listed] or [
        None
    ]


def url_ssl(url: str) -> str | None:
    """The ``ssl`` query parameter of a database URL (asyncpg's mode), if any."""
    try:
        value = make_url(url).query.get("ssl")
    except ArgumentError:
        return None
    return value if isinstance(value, str) else None


def url_has_sslmode(url: str) -> bool:
    """Whether a database URL carries libpq's ``sslmode``, which asyncpg does not take."""
    try:
        return "sslmode" in make_url(url).query
    except ArgumentError:
        return False


def is_rediss(url: str) -> bool:
    """Whether a Redis URL asks for TLS."""
    return url.strip().lower().startswith("rediss://")


def redis_host(url: str) -> str | None:
    """The host of a Redis URL (None for a Unix socket)."""
    parts = urlsplit(url.strip())
    return None if parts.scheme == "unix" else parts.hostname


def redis_verifies(url: str) -> bool:
    """Whether a Redis URL is TLS with the certificate and host name checked (its query,
    which redis-py lets override every option, does not turn either off)."""
    if not is_rediss(url):
        return False
    query = {key: values[-1].lower() for key, values in parse_qs(urlsplit(url).query).items()}
    return (
        query.get("ssl_cert_reqs", "required") not in _REDIS_NO_VERIFY
        and query.get("ssl_check_hostname", "true") not in _FALSE
    )


def redis_tls_options(url: str, ca_file: Path | None) -> dict[str, Any]:
    """redis-py's keyword arguments for ``url``: for ``rediss://``, the certificate and host
    name checked (explicitly, whatever redis-py's defaults become), against ``ca_file`` too."""
    if not is_rediss(url):
        return {}
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_min_version": ssl.TLSVersion.TLSv1_2,
    }
    if ca_file is not None:
        options["ssl_ca_certs"] = str(ca_file)
    return options


def explain_redis(exc: BaseException, url: str, ca_file: Path | None) -> str | None:
    """One line about a failed Redis connection, naming the setting to fix, when TLS is why;
    None for anything else (Redis down, a timeout)."""
    parts = urlsplit(url.strip())
    where = f"cannot connect to Redis at {parts.hostname}:{parts.port or 6379} over TLS"
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError):
            reason = _handshake_reason(
                cause, "AUTHKEEP_REDIS_SSL_CA_FILE", ca_file, "AUTHKEEP_REDIS_URL"
            )
            return f"{where}: {reason}"
    return None
