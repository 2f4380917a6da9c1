"""The route class of the OAuth2 endpoints: every answer in OAuth2's shape, never cached.

A route of a router built with ``APIRouter(route_class=OAuth2Route)`` answers its errors as
RFC 6749 §5.2 says — ``{"error", "error_description"}`` — instead of authkeep's
``{"detail"}``: domain errors through :func:`authkeep.http.errors.oauth2_response_for`,
protocol errors raised as :class:`OAuth2Problem`, and what FastAPI itself would refuse (an
unparsable body: 400, a parameter failing its type: 422) as ``invalid_request`` (400). Every
answer, success or error, carries ``Cache-Control: no-store`` and ``Pragma: no-cache``
(§5.1: a token must not be kept by any cache, HTTP/1.0 ones included).

Only what reaches the route is covered: the global rate limit (429) and the body limit (413)
answer before any route is chosen, in the API's own shape.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from authkeep.db.engine import is_unavailable
from authkeep.errors import AuthkeepError, DependencyUnavailable, PermissionDenied, RateLimited
from authkeep.http.errors import (
    DATABASE_UNAVAILABLE,
    audit_refusal,
    oauth2_error_response,
    oauth2_response_for,
    safe_errors,
)
from authkeep.http.routes import route_template

log = structlog.get_logger("authkeep.http")

NO_CACHE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuth2Problem(Exception):
    """A request that breaks the OAuth2 protocol (a missing parameter, an unsupported grant,
    a missing client credential): answered as ``{"error", "error_description"}``."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers


def describe_invalid(exc: RequestValidationError) -> str:
    """One line naming each parameter that failed and why, never its value."""
    parts = []
    for error in safe_errors(exc.errors()):
        names = [str(item) for item in error["loc"] if item not in ("body", "query", "header")]
        parts.append(f"{'.'.join(names) or 'request'}: {error['msg']}")
    return "Invalid parameter: " + "; ".join(parts) if parts else "Invalid request"


async def _answer(request: Request, exc: Exception) -> Response | None:
    """The OAuth2 answer for ``exc`` raised by an OAuth2 route, or None to let it rise."""
    if isinstance(exc, OAuth2Problem):
        return oauth2_error_response(exc.error, exc.description, exc.status, exc.headers)
    if isinstance(exc, RequestValidationError):
        return oauth2_error_response("invalid_request", describe_invalid(exc))
    if isinstance(exc, StarletteHTTPException) and exc.status_code in (400, 422):
        return oauth2_error_response("invalid_request", str(exc.detail))
    if isinstance(exc, AuthkeepError):
        if isinstance(exc, PermissionDenied | RateLimited):
            await audit_refusal(request, exc)
        return oauth2_response_for(exc)
    if isinstance(exc, DBAPIError | OSError) and is_unavailable(exc):
        log.warning(
            "database_unavailable",
            method=request.method,
            route=route_template(request.scope),
            error=type(exc).__name__,
        )
        return oauth2_response_for(DependencyUnavailable(DATABASE_UNAVAILABLE))
    return None


class OAuth2Route(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` that answers in OAuth2's shape (module doc)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def oauth2_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:  # each kind is mapped in _answer; the rest re-raised
                answer = await _answer(request, exc)
                if answer is None:
                    raise
                response = answer
            response.headers.update(NO_CACHE)
            return response

        return oauth2_handler
