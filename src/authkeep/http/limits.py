"""Rate limits at the HTTP edge: per-route dependencies and the ``RateLimit-*`` headers.

Routes declare their limit; the rule itself lives in :mod:`authkeep.services.rate_limits`::

    @router.post("/register", dependencies=[Depends(limit_per_ip("register"))])

Each decision a request meets is noted in its :class:`LimitReport` (kept in
``scope["state"]`` by :class:`~authkeep.http.middleware.rate_limit.RateLimitMiddleware`), and
the middleware writes the tightest one as headers (IETF draft ``RateLimit`` fields, delta
seconds) on the response, refused or not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.types import Scope

from authkeep.http.client_ip import UNKNOWN_CLIENT
from authkeep.http.deps import CurrentPrincipal, get_authkeep
from authkeep.services.rate_limits import Decision, LimitReport, RouteRule

REPORT_STATE_KEY = "rate_limit_report"


def report_of(scope: Scope) -> LimitReport:
    """The request's report (a throw-away one when the middleware is not installed)."""
    state = scope.setdefault("state", {})
    report = state.get(REPORT_STATE_KEY)
    if report is None:
        report = state[REPORT_STATE_KEY] = LimitReport()
    return report  # type: ignore[no-any-return]


def limit_report(request: Request) -> LimitReport:
    """Dependency: the current request's :class:`LimitReport`."""
    return report_of(request.scope)


def rate_limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` for ``decision``."""
    return [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(decision.reset_after).encode()),
    ]


def limit_per_ip(rule: RouteRule) -> Callable[[Request], Awaitable[None]]:
    """A route dependency counting each request against ``rule`` per client IP."""

    async def dependency(request: Request) -> None:
        limits = get_authkeep(request).services.rate_limits
        if not limits.enabled:
            return
        state = request.scope.get("state", {})
        if "client_ip" in state:
            # None is an unknown client (e.g. an unparsable X-Forwarded-For from a trusted
            # proxy): it shares one bucket, and never spends the proxy's own.
            ip = state["client_ip"]
        else:  # the request-context middleware is not installed
            ip = request.client.host if request.client else None
        await limits.enforce(rule, f"ip:{ip or UNKNOWN_CLIENT}", report_of(request.scope))

    return dependency


def limit_per_user(rule: RouteRule) -> Callable[[Request, CurrentPrincipal], Awaitable[None]]:
    """A route dependency counting each request against ``rule`` per authenticated user
    (the route answers 401 first when the caller is not authenticated)."""

    async def dependency(request: Request, principal: CurrentPrincipal) -> None:
        limits = get_authkeep(request).services.rate_limits
        if limits.enabled:
            await limits.enforce(rule, f"user:{principal.user.id}", report_of(request.scope))

    return dependency
