"""FastAPI dependencies an app uses to protect its routes.

``CurrentUser`` is the whole integration for most routes::

    @app.get("/things")
    async def things(user: CurrentUser) -> ...: ...

Every failure is a 401 with ``WWW-Authenticate: Bearer`` (see ``authkeep.http.errors``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from authkeep.db.users import UserRecord
from authkeep.errors import InvalidToken, PermissionDenied
from authkeep.services.api_keys import looks_like_key
from authkeep.services.authn import Principal
from authkeep.services.context import RequestInfo

if TYPE_CHECKING:
    from authkeep.http.app import Authkeep

TOKEN_URL = "/api/v1/auth/token"
# auto_error=False: we raise our own InvalidToken so that the body and headers are the same
# for a missing token as for a bad one.
bearer_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def get_authkeep(request: Request) -> Authkeep:
    """The Authkeep instance installed on this app."""
    return cast("Authkeep", request.app.state.authkeep)


def request_info(request: Request) -> RequestInfo:
    """Client IP (proxy-aware), user agent and request id of the current request."""
    state = request.scope.get("state", {})
    client = request.scope.get("client")
    return RequestInfo(
        ip=state.get("client_ip", client[0] if client else None),
        user_agent=request.headers.get("user-agent"),
        request_id=state.get("request_id"),
    )


class _SessionPrincipal(OAuth2PasswordBearer):
    """``current_principal``: the bearer scheme (for OpenAPI) and the authentication in one
    dependency. FastAPI resolves each dependency level on every request; folding the
    scheme into the check saves two of them on the most frequent path there is."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        """The verified caller's user session, or 401. API keys get 403: routes that take
        this dependency act on a user's own account or session (``/auth/*``, organizations,
        admin), which a service credential must not reach (use ``current_caller`` to accept
        keys)."""
        token = await super().__call__(request)
        services = get_authkeep(request).services
        state = request.scope.setdefault("state", {})
        api_key = request.headers.get("x-api-key")
        if api_key is not None or (token and looks_like_key(token)):
            if api_key is not None and token:
                raise InvalidToken("Send either a bearer token or an API key, not both")
            # The key is checked before it is refused: a forged or revoked key is no
            # credential (401, like a bad token), and only a real key earns the 403 — whose
            # audit row then names it. Otherwise anyone could write "authz.denied" rows by
            # sending junk keys.
            key = api_key if api_key is not None else token
            state["principal"] = await services.api_keys.authenticate(
                key or "", request_info(request)
            )
            raise PermissionDenied("This route needs a user session; API keys are not accepted")
        if not token:
            raise InvalidToken("Not authenticated")
        principal = await services.authenticator.authenticate(token)
        state["principal"] = principal
        return principal


# The same scheme name as ``bearer_scheme``: one security scheme in the OpenAPI document.
current_principal = _SessionPrincipal(
    tokenUrl=TOKEN_URL, scheme_name="OAuth2PasswordBearer", auto_error=False
)


async def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> UserRecord:
    """The verified caller's user record, or 401."""
    return principal.user


async def _request_info(request: Request) -> RequestInfo:
    # An async wrapper: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
    # hop per request for what is a few dictionary look-ups.
    return request_info(request)


def require_recent_auth(max_age: int | None = None, *, aal2: bool = False) -> Any:
    """A dependency for a sensitive route: the caller's user session, signed in (or stepped
    up) at most ``max_age`` seconds ago (None: ``AUTHKEEP_STEP_UP_MAX_AGE_SECONDS``), with
    the second factor when the user has one or ``aal2`` is asked. Otherwise 401 with
    ``WWW-Authenticate: Bearer error="insufficient_user_authentication"`` (RFC 9470)::

        @app.post("/payouts")
        async def payout(principal: Annotated[Principal, require_recent_auth(300)]): ...
    """
    return Depends(_RecentSessionPrincipal(max_age, aal2))


class _RecentSessionPrincipal(_SessionPrincipal):
    """``require_recent_auth``: the session principal and the step-up rule in ONE dependency.
    A dependency that wrapped ``current_principal`` cost a FastAPI dependency level (≈ 3 %
    of a read, ``bench/mfa.py``) on every sensitive request; the rule itself is a few
    comparisons. A session principal that this request already authenticated (another
    dependency of the route took ``CurrentPrincipal``, e.g. a per-user rate limit) is
    reused, so the token is still verified once."""

    def __init__(self, max_age: int | None, aal2: bool) -> None:
        super().__init__(tokenUrl=TOKEN_URL, scheme_name="OAuth2PasswordBearer", auto_error=False)
        self.max_age = max_age
        self.aal2 = aal2

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        """The caller's user session, if its sign-in meets the route's rule; else 401
        (StepUpRequired), or the session principal's own 401/403."""
        known = request.scope.get("state", {}).get("principal")
        if isinstance(known, Principal) and known.claims is not None:
            principal = known
        else:
            principal = await super().__call__(request)
        get_authkeep(request).services.step_up.require(
            principal, max_age=self.max_age, aal2=self.aal2
        )
        return principal


def require_aal2(max_age: int | None = None) -> Any:
    """:func:`require_recent_auth` that always needs the second factor (``acr`` ``aal2``):
    a user without one is asked to step up with one, which they must enrol first."""
    return require_recent_auth(max_age, aal2=True)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
RecentPrincipal = Annotated[Principal, require_recent_auth()]
"""The caller's user session with a recent sign-in (and its second factor, if enrolled)."""
CurrentUser = Annotated[UserRecord, Depends(current_user)]
Info = Annotated[RequestInfo, Depends(_request_info)]
