"""FastAPI dependencies for organization-scoped routes: ``require_role`` and ``TenantDB``.

Protecting a route of your own takes one parameter::

    from authkeep import OrgAccess, TenantDB, require_role

    Editor = Annotated[OrgAccess, Depends(require_role("editor"))]

    @app.post("/projects")
    async def create(body: ProjectIn, access: Editor, db: TenantDB) -> ProjectOut:
        async with db.transaction() as conn:  # app.org_id is set: RLS applies
            ...  # insert with owner_id=access.user_id, organization_id=access.org_id

These accept a user's access token (``Authorization: Bearer <jwt>``) or an API key
(``Authorization: Bearer ak_…`` or ``X-API-Key: ak_…``). The organization is the token's
active one (or the key's); the role is the current one, not the token's (a change applies on
the next request). Refusals: 401 without valid credentials, 403 without an active
organization or with a lower role. ``require_session_role`` is the same check for routes that
only a user's session may reach (managing API keys: a key must not mint keys).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from authkeep.db.tenancy import TenantDatabase
from authkeep.errors import InvalidToken
from authkeep.http.deps import CurrentPrincipal, bearer_scheme, get_authkeep, request_info
from authkeep.security.permissions import Role
from authkeep.services.api_keys import looks_like_key
from authkeep.services.authn import Principal
from authkeep.services.authz import OrgAccess, org_access

API_KEY_HEADER = "X-API-Key"
api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


async def current_caller(
    request: Request,
    token: Annotated[str | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The verified caller — a user session or an API key — or 401."""
    if token and api_key:
        # Two credentials could name two identities; refusing beats guessing which one an
        # upstream proxy or a confused client meant.
        raise InvalidToken("Send either a bearer token or an API key, not both")
    credential = token or api_key
    if not credential:
        raise InvalidToken("Not authenticated")
    services = get_authkeep(request).services
    if api_key or looks_like_key(credential):
        principal = await services.api_keys.authenticate(credential, request_info(request))
    else:
        principal = await services.authenticator.authenticate(credential)
    request.scope.setdefault("state", {})["principal"] = principal
    return principal


CurrentCaller = Annotated[Principal, Depends(current_caller)]


def require_role(minimum: Role | str) -> Callable[..., Awaitable[OrgAccess]]:
    """A dependency that yields the caller's :class:`OrgAccess` in its active organization
    if its current role is at least ``minimum`` (``"viewer"``, ``"editor"``, ``"admin"``),
    else 403. An unknown role name fails here, at import time, not at request time."""
    wanted = Role(minimum)

    async def dependency(principal: CurrentCaller) -> OrgAccess:
        return org_access(principal, wanted)

    dependency.__name__ = f"require_role_{wanted.value}"
    return dependency


def require_session_role(minimum: Role | str) -> Callable[..., Awaitable[OrgAccess]]:
    """Like :func:`require_role`, for a user's session only: API keys get 403, and the
    OpenAPI schema offers only the bearer scheme, as it should for these routes."""
    wanted = Role(minimum)

    async def dependency(principal: CurrentPrincipal) -> OrgAccess:
        return org_access(principal, wanted)

    dependency.__name__ = f"require_session_role_{wanted.value}"
    return dependency


async def tenant_database(
    request: Request,
    access: Annotated[OrgAccess, Depends(require_role(Role.VIEWER))],
) -> TenantDatabase:
    """The database bound to the caller's active organization (any member)."""
    return TenantDatabase(get_authkeep(request).services.db, access.org_id)


TenantDB = Annotated[TenantDatabase, Depends(tenant_database)]
OrgViewer = Annotated[OrgAccess, Depends(require_role(Role.VIEWER))]
OrgEditor = Annotated[OrgAccess, Depends(require_role(Role.EDITOR))]
OrgAdmin = Annotated[OrgAccess, Depends(require_role(Role.ADMIN))]
SessionOrgAdmin = Annotated[OrgAccess, Depends(require_session_role(Role.ADMIN))]
