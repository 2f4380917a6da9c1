"""Structured JSON logs (structlog) that never hold a secret.

Every line — authkeep's own and those of uvicorn, SQLAlchemy or any stdlib logger — goes through
:func:`redact`: values under sensitive keys are replaced, and anything that looks like a JWT,
an API key, a password hash or a bearer credential is masked wherever it appears in a string.
The request id is bound in a context variable by the request middleware, so every line logged
while serving a request carries it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar, Token
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

REDACTED = "[REDACTED]"
_SENSITIVE_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|authori[sz]ation|cookie|api[_-]?key|credential|"
    r"hashed|private|session[_-]?key|^key$",
    re.IGNORECASE,
)
_SAFE_KEYS = frozenset({"token_type", "event", "level", "logger", "timestamp", "request_id"})
_PATTERNS = (
    # JWTs: header and payload are base64url JSON, so they start with "eyJ".
    (re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), "[REDACTED_JWT]"),
    (re.compile(r"\bak_[A-Za-z0-9_-]{8,}"), "[REDACTED_API_KEY]"),
    (re.compile(r"\$argon2(?:id|i|d)\$[^\s\"',]+"), "[REDACTED_HASH]"),
    (re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}"), "[REDACTED_HASH]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [REDACTED]"),
)


# What every pattern above starts with: one search decides whether the five substitutions
# are needed at all (almost never, and every log line's every string goes through here).
_MAYBE = re.compile(r"eyJ|ak_|\$(?:argon2|2)|(?i:bearer|basic)")


def scrub(text: str) -> str:
    """Mask credentials that appear inside free text."""
    if not _MAYBE.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _clean(key: str, value: Any) -> Any:
    if key not in _SAFE_KEYS and _SENSITIVE_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean("", item) for item in value]
    return value


def redact(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: remove secrets from every field of a log event."""
    for key in list(event_dict):
        if key.startswith("_"):
            continue  # structlog's own bookkeeping (e.g. the stdlib record)
        event_dict[key] = _clean(key, event_dict[key])
    return event_dict


def _drop_color_message(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours under this key.
    event_dict.pop("color_message", None)
    return event_dict


_request_id: ContextVar[str | None] = ContextVar("authkeep_request_id", default=None)


def _add_request_id(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    request_id = _request_id.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
    ]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (test runners swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def formatter(fmt: str = "json") -> logging.Formatter:
    """The redacting formatter every authkeep log handler uses."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library through one redacting JSON renderer.

    Logging is process-wide by nature; calling this again replaces the configuration.
    """
    structlog.configure(
        processors=[
            # First: a line below the level costs one level check, not the whole chain
            # (the access log calls ``info`` on every request).
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Without it every call through a module-level logger rebuilds the bound logger.
        # The configuration above is the same on every call of this function, so a cached
        # logger never goes stale.
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter(fmt))
    handler.set_name("authkeep")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "authkeep":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        if name == "uvicorn.access" and not named.propagate and not named.handlers:
            # uvicorn's access_log=False leaves it so (``authkeep serve`` does: it logs each
            # request itself, without the query string). Propagating again would switch
            # uvicorn's line back on, query string included.
            continue
        named.handlers.clear()
        named.propagate = True


def bind_request(request_id: str) -> Token[str | None]:
    """Bind the request id to every log line of the current request (and of the tasks it
    starts); hand the result to :func:`unbind_request` when the request ends."""
    return _request_id.set(request_id)


def unbind_request(token: Token[str | None]) -> None:
    """Forget the request id bound by :func:`bind_request`."""
    _request_id.reset(token)


def redact_mapping(values: MutableMapping[str, Any]) -> dict[str, Any]:
    """A redacted copy of ``values`` (for audit details and error reports)."""
    return {key: _clean(key, value) for key, value in values.items()}
