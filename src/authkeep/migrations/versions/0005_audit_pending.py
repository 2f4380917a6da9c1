"""Audit rows appended at COMMIT on PostgreSQL: ``audit_pending`` and its deferred trigger.

Revision ID: 0005_audit_pending
Revises: 0004_audit_append
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from authkeep.db import audit as audit_rows
from authkeep.db import roles

revision = "0005_audit_pending"
down_revision = "0004_audit_append"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite appends at once: its write transactions are already exclusive
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("lock", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("genesis", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_api_key_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("entity_type", sa.Text(), nullable=True),
        sa.Column("entity_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_pending"),
    )
    schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    for statement in audit_rows.postgres_pending_trigger(schema):
        op.execute(statement)
    roles.apply_in_migration()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE IF EXISTS audit_pending")
        op.execute("DROP FUNCTION IF EXISTS authkeep_audit_seal()")
