"""Encryption at rest, part 1: user keys, and room for ciphertext.

- ``user_keys``: each account's random user key, wrapped by the master data-key ring
  (``security/envelope.py``). No foreign key to ``users``: erasure deletes it first
  (crypto-shredding), and backups may keep this table apart (docs/privacy.md).
- Columns that will hold sealed values become TEXT: ``users.email``/``full_name``,
  ``account_tokens.email``, ``invitations.email``, ``auth_sessions.ip``/``user_agent`` and
  ``audit_log.ip``. ``users.email`` loses its unique constraint (ciphertext is random; the
  blind index ``users.email_key`` keeps addresses unique).

The data itself is encrypted by the next revision. On SQLite, ``audit_log`` is rebuilt by
batch mode, which drops its append-only triggers: they are put back at once.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import audit_guard, roles
from authkeep.db.base import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# (table, column, old type, nullable)
_WIDENED: tuple[tuple[str, str, sa.types.TypeEngine[str], bool], ...] = (
    ("users", "email", sa.String(254), False),
    ("users", "full_name", sa.String(200), True),
    ("account_tokens", "email", sa.String(254), False),
    ("invitations", "email", sa.String(254), False),
    ("auth_sessions", "ip", sa.String(45), True),
    ("auth_sessions", "user_agent", sa.String(256), True),
    ("audit_log", "ip", sa.String(45), True),
)


def _alter(to_text: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    tables = dict.fromkeys(table for table, *_ in _WIDENED)
    for table in tables:
        kwargs = {"table_kwargs": {"sqlite_autoincrement": True}} if table == "audit_log" else {}
        if sqlite and table == "audit_log":
            for statement in audit_guard.SQLITE_DROP:
                op.execute(statement)
        with op.batch_alter_table(table, **kwargs) as batch:  # type: ignore[arg-type]
            if table == "users" and to_text:
                batch.drop_constraint("uq_users_email", type_="unique")
            for name, column, old, nullable in _WIDENED:
                if name == table:
                    batch.alter_column(
                        column,
                        type_=sa.Text() if to_text else old,
                        existing_type=old if to_text else sa.Text(),
                        existing_nullable=nullable,
                    )
            if table == "users" and not to_text:
                batch.create_unique_constraint("uq_users_email", ["email"])
        if sqlite and table == "audit_log":
            for statement in audit_guard.SQLITE_CREATE:
                op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "user_keys",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("wrapped_key", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_keys"),
    )
    _alter(to_text=True)
    roles.apply_in_migration()


def downgrade() -> None:
    _alter(to_text=False)
    op.drop_table("user_keys")
