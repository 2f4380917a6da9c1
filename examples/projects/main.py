"""A tenant ``projects`` API built only from authkeep's public pieces.

Every project belongs to one organization (the caller's active one, from the token) and to
the member who created it:

* viewers read the organization's projects;
* editors also create projects, and change or delete their own;
* admins change or delete any project of the organization;
* a project of another organization is "not found" (404), never "forbidden" (403), so ids
  of other tenants reveal nothing.

Run it from this folder::

    python main.py                      # authkeep's migrations and this app's, in one call
    uvicorn main:build_app --factory --no-access-log --no-proxy-headers
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import (
    Authkeep,
    CheckedUpload,
    NotFound,
    OrgAccess,
    Settings,
    TenantDB,
    UploadCheck,
    require_role,
    run_migrations,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# The query-side view of the table the migration creates (organization_id included).
metadata = sa.MetaData()
projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.String(2000), nullable=False),
    sa.Column("owner_id", sa.Uuid(), nullable=False),
    sa.Column("organization_id", sa.Uuid(), nullable=False),
)

# Route-level checks: at least this role in the caller's active organization, else 403.
Viewer = Annotated[OrgAccess, Depends(require_role("viewer"))]
Editor = Annotated[OrgAccess, Depends(require_role("editor"))]

# A file attached to a project: its bytes must be one of these types, agree with its declared
# Content-Type and extension, be whole, hide no archive or script, and stay under 512 KB
# (read as a stream: docs/uploads.md).
ATTACHMENT_TYPES = frozenset({"image/png", "application/pdf", "audio/wav", "audio/mpeg"})
Attachment = Annotated[CheckedUpload, Depends(UploadCheck(ATTACHMENT_TYPES, max_bytes=512 * 1024))]


class AttachmentOut(BaseModel):
    """What was accepted (this example stores no file)."""

    filename: str
    content_type: str
    size: int
    sha256: str


class ProjectIn(BaseModel):
    """A new project. Unknown fields are refused: ``owner_id`` and ``organization_id`` come
    from the verified caller, never from the body (mass assignment)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)


class ProjectPatch(BaseModel):
    """Changes to a project (only these two fields can change)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)


class ProjectOut(BaseModel):
    """A project as the API shows it."""

    id: uuid.UUID
    name: str
    description: str
    owner_id: uuid.UUID
    organization_id: uuid.UUID


def _out(row: sa.Row[Any]) -> ProjectOut:
    return ProjectOut.model_validate(row._mapping)


async def _find(conn: AsyncConnection, access: OrgAccess, project_id: uuid.UUID) -> sa.Row[Any]:
    # The organization filter is the only guard on SQLite (PostgreSQL's row-level security
    # would hide the row anyway): another tenant's id is simply not found.
    row = (
        await conn.execute(
            sa.select(projects).where(
                projects.c.id == project_id, projects.c.organization_id == access.org_id
            )
        )
    ).first()
    if row is None:
        raise NotFound("Project not found")
    return row


async def migrate(settings: Settings | None = None) -> None:
    """authkeep's migrations, then this app's (``migrations/``), then the grants."""
    await run_migrations(settings or Settings(), version_locations=[MIGRATIONS])  # type: ignore[call-arg]


def build_app(settings: Settings | None = None) -> FastAPI:
    """The projects app. ``settings`` default to the ``AUTHKEEP_*`` environment."""
    app = FastAPI(title="Projects", docs_url=None, redoc_url=None)
    Authkeep(settings).install(app)

    @app.get("/projects", response_model=list[ProjectOut])
    async def list_projects(access: Viewer, db: TenantDB) -> list[ProjectOut]:
        """The active organization's projects."""
        async with db.reading() as conn:
            rows = await conn.execute(
                sa.select(projects)
                .where(projects.c.organization_id == access.org_id)
                .order_by(projects.c.name, projects.c.id)
            )
            return [_out(row) for row in rows]

    @app.post("/projects", response_model=ProjectOut, status_code=status.HTTP_201_CREATED)
    async def create_project(body: ProjectIn, access: Editor, db: TenantDB) -> ProjectOut:
        """A new project, owned by the caller, in the active organization (editors)."""
        values = {
            "id": uuid.uuid4(),
            "name": body.name,
            "description": body.description,
            "owner_id": access.user_id,
            "organization_id": access.org_id,
        }
        async with db.transaction() as conn:
            await conn.execute(sa.insert(projects).values(**values))
        return ProjectOut.model_validate(values)

    @app.get("/projects/{project_id}", response_model=ProjectOut)
    async def get_project(project_id: uuid.UUID, access: Viewer, db: TenantDB) -> ProjectOut:
        """One project of the active organization."""
        async with db.reading() as conn:
            return _out(await _find(conn, access, project_id))

    @app.patch("/projects/{project_id}", response_model=ProjectOut)
    async def edit_project(
        project_id: uuid.UUID, body: ProjectPatch, access: Editor, db: TenantDB
    ) -> ProjectOut:
        """Change a project: its owner, or an admin."""
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        async with db.transaction() as conn:
            row = await _find(conn, access, project_id)
            # Service-level check: an editor passed the route's check, but owns only some rows.
            access.ensure_can_write(row.owner_id, entity_type="project", entity_id=project_id)
            if changes:
                await conn.execute(
                    sa.update(projects)
                    .where(projects.c.id == project_id, projects.c.organization_id == access.org_id)
                    .values(**changes)
                )
        return _out(row).model_copy(update=changes)

    @app.delete("/projects/{project_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_project(project_id: uuid.UUID, access: Editor, db: TenantDB) -> Response:
        """Delete a project: its owner, or an admin."""
        async with db.transaction() as conn:
            row = await _find(conn, access, project_id)
            access.ensure_can_write(row.owner_id, entity_type="project", entity_id=project_id)
            await conn.execute(
                sa.delete(projects).where(
                    projects.c.id == project_id, projects.c.organization_id == access.org_id
                )
            )
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.put("/projects/{project_id}/attachment", response_model=AttachmentOut)
    async def attach_file(
        project_id: uuid.UUID, access: Editor, db: TenantDB, upload: Attachment
    ) -> AttachmentOut:
        """Attach a file to a project (its owner, or an admin). The body is the file itself,
        with ``Content-Type`` and ``Content-Disposition: attachment; filename="…"``."""
        async with db.reading() as conn:
            row = await _find(conn, access, project_id)
        access.ensure_can_write(row.owner_id, entity_type="project", entity_id=project_id)
        # A real app would now copy ``upload.file`` to its storage under a name of its own
        # choosing (never ``upload.filename`` as a path).
        return AttachmentOut(
            filename=upload.filename,
            content_type=upload.content_type,
            size=upload.size,
            sha256=upload.sha256,
        )

    return app


if __name__ == "__main__":
    asyncio.run(migrate())
