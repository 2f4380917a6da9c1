"""Helpers for the session, refresh and revocation tests (importable as ``session_helpers``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from fastapi import FastAPI
from sqlalchemy import text, update

from authkeep import Authkeep, Settings, create_app
from authkeep.db.models import AuthSession, RefreshToken
from authkeep.wiring import Services
from helpers import bearer, client_for, running

REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"
LOGOUT = "/api/v1/auth/logout"
LOGOUT_ALL = "/api/v1/auth/logout-all"
PASSWORD = "/api/v1/auth/password"
SESSIONS = "/api/v1/auth/sessions"


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app built from ``settings``, running, and a client for it."""
    app = create_app(settings)
    async with running(app), client_for(app) as http:
        yield app, http


def services(app: FastAPI) -> Services:
    """The running services of ``app``."""
    return cast(Authkeep, app.state.authkeep).services


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """POST /refresh with ``token``."""
    return await http.post(REFRESH, json={"refresh_token": token})


async def me(http: httpx.AsyncClient, access: str) -> httpx.Response:
    """GET /me with ``access``."""
    return await http.get(ME, headers=bearer(access))


def user_id_of(pair: dict[str, Any]) -> uuid.UUID:
    """The user id of a login or refresh response."""
    return uuid.UUID(pair["user"]["id"])


async def rows(app: FastAPI, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a read-only query on the app's database, as dicts."""
    async with services(app).db.reading() as conn:
        result = await conn.execute(text(sql), params)
        return [dict(row._mapping) for row in result]


async def family(app: FastAPI, session_id: str) -> list[dict[str, Any]]:
    """Every stored refresh token of a session, oldest first."""
    return await rows(
        app,
        "SELECT jti, token_hash, spent_at, successor_jti, revoked_at FROM refresh_tokens "
        "WHERE session_id = :sid ORDER BY created_at, jti",
        sid=session_id_param(app, session_id),
    )


def session_id_param(app: FastAPI, session_id: str) -> Any:
    """A session id as the database driver wants it in a raw query (SQLite stores UUIDs as
    32 hex digits, PostgreSQL as a native uuid)."""
    parsed = uuid.UUID(session_id)
    return parsed if services(app).db.is_postgres else parsed.hex


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the test only reads what the server put there)."""
    import jwt

    return dict(jwt.decode(token, options={"verify_signature": False}))


def sid_of(pair: dict[str, Any]) -> uuid.UUID:
    """The session id of a login or refresh response."""
    return uuid.UUID(claims_of(pair["access_token"])["sid"])


async def set_session(app: FastAPI, pair: dict[str, Any], **values: Any) -> None:
    """Overwrite columns of the session of ``pair`` (e.g. to make it old)."""
    async with services(app).db.transaction() as conn:
        statement = update(AuthSession).where(AuthSession.id == sid_of(pair))
        await conn.execute(statement.values(**values))


async def set_token(app: FastAPI, token: str, **values: Any) -> None:
    """Overwrite columns of the stored refresh token ``token``."""
    jti = claims_of(token)["jti"]
    async with services(app).db.transaction() as conn:
        await conn.execute(update(RefreshToken).where(RefreshToken.jti == jti).values(**values))
