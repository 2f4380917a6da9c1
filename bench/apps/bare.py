"""Baseline (a): the same read route in a bare FastAPI app, no security layer at all."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()
USER = {
    "id": "5f0c2b7e-7d2a-4c8e-9a51-2f7d0c1e9b10",
    "email": "bench@example.com",
    "full_name": None,
    "is_active": True,
    "created_at": "2026-11-22T00:00:00Z",
}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/auth/me")
async def me() -> dict[str, object]:
    return USER
