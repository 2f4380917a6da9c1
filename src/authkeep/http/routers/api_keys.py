"""``/api/v1/api-keys``: keys of the caller's active organization (its admins, with a user
session). The rules live in :class:`authkeep.services.api_keys.ApiKeys`."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status

from authkeep.db.api_keys import ApiKeyRecord
from authkeep.http.authz import SessionOrgAdmin
from authkeep.http.deps import Info, get_authkeep
from authkeep.http.org_schemas import ApiKeyCreatedOut, ApiKeyIn, ApiKeyOut
from authkeep.security.permissions import Role

router = APIRouter(prefix="/api-keys", tags=["api-keys"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    403: {"description": "Not an admin of the active organization, or an API key"},
}


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
    "", response_model=ApiKeyCreatedOut, status_code=status.HTTP_201_CREATED, responses=_ERRORS
)
async def create_key(
    body: ApiKeyIn, access: SessionOrgAdmin, request: Request, info: Info
) -> ApiKeyCreatedOut:
    """Create a key; the response is the only time ``key`` is shown."""
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
