"""Invitations: ``/api/v1/orgs/{org_id}/invitations`` (org admins) and
``/api/v1/auth/invitations`` (the invitee).

Thin: every rule (who may invite, the verified address, single use, no oracle) lives in
:class:`authkeep.services.invitations.Invitations`. User sessions only: API keys get 403.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status

from authkeep.db.invitations import InvitationRecord
from authkeep.http.deps import CurrentPrincipal, Info, get_authkeep
from authkeep.http.invitation_schemas import (
    AcceptIn,
    InvitationIn,
    InvitationOut,
    InvitationQueuedOut,
)
from authkeep.http.org_schemas import MemberOut
from authkeep.http.routers.orgs import member_out
from authkeep.security.permissions import Role
from authkeep.services.invitations import Invitations

router = APIRouter(prefix="/orgs", tags=["invitations"])
mine_router = APIRouter(prefix="/auth/invitations", tags=["invitations"])

_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    403: {"description": "Not an admin of this organization, a role above one's own, or a key"},
    404: {"description": "No such organization among the caller's, or no such invitation"},
}
_INVITEE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The invitation was accepted, declined or revoked, or has expired"},
    401: {"description": "Not authenticated"},
    403: {"description": "The caller's email address is not verified, or an API key"},
    404: {"description": "No such invitation for the caller's address"},
}


def _invitations(request: Request) -> Invitations:
    return get_authkeep(request).services.invitations


def invitation_out(invitation: InvitationRecord) -> InvitationOut:
    """The public view of an invitation."""
    return InvitationOut(
        id=invitation.id,
        org_id=invitation.org_id,
        org_name=invitation.org_name,
        email=invitation.email,
        role=invitation.role,
        invited_by=invitation.invited_by,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
    )


@router.post(
    "/{org_id}/invitations",
    response_model=InvitationQueuedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ADMIN_ERRORS,
)
async def invite(
    org_id: uuid.UUID, body: InvitationIn, principal: CurrentPrincipal, request: Request, info: Info
) -> InvitationQueuedOut:
    """Invite an email address with a role (admins). The same 202 whether or not the address
    has an account; the invitee gets an email and becomes a member only by accepting."""
    await _invitations(request).invite(principal, org_id, body.email, Role(body.role), info)
    return InvitationQueuedOut()


@router.get("/{org_id}/invitations", response_model=list[InvitationOut], responses=_ADMIN_ERRORS)
async def list_org_invitations(
    org_id: uuid.UUID, principal: CurrentPrincipal, request: Request
) -> list[InvitationOut]:
    """The organization's pending invitations (admins)."""
    found = await _invitations(request).pending_for_org(principal, org_id)
    return [invitation_out(invitation) for invitation in found]


@router.delete(
    "/{org_id}/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_ADMIN_ERRORS,
)
async def revoke_invitation(
    org_id: uuid.UUID,
    invitation_id: uuid.UUID,
    principal: CurrentPrincipal,
    request: Request,
    info: Info,
) -> Response:
    """Revoke a pending invitation (admins): its link stops working."""
    await _invitations(request).revoke(principal, org_id, invitation_id, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@mine_router.get("", response_model=list[InvitationOut], responses=_INVITEE_ERRORS)
async def my_invitations(principal: CurrentPrincipal, request: Request) -> list[InvitationOut]:
    """The caller's pending invitations, by their *verified* email address (none while it is
    unverified)."""
    return [invitation_out(i) for i in await _invitations(request).mine(principal)]


@mine_router.post("/accept", response_model=MemberOut, responses=_INVITEE_ERRORS)
async def accept_invitation(
    body: AcceptIn, principal: CurrentPrincipal, request: Request, info: Info
) -> MemberOut:
    """Accept an invitation to the caller's verified address, by the link's ``token`` or by
    ``invitation_id``: returns the membership. Switch to the organization with
    ``POST /auth/switch-org``."""
    member = await _invitations(request).accept(
        principal, token=body.token, invitation_id=body.invitation_id, info=info
    )
    return member_out(member)


@mine_router.post(
    "/{invitation_id}/decline",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_INVITEE_ERRORS,
)
async def decline_invitation(
    invitation_id: uuid.UUID, principal: CurrentPrincipal, request: Request, info: Info
) -> Response:
    """Decline one of the caller's pending invitations."""
    await _invitations(request).decline(principal, invitation_id, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
