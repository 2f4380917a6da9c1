"""``GET /api/v1/auth/me/export``: everything held about the caller, signed
(docs/privacy.md#export). The rules live in
:class:`authkeep.services.privacy.export.DataExports`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from authkeep.http.deps import Info, RecentPrincipal, get_authkeep
from authkeep.http.limits import report_of
from authkeep.security.signed_documents import EXPORT_TYPE

router = APIRouter(prefix="/auth/me", tags=["privacy"])


class ExportOut(BaseModel):
    """A signed export: the document, and a compact JWS whose payload is that document."""

    document: dict[str, Any] = Field(
        description="Everything held about the caller (docs/privacy.md#export), readable as is"
    )
    jws: str = Field(
        description=f"The document signed with the service's token key (JWS header `typ` "
        f"`{EXPORT_TYPE}`; verify against /.well-known/jwks.json when keys are asymmetric). "
        "The signed payload is what counts: a verifier decodes it, not `document`"
    )


@router.get(
    "/export",
    response_model=ExportOut,
    responses={
        401: {
            "description": "Not authenticated; or the sign-in is too old (or lacks the second "
            'factor): `WWW-Authenticate: Bearer error="insufficient_user_authentication"`, '
            "step up and retry"
        },
        403: {"description": "An API key: an export is a person's own request"},
        429: {"description": "AUTHKEEP_EXPORT_RATE_LIMIT (per user); see Retry-After"},
        503: {"description": "The rate limiter does not answer: no export meanwhile"},
    },
)
async def export(
    principal: RecentPrincipal, request: Request, response: Response, info: Info
) -> ExportOut:
    """Everything authkeep holds about the caller — profile, memberships, invitations,
    sessions, API keys' metadata, consents, second factors' metadata, audit events about
    them with the audit chains' heads — as one JSON document signed by the service. Needs a
    recent sign-in (with the second factor, when enrolled). Audited (``user.exported``)."""
    signed = await get_authkeep(request).services.exports.export(
        principal, info, report_of(request.scope)
    )
    # Personal data: no cache on the way may keep a copy.
    response.headers["Cache-Control"] = "no-store"
    return ExportOut(document=signed.document, jws=signed.jws)
