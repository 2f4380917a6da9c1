"""Audit log (append-only, hash-chained), its policy row, and the app role's grants.

Revision ID: 0002_audit
Revises: 0001_core
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from authkeep.db import audit_guard, roles
from authkeep.db.base import UTCDateTime

revision = "0002_audit"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_api_key_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=True),
        sa.Column("entity_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        # One successor per row: two rows naming the same predecessor would fork a chain.
        sa.UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),
        sa.CheckConstraint("outcome IN ('success', 'failure')", name="ck_audit_log_outcome"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_chain", "audit_log", ["org_id", "id"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"])
    op.create_index("ix_audit_log_entity", "audit_log", ["entity_type", "entity_id"])
    op.create_index("ix_audit_log_actor_user_id", "audit_log", ["actor_user_id"])

    op.create_table(
        "audit_policy",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("purge_role", sa.String(63), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_policy"),
        sa.CheckConstraint("id = 1", name="ck_audit_policy_single_row"),
        sa.CheckConstraint("retention_days >= 1", name="ck_audit_policy_retention"),
    )
    op.execute(
        sa.text(
            "INSERT INTO audit_policy (id, retention_days, purge_role) VALUES (1, :days, :role)"
        ).bindparams(days=roles.DEFAULT_RETENTION_DAYS, role=roles.DEFAULT_PURGE_ROLE)
    )

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
        for statement in audit_guard.postgres_create(schema):
            op.execute(statement)
    else:
        for statement in audit_guard.SQLITE_CREATE:
            op.execute(statement)
    roles.apply_in_migration()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
        for statement in audit_guard.postgres_drop(schema):
            op.execute(statement)
    else:
        for statement in audit_guard.SQLITE_DROP:
            op.execute(statement)
    op.drop_table("audit_policy")
    op.drop_table("audit_log")
