"""authkeep's tables. Migrations (``authkeep/migrations``) create them; never ``create_all``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from authkeep.db.base import Base, UTCDateTime, utcnow


class User(Base):
    """An account. ``email`` is the stored (display) form, ``email_key`` the folded one that
    uniqueness and look-ups use. Deleting sets ``deleted_at`` (the account is locked) and
    ``deletion_at``; the erasure then removes the row (``services/privacy/erasure.py``)."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(Text)
    email_key: Mapped[str] = mapped_column(String(254), unique=True)
    full_name: Mapped[str | None] = mapped_column(Text)
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the owner proved the address (a verification or email-change link); None: never.
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A confirmed TOTP factor or a passkey exists (kept by the MFA services; read with the
    # user, so the step-up check costs no query of its own).
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Deletion and retention (docs/privacy.md): when a requested deletion becomes an
    # erasure (None: none pending); the newest use known before the rows that recorded it
    # were purged (sessions, API keys); when the inactivity warning went out.
    deletion_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_active_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    inactivity_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserKey(Base):
    """An account's user key (``security/envelope.py``), wrapped by the master data-key ring.

    Every personal value about the account is sealed with it; deleting the row is the
    crypto-shredding step of an account's erasure. No foreign key: the purge deletes it
    before the user row, and a backup policy may keep this table apart (docs/privacy.md)."""

    __tablename__ = "user_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    wrapped_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AccountToken(Base):
    """A single-use token sent by email (verify the address, reset the password, confirm an
    email change). Only a keyed hash of the token is kept; ``email`` is the address it was
    sent to (for an email change: the new address, which becomes the account's on confirm)."""

    __tablename__ = "account_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuthSession(Base):
    """A login: the ``sid`` of every token it issues. Revoking it ends them all."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    # The active organization: access tokens issued by a refresh carry it (issue 5).
    org_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="SET NULL")
    )
    # When and how the user last proved who they are in this session (sign-in or step-up):
    # access tokens carry them as ``auth_time`` and ``amr`` (comma-separated methods).
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    amr: Mapped[str] = mapped_column(String(64), default="pwd", server_default="pwd")

    __table_args__ = (Index("ix_auth_sessions_revoked_at", "revoked_at"),)


class RefreshToken(Base):
    """One refresh token of a session's family, kept as a SHA-256 hash, never in clear.

    Rotation sets ``spent_at`` and ``successor_jti``; theft detection revokes the family
    (every row of the session) by setting ``revoked_at``.
    """

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    spent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    successor_jti: Mapped[str | None] = mapped_column(String(32))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # SHA-256 of the User-Agent of the request that spent this token: a replay inside the
    # grace window gets the successor back only from the same client software.
    rotated_agent_hash: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(Base):
    """One audit event: who did what, from where, with what outcome.

    Append-only (database triggers reject UPDATE and DELETE; see ``docs/audit.md``) and
    hash-chained: ``hash`` covers the row's content and ``prev_hash``, the hash of the
    previous row of the same chain (one chain per ``org_id``, and one for platform events
    where it is NULL). No foreign keys: the record must outlive the users and organizations
    it names, and a cascading delete or SET NULL would be an edit.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    actor_api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str | None] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_chain", "org_id", "id"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_action", "action", "id"),
        Index("ix_audit_log_entity", "entity_type", "entity_id"),
        {"sqlite_autoincrement": True},
    )


class AuditPolicy(Base):
    """The one row of rules the database itself enforces on ``audit_log`` (PostgreSQL):
    how old a row must be before the purge role may delete it, and that role's name.
    Written by ``authkeep migrate`` (the owner) from the settings; the app cannot change it."""

    __tablename__ = "audit_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    retention_days: Mapped[int] = mapped_column(Integer)
    purge_role: Mapped[str] = mapped_column(String(63))


# Organizations (issue 5). Roles are checked by the database as well as by the services.
_ROLE_CHECK = "role IN ('admin', 'editor', 'viewer')"


class Organization(Base):
    """A tenant. Deleting sets ``deleted_at`` (the row and its tenant data stay for an
    operator to export or purge); its memberships are removed and its API keys revoked."""

    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Members without a second factor are refused this organization's routes.
    require_mfa: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Membership(Base):
    """A user's role in one organization. The primary key (user, organization) is the index
    the per-request role look-up uses."""

    __tablename__ = "memberships"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # How the user came in: "created" the organization, accepted an "invitation", or "legacy"
    # (added directly before invitations existed, without the user's consent). The default
    # is the migration's: a row written without saying (an operator's insert) never becomes
    # a login's starting organization.
    origin: Mapped[str] = mapped_column(String(16), default="legacy")

    __table_args__ = (CheckConstraint(_ROLE_CHECK, name="role"),)


class Invitation(Base):
    """An invitation of an email address into an organization with a role. Membership exists
    only once the invitee, signed in with that address verified, accepts. Only a keyed hash
    of the link's token is kept; ``email_key`` is the folded address that matching uses."""

    __tablename__ = "invitations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(Text)
    email_key: Mapped[str] = mapped_column(String(254), index=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    declined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint(_ROLE_CHECK, name="role"),)


class ApiKey(Base):
    """A service credential for one organization, acting for its creator with at most
    ``role``. Only a SHA-256 of the key is kept; ``prefix`` finds the row. A tenant table:
    row-level security on PostgreSQL (see ``authkeep.db.tenancy``)."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint(_ROLE_CHECK, name="role"),)


OUTBOX_STATUS_CHECK = "status IN ('pending', 'sending', 'sent', 'dead')"


class OutboxMessage(Base):
    """A message to deliver (an email, later a webhook), written in the transaction of the
    change that causes it and delivered by ``authkeep.services.outbox``.

    ``locked_by``/``locked_until`` are a worker's lease: a message whose lease ran out (its
    worker died) is claimed again. ``dedup_key`` makes enqueueing idempotent. Once the message
    is sent or dead, ``payload`` is scrubbed of its context (links with single-use tokens).
    """

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(OUTBOX_STATUS_CHECK, name="status"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )


class TotpFactor(Base):
    """A user's TOTP factor (RFC 6238). ``secret_sealed`` is the secret sealed with a data
    key (bound to this row); ``last_step`` the newest accepted time step: a code is accepted
    only for a newer step, in one atomic update. Active once ``confirmed_at`` is set."""

    __tablename__ = "mfa_totp"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    secret_sealed: Mapped[str] = mapped_column(String(255))
    last_step: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RecoveryCode(Base):
    """One single-use recovery code, as a keyed hash."""

    __tablename__ = "mfa_recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MfaLoginChallenge(Base):
    """A login waiting for its second factor: the ``mfa_token`` (as a keyed hash), the
    methods already passed (``amr``), its expiry and the wrong codes spent on it."""

    __tablename__ = "mfa_login_challenges"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    amr: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebAuthnCredential(Base):
    """A passkey: its credential id (base64url), COSE public key and signature counter.
    ``device_type`` is ``single_device`` or ``multi_device`` (synced; such keys report a
    counter of 0, which is not a clone)."""

    __tablename__ = "webauthn_credentials"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    transports: Mapped[str | None] = mapped_column(String(200))
    aaguid: Mapped[str | None] = mapped_column(String(36))
    device_type: Mapped[str] = mapped_column(String(16))
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebAuthnChallenge(Base):
    """The single-use challenge of a WebAuthn ceremony (``purpose``: ``register``,
    ``login``), found by the SHA-256 of the challenge the client signed."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    purpose: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE")
    )
    challenge_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Webhooks (issue 17). Tenant tables with a nullable organization: NULL is a platform row.
WEBHOOK_DELIVERY_STATUS_CHECK = "status IN ('pending', 'succeeded', 'failed', 'cancelled')"


class WebhookEndpoint(Base):
    """Where events are posted: an organization's endpoint (its events only) or, with
    ``organization_id`` NULL, a platform endpoint (every event). ``event_types`` empty means
    every type. The signing secret is sealed with a data key (context: the table, column and
    row id); during a rotation the previous secret is kept, sealed, until it expires, and
    both sign. ``consecutive_failures`` counts failed attempts since the last success."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(32))
    secret_sealed: Mapped[str] = mapped_column(String(255))
    previous_secret_sealed: Mapped[str | None] = mapped_column(String(255))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event for one endpoint: delivered under one ``webhook-id`` (the event's) however
    many attempts, replays included. ``payload`` is the body as sent."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_id"),
        CheckConstraint(WEBHOOK_DELIVERY_STATUS_CHECK, name="status"),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "created_at"),
    )


# Consents (issue 15). One current row per (user, purpose); the history is the audit log's
# consent.granted / consent.withdrawn rows.
class Consent(Base):
    """A user's latest decision on one consent purpose: ``granted`` (or withdrawn) for
    ``version`` of the purpose's text, ``at`` that time. Whether it is still current is
    judged against ``AUTHKEEP_CONSENT_PURPOSES`` when read (a new version makes an older
    grant outstanding)."""

    __tablename__ = "consents"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MaintenancePosition(Base):
    """Where a batch job (``authkeep keys rotate-data``) stopped: the last key it finished
    in one phase (``job``), so that an interrupted run goes on from there."""

    __tablename__ = "maintenance_positions"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
