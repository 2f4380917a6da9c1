"""Organizations, memberships, API keys (a tenant table under row-level security), and the
active organization of a session.

Revision ID: 0003_orgs
Revises: 0002_audit
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import api_keys, roles, tenancy
from authkeep.db.base import UTCDateTime

revision = "0003_orgs"
down_revision = "0002_audit"
branch_labels = None
depends_on = None

# Frozen here, not imported: a migration must keep creating what it created.
_ROLE_CHECK = "role IN ('admin', 'editor', 'viewer')"


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name="fk_organizations_created_by_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_memberships_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_memberships_organization_id_organizations",
            ondelete="CASCADE",
        ),
        # (user, organization): the per-request role look-up and "my organizations".
        sa.PrimaryKeyConstraint("user_id", "organization_id", name="pk_memberships"),
        sa.CheckConstraint(_ROLE_CHECK, name="role"),
    )
    op.create_index("ix_memberships_organization_id", "memberships", ["organization_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name="fk_api_keys_created_by_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
        sa.CheckConstraint(_ROLE_CHECK, name="role"),
    )
    # The same helper users call for their own tables: column, index, RLS policy.
    tenancy.enable_tenancy(op, "api_keys")

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for statement in api_keys.lookup_policy_statements():
            op.execute(statement)
        op.add_column("auth_sessions", sa.Column("org_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(
            "fk_auth_sessions_org_id_organizations",
            "auth_sessions",
            "organizations",
            ["org_id"],
            ["id"],
            ondelete="SET NULL",
        )
    else:
        # SQLite adds a nullable column with a REFERENCES clause in place; batch mode would
        # rebuild auth_sessions, and dropping the old table would cascade into
        # refresh_tokens (foreign keys are on).
        op.execute(
            "ALTER TABLE auth_sessions ADD COLUMN org_id CHAR(32) "
            "CONSTRAINT fk_auth_sessions_org_id_organizations "
            "REFERENCES organizations (id) ON DELETE SET NULL"
        )
    roles.apply_in_migration()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint(
            "fk_auth_sessions_org_id_organizations", "auth_sessions", type_="foreignkey"
        )
        op.execute(f"DROP POLICY IF EXISTS {api_keys.LOOKUP_POLICY} ON api_keys")
    op.drop_column("auth_sessions", "org_id")
    tenancy.disable_tenancy(op, "api_keys", drop_column=False)
    op.drop_table("api_keys")
    op.drop_table("memberships")
    op.drop_table("organizations")
