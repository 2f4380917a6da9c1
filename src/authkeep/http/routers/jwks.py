"""Public signing keys, for third parties that verify authkeep's access tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from authkeep.http.deps import get_authkeep

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    """The JWK Set of the asymmetric keys in use (empty with HS256: a secret is never shown)."""
    return JSONResponse(
        get_authkeep(request).services.codec.keys.jwks(),
        headers={"Cache-Control": "public, max-age=300"},
    )
