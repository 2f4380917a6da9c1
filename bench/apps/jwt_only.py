"""Baseline: a minimal FastAPI route that only verifies the JWT (PyJWT, HS256, the same claims
checks as authkeep) and answers from the claims: the floor of any JWT service."""

from __future__ import annotations

import os

import jwt
from fastapi import FastAPI, HTTPException, Request

SECRET = os.environ["AUTHKEEP_SECRET_KEY"]
app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/auth/me")
async def me(request: Request) -> dict[str, object]:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise HTTPException(401)
    try:
        claims = jwt.decode(
            header[7:],
            SECRET,
            algorithms=["HS256"],
            audience="authkeep",
            issuer="authkeep",
            options={"require": ["exp", "iat", "sub", "jti", "sid", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        raise HTTPException(401) from None
    return {
        "id": claims["sub"],
        "email": claims.get("email"),
        "full_name": None,
        "is_active": True,
        "created_at": "2026-11-22T00:00:00Z",
    }
