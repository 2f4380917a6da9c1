"""Webhooks: endpoints, their deliveries, and events written at COMMIT with their audit row.

- ``webhook_endpoints``: an organization's endpoints (``organization_id`` set: tenant data,
  row-level security as ``api_keys``) and platform endpoints (``organization_id`` NULL,
  every event). The signing secret is sealed with a data key; during a rotation the
  previous one too, until it expires.
- ``webhook_deliveries``: one row per (event, endpoint): the body, its status and attempts.
  Same tenancy as its endpoint.

Events themselves are ``outbox`` rows (kind ``webhook.event``): no table of their own.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from authkeep.db import roles, tenancy
from authkeep.db import webhooks as webhook_rows
from authkeep.db.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen here, not imported: a migration must keep creating what it created.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_DELIVERY_STATUS = "status IN ('pending', 'succeeded', 'failed', 'cancelled')"
_TABLES = ("webhook_endpoints", "webhook_deliveries")


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["organization_id"],
        ["organizations.id"],
        name=f"fk_{table}_organization_id_organizations",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("event_types", _JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("disabled_reason", sa.String(32), nullable=True),
        sa.Column("secret_sealed", sa.String(255), nullable=False),
        sa.Column("previous_secret_sealed", sa.String(255), nullable=True),
        sa.Column("previous_secret_expires_at", UTCDateTime(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        _org_fk("webhook_endpoints"),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name="fk_webhook_endpoints_created_by_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("succeeded_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name="fk_webhook_deliveries_endpoint_id_webhook_endpoints",
            ondelete="CASCADE",
        ),
        _org_fk("webhook_deliveries"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        # One delivery (one webhook-id) per event and endpoint, however often fan-out runs.
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_id"),
        sa.CheckConstraint(_DELIVERY_STATUS, name="status"),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_id", "webhook_deliveries", ["endpoint_id", "created_at"]
    )
    bind = op.get_bind()
    for table in _TABLES:
        # The index and the tenant policy of authkeep.db.tenancy; the column is nullable
        # (NULL: a platform row), so it was created above rather than by the helper.
        tenancy.enable_tenancy(op, table, add_column=False)
        if bind.dialect.name == "postgresql":
            for statement in webhook_rows.platform_policy_statements(table):
                op.execute(statement)
    roles.apply_in_migration()


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_TABLES):
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP POLICY IF EXISTS {webhook_rows.PLATFORM_POLICY} ON {table}")
        tenancy.disable_tenancy(op, table, drop_column=False)
    op.drop_index("ix_webhook_deliveries_endpoint_id", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
