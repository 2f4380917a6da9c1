"""Audit appends in one call on PostgreSQL: ``authkeep_audit_append`` (lock, head, link, insert).

Revision ID: 0004_audit_append
Revises: 0003_orgs
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import audit as audit_rows

revision = "0004_audit_append"
down_revision = "0003_orgs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
        op.execute(audit_rows.postgres_append_function(schema))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS authkeep_audit_append(bigint, text, text, text, "
            "timestamptz, uuid, uuid, uuid, text, text, text, text, text, text, jsonb)"
        )
