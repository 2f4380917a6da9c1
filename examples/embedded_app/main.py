"""An existing FastAPI app — a tiny notes service — with authkeep added to it.

Run it from this folder (authkeep's tables must exist first; ``authkeep migrate`` creates them
in the database that ``AUTHKEEP_DATABASE_URL`` names, SQLite by default)::

    authkeep migrate
    uvicorn main:build_app --factory --no-access-log --no-proxy-headers
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from authkeep import Authkeep, CurrentUser, Settings
from authkeep.http.docs import install_docs


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's own start-up and shut-down; authkeep's run around it."""
    app.state.notes = {}
    yield


def build_app(settings: Settings | None = None) -> FastAPI:
    """The notes app. ``settings`` default to the ``AUTHKEEP_*`` environment."""
    # FastAPI's own docs page would fall under authkeep's strict API Content-Security-Policy
    # and stay blank; authkeep's docs page carries a CSP that lets Swagger UI run.
    app = FastAPI(title="Notes", lifespan=lifespan, docs_url=None, redoc_url=None)

    # The whole integration: /api/v1/auth/* and /health, the hardened middleware, the error
    # handlers, and authkeep's lifespan (database, Redis, hashing pool) around ours.
    authkeep = Authkeep(settings)
    authkeep.install(app)
    if not authkeep.settings.is_production:
        install_docs(app)

    @app.get("/")
    async def index() -> dict[str, str]:
        """Public."""
        return {"app": "notes"}

    @app.get("/notes")
    async def my_notes(user: CurrentUser) -> dict[str, object]:
        """Only with a valid access token; anything else is a 401."""
        notes: dict[str, list[str]] = app.state.notes
        return {"owner": user.email, "notes": notes.get(str(user.id), [])}

    return app
