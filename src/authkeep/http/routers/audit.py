"""``GET /api/v1/audit``: search the audit trail (platform admins; org admins later)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from authkeep.db.audit import AuditFilter
from authkeep.http.deps import CurrentPrincipal, Info, get_authkeep
from authkeep.http.fields import CleanText, UTCTimestamp
from authkeep.services.audit_admin import ReadEntry

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditEntryOut(BaseModel):
    """One audit row. ``hash``/``prev_hash`` let a client check the chain independently,
    with ``ip_stored`` (the address as stored: sealed) in place of ``ip`` (in clear)."""

    id: int
    at: datetime
    org_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    request_id: str | None
    ip: str | None = Field(
        description="The client's address in clear; null when none was recorded, or when "
        "the account it belongs to was erased (its key destroyed)"
    )
    ip_stored: str | None = Field(
        description="The address as stored (encrypted; in clear on rows written before "
        "encryption): what the row's hash covers"
    )
    action: str
    entity_type: str | None
    entity_id: str | None
    outcome: Literal["success", "failure"]
    details: dict[str, Any]
    prev_hash: str
    hash: str


class RefusedQuery(BaseModel):
    """A 422: the usual validation errors, or a message (a cursor this server never issued
    is refused as ``{"detail": "Invalid cursor"}``)."""

    detail: str | list[dict[str, Any]]


class AuditPageOut(BaseModel):
    """A page of rows, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[AuditEntryOut]
    next_cursor: str | None


def _entry_out(row: ReadEntry) -> AuditEntryOut:
    return AuditEntryOut.model_validate(row.as_json())


Text = Annotated[CleanText | None, Query(min_length=1, max_length=64)]


@router.get(
    "",
    response_model=AuditPageOut,
    responses={
        401: {"description": "Not authenticated"},
        403: {"description": "Not an admin"},
        422: {"model": RefusedQuery, "description": "A malformed filter, or a foreign cursor"},
    },
)
async def search_audit(
    principal: CurrentPrincipal,
    request: Request,
    info: Info,
    actor_user_id: uuid.UUID | None = None,
    actor_api_key_id: uuid.UUID | None = None,
    action: Text = None,
    entity_type: Text = None,
    entity_id: Text = None,
    outcome: Literal["success", "failure"] | None = None,
    since: Annotated[UTCTimestamp | None, Query(description="inclusive; UTC if no offset")] = None,
    until: Annotated[UTCTimestamp | None, Query(description="exclusive; UTC if no offset")] = None,
    org_id: Annotated[
        uuid.UUID | Literal["platform"] | None,
        Query(description="one organization's chain, or 'platform' for platform events"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPageOut:
    """Audit rows matching every given filter, newest first, with cursor paging."""
    where = AuditFilter(
        org_ids=None if org_id is None else [] if org_id == "platform" else [org_id],
        platform=org_id == "platform",
        actor_user_id=actor_user_id,
        actor_api_key_id=actor_api_key_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        outcome=outcome,
        since=since,
        until=until,
    )
    page = await get_authkeep(request).services.audit_reader.page(
        principal, where, cursor=cursor, limit=limit, info=info
    )
    return AuditPageOut(items=[_entry_out(row) for row in page.items], next_cursor=page.next_cursor)
