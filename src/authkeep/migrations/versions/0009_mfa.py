"""Multi-factor authentication: TOTP factors, recovery codes, the pending second step of a
login, passkeys (WebAuthn) and what a session knows about how it was signed in.

- ``users.mfa_enabled``: true while the user has a confirmed TOTP factor or a passkey
  (kept beside the user row so the per-request step-up check reads it for free).
- ``organizations.require_mfa``: members without a second factor are refused the
  organization's routes.
- ``auth_sessions.auth_time`` / ``amr``: when and how the session's user last proved who
  they are (sign-in or step-up); access tokens carry them (``acr`` follows from ``amr``).
  Existing sessions: ``auth_time`` is their creation, ``amr`` is ``pwd``.
- ``mfa_totp``: one TOTP factor per user, its secret sealed with a data key; ``last_step``
  is the newest accepted time step (replay rejection).
- ``mfa_recovery_codes``: single-use codes, as keyed hashes.
- ``mfa_login_challenges``: the ``mfa_token`` of a login waiting for its second factor, as
  a keyed hash, with its expiry and count of wrong codes.
- ``webauthn_credentials`` and ``webauthn_challenges``: passkeys and the single-use
  challenges of their ceremonies.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import roles
from authkeep.db.base import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("mfa_enabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "organizations",
        sa.Column("require_mfa", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("auth_sessions", sa.Column("auth_time", UTCDateTime(), nullable=True))
    op.add_column(
        "auth_sessions",
        sa.Column("amr", sa.String(64), nullable=False, server_default="pwd"),
    )
    op.execute("UPDATE auth_sessions SET auth_time = created_at")
    op.create_table(
        "mfa_totp",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("secret_sealed", sa.String(255), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(), nullable=True),
        _user_fk("mfa_totp"),
        sa.PrimaryKeyConstraint("id", name="pk_mfa_totp"),
        sa.UniqueConstraint("user_id", name="uq_mfa_totp_user_id"),
    )
    op.create_table(
        "mfa_recovery_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        _user_fk("mfa_recovery_codes"),
        sa.PrimaryKeyConstraint("id", name="pk_mfa_recovery_codes"),
        sa.UniqueConstraint("code_hash", name="uq_mfa_recovery_codes_code_hash"),
    )
    op.create_index("ix_mfa_recovery_codes_user_id", "mfa_recovery_codes", ["user_id"])
    op.create_table(
        "mfa_login_challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("amr", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        _user_fk("mfa_login_challenges"),
        sa.PrimaryKeyConstraint("id", name="pk_mfa_login_challenges"),
        sa.UniqueConstraint("token_hash", name="uq_mfa_login_challenges_token_hash"),
    )
    op.create_index("ix_mfa_login_challenges_user_id", "mfa_login_challenges", ["user_id"])
    op.create_index("ix_mfa_login_challenges_expires_at", "mfa_login_challenges", ["expires_at"])
    op.create_table(
        "webauthn_credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("credential_id", sa.String(1400), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("transports", sa.String(200), nullable=True),
        sa.Column("aaguid", sa.String(36), nullable=True),
        sa.Column("device_type", sa.String(16), nullable=False),
        sa.Column("backed_up", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        _user_fk("webauthn_credentials"),
        sa.PrimaryKeyConstraint("id", name="pk_webauthn_credentials"),
        sa.UniqueConstraint("credential_id", name="uq_webauthn_credentials_credential_id"),
    )
    op.create_index("ix_webauthn_credentials_user_id", "webauthn_credentials", ["user_id"])
    op.create_table(
        "webauthn_challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("challenge_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        _user_fk("webauthn_challenges"),
        sa.PrimaryKeyConstraint("id", name="pk_webauthn_challenges"),
        sa.UniqueConstraint("challenge_hash", name="uq_webauthn_challenges_challenge_hash"),
    )
    op.create_index("ix_webauthn_challenges_expires_at", "webauthn_challenges", ["expires_at"])
    roles.apply_in_migration()


def downgrade() -> None:
    op.drop_table("webauthn_challenges")
    op.drop_table("webauthn_credentials")
    op.drop_table("mfa_login_challenges")
    op.drop_table("mfa_recovery_codes")
    op.drop_table("mfa_totp")
    with op.batch_alter_table("auth_sessions") as batch:
        batch.drop_column("amr")
        batch.drop_column("auth_time")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("require_mfa")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("mfa_enabled")
