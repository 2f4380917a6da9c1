"""``/api/v1/api-keys``: keys of the caller's active organization (its admins, with a user
session). The rules live in :class:`authkeep.services.api_keys.ApiKeys`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status

from authkeep.db.api_keys import ApiKeyRecord
from authkeep.http.authz import SessionOrgAdmin
from authkeep.http.deps import Info, get_authkeep
from authkeep.http.org_schemas import ApiKeyCreatedOut, ApiKeyIn, ApiKeyOut
from authkeep.security.permissions import Role
from authkeep.services.authz import OrgAccess

router = APIRouter(prefix="/api-keys", tags=["api-keys"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    403: {"description": "Not an admin of the active organization, or an API key"},
}
_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    401: {
        "description": "Not authenticated; or the sign-in is not recent (or lacks the second "
        "factor): `insufficient_user_authentication`, step up and retry"
    },
}


async def _recent_org_admin(request: Request, access: SessionOrgAdmin) -> OrgAccess:
    # Authorization first, then the step-up: a member who may not create keys hears 403, not
    # an invitation to re-authenticate for nothing. A key outlives the session that made it,
    # so a stolen session must not mint one without a recent sign-in.
    get_authkeep(request).services.step_up.require(access.principal)
    return access


RecentOrgAdmin = Annotated[OrgAccess, Depends(_recent_org_admin)]


def key_out(record: ApiKeyRecord) -> ApiKeyOut:
    """The public view of a key: never its secret or hash."""
    return ApiKeyOut(
        id=record.id,
        org_id=record.org_id,
        name=record.name,
        prefix=record.prefix,
        role=record.role,
        created_by=record.created_by,
        created_at=record.created_at,
        expires_at=record.expires_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
    )


@router.post(
    "",
    response_model=ApiKeyCreatedOut,
    status_code=status.HTTP_201_CREATED,
    responses=_CREATE_ERRORS,
)
async def create_key(
    body: ApiKeyIn, access: RecentOrgAdmin, request: Request, info: Info
) -> ApiKeyCreatedOut:
    """Create a key; the response is the only time ``key`` is shown. Needs a recent sign-in
    (and the second factor, when enrolled)."""
    created = await get_authkeep(request).services.api_keys.create(
        access, name=body.name, role=Role(body.role), expires_at=body.expires_at, info=info
    )
    return ApiKeyCreatedOut(**key_out(created.record).model_dump(), key=created.key)


@router.get("", response_model=list[ApiKeyOut], responses=_ERRORS)
async def list_keys(access: SessionOrgAdmin, request: Request) -> list[ApiKeyOut]:
    """The active organization's keys, revoked ones included."""
    return [key_out(r) for r in await get_authkeep(request).services.api_keys.list(access)]


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_ERRORS, 404: {"description": "No such key in the active organization"}},
)
async def revoke_key(
    key_id: uuid.UUID, access: SessionOrgAdmin, request: Request, info: Info
) -> Response:
    """Revoke a key: its next use gets 401."""
    await get_authkeep(request).services.api_keys.revoke(access, key_id, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
