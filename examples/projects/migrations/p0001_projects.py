"""The example's own table: ``projects``, made a tenant table by authkeep's helper.

Revision ID: p0001_projects
Revises: (none: a branch of its own, after authkeep's 0003_orgs)
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep import enable_tenancy

revision = "p0001_projects"
down_revision = None
# A branch of its own: authkeep's history and this app's advance independently...
branch_labels = ("projects",)
# ...but this table references ``organizations``, which authkeep's 0003 creates.
depends_on = "0003_orgs"


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(2000), nullable=False, server_default=""),
        sa.Column(
            "owner_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_projects_owner_id_users"),
            nullable=False,
        ),
    )
    # The one line that makes it a tenant table: organization_id (NOT NULL, foreign key,
    # index) and, on PostgreSQL, the row-level security policy.
    enable_tenancy(op, "projects")


def downgrade() -> None:
    op.drop_table("projects")
