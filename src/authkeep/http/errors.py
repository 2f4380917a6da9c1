"""The one place where domain errors become HTTP statuses and bodies.

No handler ever puts submitted input in a response: validation errors keep their location,
message and type but lose ``input`` and ``ctx`` (pydantic would echo the password back).

Refusals are evidence: a :class:`~authkeep.errors.PermissionDenied` (403) and a
:class:`~authkeep.errors.RateLimited` (429) that reach this mapping are written to the audit
log (the latter throttled), with the request's id, client IP and caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from authkeep.db.engine import is_unavailable
from authkeep.errors import (
    AuthkeepError,
    ChallengeRequired,
    Conflict,
    ConsentRequired,
    DependencyUnavailable,
    EmailNotVerified,
    InvalidCredentials,
    InvalidToken,
    NotFound,
    Overloaded,
    PermissionDenied,
    PolicyViolation,
    RateLimited,
    SecondFactorRequired,
    SoleAdmin,
    StepUpRequired,
)
from authkeep.http.routes import route_template
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Actor
from authkeep.services.context import RequestInfo

if TYPE_CHECKING:
    from authkeep.wiring import Services

log = structlog.get_logger("authkeep.http")

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
DATABASE_UNAVAILABLE = "Database unavailable, retry shortly"
_MAX_LOC_ITEM = 64

STATUS: tuple[tuple[type[AuthkeepError], int], ...] = (
    (InvalidCredentials, 401),
    (ChallengeRequired, 401),
    (StepUpRequired, 401),
    (InvalidToken, 401),
    (PermissionDenied, 403),
    (ConsentRequired, 403),
    (SecondFactorRequired, 403),
    (EmailNotVerified, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PolicyViolation, 422),
    (RateLimited, 429),
    (Overloaded, 503),
    (DependencyUnavailable, 503),
)


def status_of(error: AuthkeepError) -> int:
    """The HTTP status for a domain error (400 for any other)."""
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 400


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors without the submitted values."""
    cleaned = []
    for error in errors:
        loc = [
            item if isinstance(item, int) else str(item)[:_MAX_LOC_ITEM]
            for item in error.get("loc", ())
        ]
        cleaned.append({"loc": loc, "msg": str(error.get("msg", "")), "type": error.get("type")})
    return cleaned


def error_response(error: AuthkeepError) -> JSONResponse:
    """The response for a domain error."""
    status = status_of(error)
    headers: dict[str, str] = {}
    if isinstance(error, StepUpRequired):
        headers["WWW-Authenticate"] = step_up_challenge(error)
    elif status == 401:
        headers.update(BEARER_CHALLENGE)
    if isinstance(error, RateLimited | Overloaded | DependencyUnavailable):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, FieldError):
        body: Any = [
            {"loc": [error.location, error.field], "msg": error.detail, "type": "value_error"}
        ]
    else:
        body = error.detail
    if isinstance(error, ChallengeRequired):
        return JSONResponse(
            challenge_body({"detail": body}, error), status_code=status, headers=headers
        )
    if isinstance(error, SoleAdmin):
        # Which organizations stand in the way: the caller must act in each of them.
        named = [{"id": str(org_id), "name": name} for org_id, name in error.organizations]
        return JSONResponse(
            {"detail": body, "organizations": named}, status_code=status, headers=headers
        )
    return JSONResponse({"detail": body}, status_code=status, headers=headers)


def step_up_challenge(error: StepUpRequired) -> str:
    """The ``WWW-Authenticate`` value of RFC 9470 §3: ``insufficient_user_authentication``
    with the ``max_age`` and/or ``acr_values`` a new sign-in must meet."""
    parts = [
        'Bearer error="insufficient_user_authentication"',
        f'error_description="{error.detail}"',
    ]
    if error.acr_values is not None:
        parts.append(f'acr_values="{error.acr_values}"')
    if error.max_age is not None:
        parts.append(f'max_age="{error.max_age}"')
    return ", ".join(parts)


def challenge_body(body: dict[str, Any], error: ChallengeRequired) -> dict[str, Any]:
    """``body`` with the challenge a refused login must solve (``docs/challenge.md``); the
    OAuth2 token endpoint adds the same two members to its RFC 6749 error."""
    return {**body, "challenge_required": True, "challenge": error.challenge}


# The OAuth2 endpoints (token, revoke, introspect) answer in RFC 6749 §5.2's shape, not
# {"detail"}: a generic OAuth2 client reads `error`, and would take any other JSON body
# for a token. A wrong password is `invalid_grant` (400), not 401, which RFC 6749 keeps for
# client authentication. 429/503 keep their status and Retry-After; their code is
# `temporarily_unavailable` (§4.1.2.1), the one registered code that means "retry later"
# (`slow_down` is RFC 8628's "poll less often", another thing). docs/oauth2.md.
OAUTH2_ERRORS: tuple[tuple[type[AuthkeepError], int, str], ...] = (
    (InvalidCredentials, 400, "invalid_grant"),
    (InvalidToken, 400, "invalid_grant"),
    (EmailNotVerified, 400, "invalid_grant"),
    (ChallengeRequired, 400, "challenge_required"),
    (RateLimited, 429, "temporarily_unavailable"),
    (Overloaded, 503, "temporarily_unavailable"),
    (DependencyUnavailable, 503, "temporarily_unavailable"),
)


def oauth2_error_response(
    error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An OAuth2 error answer: ``{"error", "error_description"}`` (RFC 6749 §5.2)."""
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def oauth2_response_for(error: AuthkeepError) -> JSONResponse:
    """The OAuth2 answer for a domain error (:data:`OAUTH2_ERRORS`; any other is a 400
    ``invalid_request`` saying what was wrong)."""
    status, code = next(
        ((status, code) for kind, status, code in OAUTH2_ERRORS if isinstance(error, kind)),
        (400, "invalid_request"),
    )
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited | Overloaded | DependencyUnavailable):
        headers["Retry-After"] = str(error.retry_after)
    body: dict[str, Any] = {"error": code, "error_description": error.detail}
    if isinstance(error, ChallengeRequired):
        body = challenge_body(body, error)
    return JSONResponse(body, status_code=status, headers=headers)


def _running_services(request: Request) -> Services | None:
    authkeep = getattr(request.app.state, "authkeep", None)
    if authkeep is None:
        return None
    try:
        return authkeep.services  # type: ignore[no-any-return]
    except RuntimeError:  # outside the lifespan
        return None


async def audit_refusal(request: Request, error: PermissionDenied | RateLimited) -> None:
    """Record a 403 or 429 in the audit log (never raises)."""
    services = _running_services(request)
    if services is None:
        return
    state = request.scope.get("state", {})
    client = request.scope.get("client")
    info = RequestInfo(
        ip=state.get("client_ip", client[0] if client else None),
        user_agent=request.headers.get("user-agent"),
        request_id=state.get("request_id"),
    )
    actor = Actor.of(state.get("principal"))
    route = route_template(request.scope)
    if isinstance(error, PermissionDenied):
        log.info("permission_denied", method=request.method, route=route)
        await services.audit.access_denied(
            info,
            actor=actor,
            method=request.method,
            route=route,
            entity_type=error.entity_type,
            entity_id=error.entity_id,
            org_id=error.org_id,
        )
    else:
        await services.audit.rate_limited(
            info,
            limit=error.limit or "unknown",
            key=error.key,
            actor=actor,
            retry_after=error.retry_after,
            route=route,
        )


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthkeepError)
    if isinstance(exc, PermissionDenied | RateLimited):
        await audit_refusal(request, exc)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": safe_errors(exc.errors())}, status_code=422)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # A database that is restarting or down is a 503 the client may retry, not a 500 (which
    # says "bug" and pages someone): the transaction was rolled back or never began, so
    # nothing was half-written. Anything else is re-raised to the last-resort 500.
    if not is_unavailable(exc):
        raise exc
    log.warning(
        "database_unavailable",
        method=request.method,
        route=route_template(request.scope),
        error=type(exc).__name__,
    )
    return error_response(DependencyUnavailable(DATABASE_UNAVAILABLE))


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    # Each method of a path is its own route, so Starlette's own `Allow` names only the first
    # route that matched the path; RFC 9110 wants every method the resource supports. Asking
    # the router "would this path match with method M" works whatever nesting of included
    # routers FastAPI builds.
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


_COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {"description": "Rate limit exceeded; see `Retry-After`"},
    503: {"description": "A dependency (database, Redis) is unavailable or the server is busy"},
}
_BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body could not be parsed (malformed JSON or form data)"},
    413: {"description": "The body is larger than `AUTHKEEP_MAX_BODY_BYTES`"},
}


def document_common_errors(router: APIRouter) -> None:
    """Add the answers every route can give (global rate limit, unavailable dependency and,
    for routes with a body, unparsable or oversized bodies) to the OpenAPI schema, so that
    clients and the schema-based fuzzer know them."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        extra = {**_COMMON_RESPONSES, **(_BODY_RESPONSES if route.body_field else {})}
        for status, response in extra.items():
            route.responses.setdefault(status, response)


def install_error_handlers(app: FastAPI) -> None:
    """Register authkeep's handlers on ``app``."""
    app.add_exception_handler(AuthkeepError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Outages surface as SQLAlchemy's DBAPIError, or raw from the driver when a new
    # connection is refused (ConnectionError, TimeoutError are OSError subclasses).
    for kind in (DBAPIError, OSError):
        app.add_exception_handler(kind, _database_error)
