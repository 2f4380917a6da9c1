"""An existing FastAPI app — a tiny notes service — with authkeep added to it.

Run it from this folder (authkeep's tables must exist first; ``authkeep migrate`` creates them
in the database that ``AUTHKEEP_DATABASE_URL`` names, SQLite by default)::

    authkeep migrate
    uvicorn main:build_app --factory --no-access-log --no-proxy-headers \\
        --http authkeep.http.server_protocol:LingeringH11Protocol
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field

from authkeep import Authkeep, CurrentUser, OrgEditor, OrgViewer, Settings, install_docs


class NoteIn(BaseModel):
    """A note to add to the caller's active organization."""

    text: str = Field(min_length=1, max_length=500)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's own start-up and shut-down; authkeep's run around it."""
    app.state.notes = {}
    app.state.team_notes = {}
    yield


def build_app(settings: Settings | None = None) -> FastAPI:
    """The notes app. ``settings`` default to the ``AUTHKEEP_*`` environment."""
    app = FastAPI(title="Notes", lifespan=lifespan)

    # The whole integration: /api/v1/auth/* and /health, the hardened middleware, the error
    # handlers, and authkeep's lifespan (database, Redis, hashing pool) around ours.
    authkeep = Authkeep(settings)
    authkeep.install(app)
    if not authkeep.settings.is_production:
        # FastAPI's own /docs loads Swagger UI from a CDN (blank offline, and blank under
        # authkeep's strict API CSP): this serves it from the package's files instead.
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

    @app.post("/team-notes", status_code=201)
    async def add_team_note(body: NoteIn, access: OrgEditor) -> dict[str, object]:
        """Editors and admins of the caller's active organization; viewers get a 403."""
        team: dict[str, list[str]] = app.state.team_notes
        team.setdefault(str(access.org_id), []).append(body.text)
        return {"org_id": str(access.org_id), "notes": team[str(access.org_id)]}

    @app.get("/team-notes")
    async def team_notes(access: OrgViewer) -> dict[str, object]:
        """Any member of the caller's active organization."""
        team: dict[str, list[str]] = app.state.team_notes
        return {"org_id": str(access.org_id), "notes": team.get(str(access.org_id), [])}

    return app
