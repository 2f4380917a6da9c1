"""Maintenance positions: where a long batch job (``authkeep keys rotate-data``) stopped.

- ``maintenance_positions``: one row per job and phase, the last key it finished. A job that
  is interrupted (a deploy, a crash, Ctrl-C) starts again from there instead of from the
  first row.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import roles
from authkeep.db.base import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_positions",
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("position", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job", name="pk_maintenance_positions"),
    )
    roles.apply_in_migration()


def downgrade() -> None:
    op.drop_table("maintenance_positions")
