"""``/api/v1/admin``: platform administration (``is_superuser``, user sessions only).

With ``AUTHKEEP_ADMIN_ALLOWED_IPS`` set, a client whose (proxy-aware) IP is not listed gets
the same 404 as an unknown path, whatever the method, body or credentials: the admin surface
is not advertised to the internet, and a stolen admin token is useless from outside the list
(see :class:`AdminRoute`). An
``X-Forwarded-For`` header counts only from ``AUTHKEEP_TRUSTED_PROXIES``, so a client cannot
write its way in.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from authkeep.db.users import UserRecord
from authkeep.http.deletion_schemas import AdminDeleteIn, SoleAdminOut
from authkeep.http.deps import CurrentPrincipal, Info, get_authkeep
from authkeep.http.fields import CleanText
from authkeep.http.org_schemas import (
    AdminMfaResetIn,
    AdminUserOut,
    AdminUserPage,
    AdminUserPatch,
)
from authkeep.services.authn import Principal
from authkeep.services.platform_admin import MAX_PAGE, PlatformAdmin, require_superuser

log = structlog.get_logger("authkeep.admin")


def _client_allowed(scope: Scope) -> bool:
    authkeep = getattr(getattr(scope.get("app"), "state", None), "authkeep", None)
    allow_list = getattr(authkeep, "admin_allow_list", None)
    if allow_list is None:
        return True
    return bool(allow_list.allows(scope.get("state", {}).get("client_ip")))


class AdminRoute(APIRoute):
    """A route that does not exist for clients outside the admin allow-list.

    Refusing in :meth:`matches`, before routing settles, keeps every answer to an outsider
    the unknown path's 404: a dependency would run only after FastAPI had parsed the body
    (a malformed one gave 422) and after the router had matched the path (a wrong method
    gave 405 with an ``Allow`` header), both of which told a scanner the admin routes exist.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.NONE or _client_allowed(scope):
            return match, child_scope
        if match is Match.FULL:  # once per request: only one route fully matches
            log.warning(
                "admin_ip_refused",
                client_ip=scope.get("state", {}).get("client_ip"),
                path=scope.get("path"),
            )
        return Match.NONE, {}


async def admin_ip_allowed(request: Request) -> None:
    """404 unless the client IP is on the admin allow-list (when one is set). Defence in
    depth behind :class:`AdminRoute`, should these routes be re-mounted without it."""
    if not _client_allowed(request.scope):
        raise HTTPException(status_code=404)


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    route_class=AdminRoute,
    dependencies=[Depends(admin_ip_allowed)],
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    403: {"description": "Not a platform admin, or an API key"},
    404: {"description": "No such user (or the client IP is not allowed)"},
}


_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    401: {
        "description": "Not authenticated; or the sign-in is not recent (or lacks the second "
        "factor): `insufficient_user_authentication`, step up and retry"
    },
}


def _admin(request: Request) -> PlatformAdmin:
    return get_authkeep(request).services.platform_admin


async def _recent_admin(request: Request, principal: CurrentPrincipal) -> Principal:
    # Writes only. Authorization first (a non-admin hears 403, not an invitation to step up
    # for nothing), then a recent sign-in: a stolen admin token past its step-up age, or
    # one without the admin's second factor, changes no account.
    require_superuser(principal)
    get_authkeep(request).services.step_up.require(principal)
    return principal


RecentAdmin = Annotated[Principal, Depends(_recent_admin)]


def admin_user_out(user: UserRecord) -> AdminUserOut:
    """A user as a platform admin sees it."""
    return AdminUserOut(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        is_active=user.is_active,
        is_superuser=user.is_superuser,
        created_at=user.created_at,
        deleted_at=user.deleted_at,
    )


@router.get("/users", response_model=AdminUserPage, responses=_ERRORS)
async def search_users(
    principal: CurrentPrincipal,
    request: Request,
    q: Annotated[CleanText | None, Query(min_length=1, max_length=254)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> AdminUserPage:
    """Every user, newest first; with ``q``, the user whose email is exactly ``q`` (in
    any letter case) or whose id is ``q``. Emails and names are stored encrypted: a part of
    one matches nothing, and such a ``q`` is a 422."""
    page = await _admin(request).search(principal, query=q, offset=offset, limit=limit)
    return AdminUserPage(
        items=[admin_user_out(u) for u in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


_SELF_CHANGE: dict[int | str, dict[str, Any]] = {
    409: {"description": "Platform admins cannot deactivate or delete their own account"}
}


@router.patch(
    "/users/{user_id}", response_model=AdminUserOut, responses={**_WRITE_ERRORS, **_SELF_CHANGE}
)
async def update_user(
    user_id: uuid.UUID,
    body: AdminUserPatch,
    principal: RecentAdmin,
    request: Request,
    info: Info,
) -> AdminUserOut:
    """Activate or deactivate a user (deactivation ends their sessions at once)."""
    user = await _admin(request).set_active(principal, user_id, body.is_active, info)
    return admin_user_out(user)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **_WRITE_ERRORS,
        **_SELF_CHANGE,
        409: {
            "model": SoleAdminOut,
            "description": "Platform admins cannot delete their own account; or the user is "
            "the only admin of organizations that have other members (named in "
            "`organizations`)",
        },
    },
)
async def delete_user(
    user_id: uuid.UUID,
    body: AdminDeleteIn,
    principal: RecentAdmin,
    request: Request,
    info: Info,
) -> Response:
    """Delete a user for ``reason`` (required; kept in the audit log, so write no personal
    data in it): their sessions and API keys stop working at once, they are emailed a
    notice, and the account is erased at once (its data key destroyed, its rows removed;
    docs/privacy.md). An erased user is a 404 from then on."""
    await _admin(request).delete(principal, user_id, body.reason, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/users/{user_id}/mfa/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_WRITE_ERRORS,
)
async def reset_mfa(
    user_id: uuid.UUID,
    body: AdminMfaResetIn,
    principal: RecentAdmin,
    request: Request,
    info: Info,
) -> Response:
    """Remove every second factor of a user who lost theirs (TOTP, recovery codes, passkeys,
    pending MFA sign-ins): their sessions end at once, they are emailed, and the ``reason``
    goes to the audit log. They sign in with their password alone and enrol again."""
    await _admin(request).reset_mfa(principal, user_id, body.reason, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
