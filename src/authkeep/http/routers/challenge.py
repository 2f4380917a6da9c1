"""``GET /api/v1/auth/challenge``: a challenge up front (the ALTCHA widget's
``challengeurl``), so a client can solve it before it is asked to (docs/challenge.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from authkeep.http.deps import get_authkeep

router = APIRouter(prefix="/auth", tags=["auth"])


@router.get("/challenge")
async def challenge(request: Request, response: Response) -> dict[str, Any]:
    """A fresh challenge: for ALTCHA the widget's challenge JSON (``algorithm``,
    ``challenge``, ``maxnumber``, ``salt``, ``signature``) plus ``provider``; for a CAPTCHA
    service its ``provider`` and ``site_key``. Each ALTCHA challenge is single-use and
    expires after ``AUTHKEEP_CHALLENGE_EXPIRE_SECONDS``."""
    # Never cached: a shared cache would hand one challenge to many clients, and all but
    # the first solution would be refused as spent.
    response.headers["Cache-Control"] = "no-store"
    return get_authkeep(request).services.challenge.public()
