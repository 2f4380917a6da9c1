"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from authkeep.http.deps import get_authkeep
from authkeep.http.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up."""
    return Health()


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(request: Request) -> JSONResponse:
    """The database (and Redis, when configured) answer."""
    report = await get_authkeep(request).readiness()
    return JSONResponse(report.model_dump(), status_code=200 if report.status == "ok" else 503)
