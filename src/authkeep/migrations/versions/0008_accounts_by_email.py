"""Accounts by email: verified addresses, single-use email tokens, invitations, and where
each membership came from.

- ``users.email_verified_at``: existing accounts start unverified (their address was never
  proven); with ``AUTHKEEP_EMAIL_VERIFICATION=required`` they verify at their next login.
- ``account_tokens``: verification, reset and email-change tokens, stored as keyed hashes.
- ``invitations``: membership needs the invitee's consent.
- ``memberships.origin``: existing memberships stay; those of an organization's creator are
  ``created``, every other one ``legacy`` (added directly, without consent).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import roles
from authkeep.db.base import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen here, not imported: a migration must keep creating what it created.
_ROLE_CHECK = "role IN ('admin', 'editor', 'viewer')"


def upgrade() -> None:
    # Nullable columns, or NOT NULL with a constant default, are added in place on both
    # backends (no SQLite table rebuild, which would cascade through the foreign keys).
    op.add_column("users", sa.Column("email_verified_at", UTCDateTime(), nullable=True))
    op.add_column(
        "memberships",
        sa.Column("origin", sa.String(16), nullable=False, server_default="legacy"),
    )
    op.execute(
        "UPDATE memberships SET origin = 'created' WHERE EXISTS (SELECT 1 FROM organizations o "
        "WHERE o.id = memberships.organization_id AND o.created_by = memberships.user_id)"
    )
    op.create_table(
        "account_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_account_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_account_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_account_tokens_token_hash"),
    )
    op.create_index("ix_account_tokens_user_id", "account_tokens", ["user_id"])
    op.create_table(
        "invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("email_key", sa.String(254), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("accepted_at", UTCDateTime(), nullable=True),
        sa.Column("accepted_by", sa.Uuid(), nullable=True),
        sa.Column("declined_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_invitations_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            ["users.id"],
            name="fk_invitations_invited_by_users",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["accepted_by"],
            ["users.id"],
            name="fk_invitations_accepted_by_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
        sa.CheckConstraint(_ROLE_CHECK, name="role"),
    )
    op.create_index("ix_invitations_organization_id", "invitations", ["organization_id"])
    op.create_index("ix_invitations_email_key", "invitations", ["email_key"])
    roles.apply_in_migration()


def downgrade() -> None:
    op.drop_index("ix_invitations_email_key", "invitations")
    op.drop_index("ix_invitations_organization_id", "invitations")
    op.drop_table("invitations")
    op.drop_index("ix_account_tokens_user_id", "account_tokens")
    op.drop_table("account_tokens")
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("origin")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_verified_at")
