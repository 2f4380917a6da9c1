"""Account deletion and retention (docs/privacy.md).

- ``users.deletion_at``: when a requested deletion becomes an erasure (``authkeep purge``
  erases accounts whose time has come); NULL: none pending. Indexed for that look-up.
- ``users.last_active_at``: the newest sign-in, refresh or API-key use known *before* the
  rows that recorded it were purged (the purge folds them in first). NULL: nothing beyond
  ``created_at`` and the live rows. Filled here from the sessions that exist.
- ``users.inactivity_warned_at``: when the inactivity warning went out (one per idle
  spell).

Every foreign key to ``users`` already does what an erasure needs: account data cascades
(sessions, refresh tokens, memberships, API keys, factors, challenges, consents, account
tokens), references that outlive the account are set NULL (organizations, invitations,
webhook endpoints), and ``audit_log`` and ``user_keys`` have none on purpose.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db.base import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("deletion_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_active_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("inactivity_warned_at", UTCDateTime(), nullable=True))
    op.create_index("ix_users_deletion_at", "users", ["deletion_at"])
    # The sessions are the only record of use so far; the purge keeps the column current
    # from now on, before it deletes the sessions that ended.
    op.execute(
        "UPDATE users SET last_active_at = (SELECT max(s.last_used_at) FROM auth_sessions s "
        "WHERE s.user_id = users.id)"
    )


def downgrade() -> None:
    op.drop_index("ix_users_deletion_at", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("inactivity_warned_at")
        batch.drop_column("last_active_at")
        batch.drop_column("deletion_at")
