"""Consents: each user's latest decision per consent purpose.

- ``consents``: one row per (user, purpose) — the version of the purpose's text the user
  granted or withdrew, and when. Purposes and their current versions are configuration
  (``AUTHKEEP_CONSENT_PURPOSES``), not rows: a new version makes older grants outstanding
  without touching the table. Every change is also an audit row (``consent.granted``,
  ``consent.withdrawn``), which is the history.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import roles
from authkeep.db.base import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_consents_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "purpose", name="pk_consents"),
    )
    roles.apply_in_migration()


def downgrade() -> None:
    op.drop_table("consents")
