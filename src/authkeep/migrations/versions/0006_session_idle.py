"""Refresh-token rotation remembers who rotated: ``refresh_tokens.rotated_agent_hash``.

A spent token replayed inside the grace window gets its successor back only when the
replaying request carries the same User-Agent as the rotation; this column holds the
SHA-256 of that User-Agent. The idle timeout itself needs no column: it is measured from
``auth_sessions.last_used_at``, which every refresh already moves.

Revision ID: 0006
Revises: 0005_audit_pending
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005_audit_pending"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default is added in place on both SQLite and PostgreSQL
    # (no table rebuild, so nothing cascades). Rows spent before this migration have NULL:
    # a replay of one is never a "same client" retry.
    op.add_column("refresh_tokens", sa.Column("rotated_agent_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("rotated_agent_hash")
