"""The global rate limit (``AUTHKEEP_RATE_LIMIT_PER_MINUTE``) and the ``RateLimit-*`` headers.

Whose budget a request spends:

* the user's, when it carries a bearer access token whose signature and claims verify
  (in memory, no database) — many users behind one NAT are not throttled together;
* otherwise the client IP's (proxy-aware, from ``scope["state"]["client_ip"]``, which
  :class:`RequestContextMiddleware` sets). A forged, expired or malformed token falls back to
  the IP: a client cannot pick a fresh bucket by inventing ``sub`` claims.
* a client whose address is unknown (an unparsable ``X-Forwarded-For`` from a trusted proxy)
  spends one shared ``ip:unknown`` bucket, never the proxy's own address's.

Exempt: ``OPTIONS`` (CORS preflights, answered without touching the app) and
:data:`EXEMPT_PATHS` (probes and scrapes must never be throttled into a false alarm).

When the limit storage does not answer, this limit fails open (the request proceeds, the
limiter logs a warning once and counts each such decision in a metric).

The tightest decision a request met — this one or a route's (login, register, ...) — is
written as ``RateLimit-Limit/-Remaining/-Reset`` on the response, allowed or refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authkeep.errors import InvalidToken
from authkeep.http.client_ip import UNKNOWN_CLIENT
from authkeep.http.limits import REPORT_STATE_KEY, rate_limit_headers
from authkeep.security.tokens import TokenCodec
from authkeep.services.audit import AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.rate_limits import Decision, LimitReport, RateLimits

EXEMPT_PATHS = frozenset({"/health", "/health/ready", "/metrics"})
REFUSED_DETAIL = "Too many requests"


class RunningServices(Protocol):
    """What this middleware needs of the running services."""

    @property
    def rate_limits(self) -> RateLimits: ...

    @property
    def codec(self) -> TokenCodec: ...

    @property
    def audit(self) -> AuditLog: ...


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token else None
    return None


class RateLimitMiddleware:
    """Pure ASGI: count the request, answer 429 or pass it on with the headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        services: Callable[[], RunningServices],
        exempt_paths: frozenset[str] = EXEMPT_PATHS,
    ) -> None:
        self.app = app
        self.services = services
        self.exempt_paths = exempt_paths

    def _key(self, scope: Scope, state: dict[str, object], codec: TokenCodec) -> str:
        token = _bearer(scope)
        if token:
            try:
                return "user:" + codec.decode_access(token).user_id
            except InvalidToken:
                pass
        return f"ip:{state.get('client_ip') or UNKNOWN_CLIENT}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or scope["path"] in self.exempt_paths
        ):
            await self.app(scope, receive, send)
            return
        services = self.services()
        limits = services.rate_limits
        if not limits.enabled:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        report = LimitReport()
        state[REPORT_STATE_KEY] = report
        key = self._key(scope, state, services.codec)
        decision = await limits.hit_global(key)
        report.note(decision)
        if decision is not None and not decision.allowed:
            await _refuse(send, decision)
            # Evidence of the refusal (throttled per key inside the hook), after the answer.
            await services.audit.rate_limited(
                RequestInfo(
                    ip=_text(state.get("client_ip")), request_id=_text(state.get("request_id"))
                ),
                limit="global",
                key=key,
                retry_after=decision.retry_after,
                route=scope["path"],
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and report.tightest is not None:
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [h for h in rate_limit_headers(report.tightest) if h[0] not in present]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def _refuse(send: Send, decision: Decision) -> None:
    body = json.dumps({"detail": REFUSED_DETAIL}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(decision.retry_after).encode()),
                *rate_limit_headers(decision),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
