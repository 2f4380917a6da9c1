"""``/api/v1/orgs``: organizations and members; ``/api/v1/auth/switch-org``.

Members join by invitation only (:mod:`authkeep.http.routers.invitations`); there is no
route that adds one directly.

Thin: every rule (who may do what, the last admin, 404 for outsiders) lives in
:class:`authkeep.services.orgs.Organizations`. These routes need a user session: API keys
get 403.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status

from authkeep.db.orgs import MemberRecord, OrgRecord
from authkeep.http.deps import CurrentPrincipal, Info, get_authkeep
from authkeep.http.org_schemas import (
    MemberOut,
    MemberRoleIn,
    OrgCreatedOut,
    OrgIn,
    OrgOut,
    OrgPatchIn,
    OrgTokenOut,
    SwitchOrgIn,
)
from authkeep.security.permissions import Role
from authkeep.services.orgs import Organizations

router = APIRouter(prefix="/orgs", tags=["organizations"])
switch_router = APIRouter(prefix="/auth", tags=["auth"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    403: {
        "description": "Not an admin of this organization, or an API key; or the "
        "organization requires a second factor the caller has not enrolled"
    },
    404: {"description": "No such organization among the caller's (or no such member)"},
}
_LAST_ADMIN: dict[int | str, dict[str, Any]] = {
    409: {"description": "The organization's last admin cannot be demoted or removed"}
}


def _orgs(request: Request) -> Organizations:
    return get_authkeep(request).services.orgs


def org_out(org: OrgRecord) -> OrgOut:
    """The public view of an organization."""
    return OrgOut(
        id=org.id,
        name=org.name,
        created_at=org.created_at,
        role=org.role,
        require_mfa=org.require_mfa,
    )


def member_out(member: MemberRecord) -> MemberOut:
    """The public view of a member."""
    return MemberOut(
        user_id=member.user_id,
        email=member.email,
        full_name=member.full_name,
        role=member.role,
        joined_at=member.joined_at,
    )


@router.post(
    "", response_model=OrgCreatedOut, status_code=status.HTTP_201_CREATED, responses=_ERRORS
)
async def create_org(
    body: OrgIn, principal: CurrentPrincipal, request: Request, info: Info
) -> OrgCreatedOut:
    """Create an organization; the caller becomes its admin. When the caller's session had
    no active organization, the new one becomes it and ``access_token`` is scoped to it."""
    org, token = await _orgs(request).create_and_enter(principal, body.name, info)
    return OrgCreatedOut(
        id=org.id,
        name=org.name,
        created_at=org.created_at,
        role=org.role,
        access_token=token.access_token if token else None,
        token_type="bearer" if token else None,
        expires_in=token.expires_in if token else None,
    )


@router.get("", response_model=list[OrgOut], responses=_ERRORS)
async def list_orgs(principal: CurrentPrincipal, request: Request) -> list[OrgOut]:
    """The caller's organizations and the caller's role in each."""
    return [org_out(org) for org in await _orgs(request).list_mine(principal)]


@router.get("/{org_id}", response_model=OrgOut, responses=_ERRORS)
async def get_org(org_id: uuid.UUID, principal: CurrentPrincipal, request: Request) -> OrgOut:
    """One of the caller's organizations."""
    return org_out(await _orgs(request).get(principal, org_id))


@router.patch(
    "/{org_id}",
    response_model=OrgOut,
    responses={
        **_ERRORS,
        401: {
            "description": "Not authenticated; or, to set `require_mfa`, the sign-in is not "
            "recent (or lacks the second factor): `insufficient_user_authentication`"
        },
    },
)
async def update_org(
    org_id: uuid.UUID, body: OrgPatchIn, principal: CurrentPrincipal, request: Request, info: Info
) -> OrgOut:
    """Rename an organization and/or set its two-factor policy (admins). With
    ``require_mfa``, members without a second factor get 403 on the organization's routes
    until they enrol one; setting it needs a recent sign-in (step-up). An admin can always
    turn it off."""
    org = await _orgs(request).update(
        principal, org_id, name=body.name, require_mfa=body.require_mfa, info=info
    )
    return org_out(org)


@router.delete("/{org_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def delete_org(
    org_id: uuid.UUID, principal: CurrentPrincipal, request: Request, info: Info
) -> Response:
    """Delete an organization (admins; soft: members lose access, API keys are revoked)."""
    await _orgs(request).delete(principal, org_id, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org_id}/members", response_model=list[MemberOut], responses=_ERRORS)
async def list_members(
    org_id: uuid.UUID, principal: CurrentPrincipal, request: Request
) -> list[MemberOut]:
    """The organization's members (any member may read them)."""
    return [member_out(m) for m in await _orgs(request).members(principal, org_id)]


@router.patch(
    "/{org_id}/members/{user_id}", response_model=MemberOut, responses={**_ERRORS, **_LAST_ADMIN}
)
async def change_member_role(
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MemberRoleIn,
    principal: CurrentPrincipal,
    request: Request,
    info: Info,
) -> MemberOut:
    """Change a member's role (admins); effective on the member's next request."""
    member = await _orgs(request).change_role(principal, org_id, user_id, Role(body.role), info)
    return member_out(member)


@router.delete(
    "/{org_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_ERRORS, **_LAST_ADMIN},
)
async def remove_member(
    org_id: uuid.UUID, user_id: uuid.UUID, principal: CurrentPrincipal, request: Request, info: Info
) -> Response:
    """Remove a member (admins), or leave (your own user id)."""
    await _orgs(request).remove_member(principal, org_id, user_id, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@switch_router.post(
    "/switch-org",
    response_model=OrgTokenOut,
    responses={**_ERRORS, 404: {"description": "Not a member of that organization"}},
)
async def switch_org(
    body: SwitchOrgIn, principal: CurrentPrincipal, request: Request
) -> OrgTokenOut:
    """Make an organization the session's active one: returns an access token carrying its
    ``org_id`` and ``role``. The refresh token stays valid and later refreshes keep the
    organization (the session remembers it)."""
    token = await _orgs(request).switch(principal, body.org_id)
    return OrgTokenOut(
        access_token=token.access_token,
        expires_in=token.expires_in,
        org_id=token.org_id,
        role=token.role,
    )
