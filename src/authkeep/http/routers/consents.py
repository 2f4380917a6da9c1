"""``/api/v1/auth/me/consents``: the caller's consents, versioned (docs/privacy.md). The
rules live in :class:`authkeep.services.consents.Consents`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from authkeep.http.consent_schemas import ConsentIn, ConsentOut
from authkeep.http.deps import CurrentPrincipal, Info, get_authkeep

router = APIRouter(prefix="/auth/me/consents", tags=["privacy"])

_401: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, expired or revoked credentials"},
    403: {"description": "An API key: consents are a person's own decision"},
}


@router.get("", response_model=list[ConsentOut], responses=_401)
async def consents(principal: CurrentPrincipal, request: Request) -> list[ConsentOut]:
    """Every configured purpose: its current version, whether it is required, and the
    caller's decision (``granted`` only for the current version; ``outstanding`` when a
    required one is not granted)."""
    states = await get_authkeep(request).services.consents.states(principal.user.id)
    return [ConsentOut.of(state) for state in states]


@router.put(
    "/{purpose}",
    response_model=ConsentOut,
    responses={
        **_401,
        404: {"description": "No such consent purpose"},
        409: {"description": "Not the purpose's current version: show that text first"},
    },
)
async def decide(
    purpose: str, body: ConsentIn, principal: CurrentPrincipal, request: Request, info: Info
) -> ConsentOut:
    """Grant or withdraw a purpose at its current version. Withdrawing a required purpose
    is allowed; it becomes outstanding. Repeating the current decision changes nothing."""
    state = await get_authkeep(request).services.consents.decide(
        principal.user.id, purpose, granted=body.granted, version=body.version, info=info
    )
    return ConsentOut.of(state)
