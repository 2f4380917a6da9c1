"""Recording audit events: who did what, from where, with what outcome.

Two ways to record, by whether the event changes anything:

* :meth:`AuditLog.record` writes the row **inside the caller's transaction**, so a change and
  its audit row commit together or not at all. Call it last in the transaction (it holds the
  chain's append lock until commit).
* :meth:`AuditLog.record_alone` opens its own transaction, for events without a change: a
  failed login, refresh-token reuse found outside a change, a 403, a rate-limit hit.
  :meth:`AuditLog.record_quietly` does the same but never raises: a failure to record a
  refusal must not turn the refusal into a 500.

Hooks for features that record through this module (each documented where it lives):
:meth:`AuditLog.rate_limited` (429 on login), :meth:`AuditLog.access_denied` (403, called by
the error mapping), :meth:`AuditLog.config_problems` (start-up). Organizations, memberships,
roles and API keys use :meth:`AuditLog.record` with the :class:`Action` values reserved below
and ``org_id`` set, which puts their rows in that organization's chain.

``details`` go through :func:`authkeep.logging.redact_mapping` before they are stored: a key
that names a secret (``password``, ``token``...) is stored as ``[REDACTED]``, and JWTs, API
keys and password hashes inside strings are masked. Never put a secret there anyway.

The client's IP address is stored encrypted (:mod:`authkeep.db.audit_ips`): with the actor
user's key, else with the master data-key ring; an audit log built without the envelope
stores none.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import metrics
from authkeep.db import audit as audit_rows
from authkeep.db import audit_ips
from authkeep.db.base import IP_LENGTH, utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry
from authkeep.logging import redact_mapping
from authkeep.security.envelope import Envelope
from authkeep.security.text import clip
from authkeep.services.context import RequestInfo
from authkeep.settings import Problem

log = structlog.get_logger("authkeep.audit")

Outcome = Literal["success", "failure"]


class Action(StrEnum):
    """The ``action`` values authkeep writes. Dotted: ``<entity>.<verb>``."""

    USER_REGISTERED = "user.registered"
    LOGIN = "auth.login"
    LOGOUT = "auth.logout"
    LOGOUT_ALL = "auth.logout_all"
    REFRESH = "auth.refresh"
    REFRESH_REUSE = "auth.refresh_reuse_detected"
    RATE_LIMITED = "auth.rate_limited"
    ACCESS_DENIED = "authz.denied"
    PASSWORD_CHANGED = "user.password_changed"
    SESSION_REVOKED = "session.revoked"
    SESSIONS_ENDED = "session.ended"
    USER_ACTIVATED = "user.activated"
    USER_DEACTIVATED = "user.deactivated"
    USER_DELETED = "user.deleted"
    # Accounts by email (issue 11).
    SIGNUP_EXISTING_EMAIL = "user.signup_existing_email"
    EMAIL_VERIFICATION_SENT = "user.email_verification_sent"
    EMAIL_VERIFIED = "user.email_verified"
    PASSWORD_RESET_REQUESTED = "user.password_reset_requested"
    PASSWORD_RESET = "user.password_reset"
    EMAIL_CHANGE_REQUESTED = "user.email_change_requested"
    EMAIL_CHANGED = "user.email_changed"
    CONFIG_PROBLEM = "config.problem"
    AUDIT_QUERIED = "audit.queried"
    AUDIT_PURGED = audit_rows.PURGE_ACTION
    # Reserved for organizations, roles and API keys (issue 5): record them with org_id.
    ORG_CREATED = "org.created"
    ORG_UPDATED = "org.updated"
    ORG_DELETED = "org.deleted"
    MEMBER_ADDED = "member.added"
    MEMBER_ROLE_CHANGED = "member.role_changed"
    MEMBER_REMOVED = "member.removed"
    INVITATION_CREATED = "invitation.created"
    INVITATION_REVOKED = "invitation.revoked"
    INVITATION_ACCEPTED = "invitation.accepted"
    INVITATION_DECLINED = "invitation.declined"
    API_KEY_CREATED = "api_key.created"
    API_KEY_FIRST_USED = "api_key.first_used"
    API_KEY_REVOKED = "api_key.revoked"
    # TOTP, recovery codes, the second step of a login (issue 14).
    MFA_TOTP_ENROLLED = "mfa.totp_enrolled"
    MFA_TOTP_REMOVED = "mfa.totp_removed"
    MFA_VERIFY = "mfa.verify"
    MFA_RECOVERY_CODE_USED = "mfa.recovery_code_used"
    MFA_RECOVERY_CODES_REGENERATED = "mfa.recovery_codes_regenerated"
    # Passkeys (issue 14).
    MFA_PASSKEY_REGISTERED = "mfa.passkey_registered"
    MFA_PASSKEY_REMOVED = "mfa.passkey_removed"
    MFA_PASSKEY_LOGIN = "mfa.passkey_login"
    MFA_PASSKEY_COUNTER_REGRESSION = "mfa.passkey_counter_regression"
    # Step-up, the organization MFA policy, the admin's MFA reset (issue 14).
    STEP_UP = "auth.step_up"
    ORG_MFA_POLICY = "org.mfa_policy_changed"
    MFA_RESET = "user.mfa_reset"
    # Consents (issue 15): details name the purpose and the version granted or withdrawn.
    CONSENT_GRANTED = "consent.granted"
    CONSENT_WITHDRAWN = "consent.withdrawn"
    # Deletion and retention (issue 15): a request locks the account, the erasure removes it
    # (the webhook event ``user.deleted`` comes from ``user.erased``).
    USER_DELETION_REQUESTED = "user.deletion_requested"
    USER_DELETION_CANCELLED = "user.deletion_cancelled"
    USER_ERASED = "user.erased"
    USER_INACTIVITY_WARNED = "user.inactivity_warned"
    # The signed data export (issue 15): details name the export and the digest it signed.
    USER_EXPORTED = "user.exported"
    # Webhook endpoints (issue 17): org_id set for an organization's endpoint.
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    WEBHOOK_SECRET_ROTATED = "webhook_endpoint.secret_rotated"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    WEBHOOK_ENDPOINT_TESTED = "webhook_endpoint.tested"
    WEBHOOK_DELIVERY_REPLAYED = "webhook_delivery.replayed"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a user, an API key, or nobody known (the system, an anonymous client)."""

    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None

    @classmethod
    def of(cls, principal: object | None) -> Actor:
        """The actor behind an authenticated principal (a user's token or an API key)."""
        if principal is None:
            return SYSTEM
        user = getattr(principal, "user", None)
        user_id = getattr(user, "id", None)
        key_id = getattr(principal, "api_key_id", None)
        return cls(
            user_id if isinstance(user_id, uuid.UUID) else None,
            key_id if isinstance(key_id, uuid.UUID) else None,
        )


SYSTEM = Actor()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event to record. ``org_id`` None puts it in the platform chain."""

    action: str
    outcome: Outcome = "success"
    actor: Actor = SYSTEM
    entity_type: str | None = None
    entity_id: str | uuid.UUID | None = None
    org_id: uuid.UUID | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class _Throttle:
    """At most one event per key per window, for events an attacker can repeat at will."""

    def __init__(self, window_seconds: float, max_keys: int = 10_000) -> None:
        self._window = window_seconds
        self._max_keys = max_keys
        self._until: dict[tuple[str, ...], float] = {}

    def allow(self, key: tuple[str, ...]) -> bool:
        now = time.monotonic()
        if self._until.get(key, 0.0) > now:
            return False
        if len(self._until) >= self._max_keys:
            self._until = {k: t for k, t in self._until.items() if t > now}
            if len(self._until) >= self._max_keys:
                return False
        self._until[key] = now + self._window
        return True


class EventHook(Protocol):
    """Turns audited changes into events that commit with them: the webhook events
    (:class:`authkeep.services.webhooks.WebhookEvents`). One place: every audited change
    that an event catalogue names becomes its event, whichever service recorded it."""

    def events_for(self, event: AuditEvent) -> list[dict[str, Any]]:
        """The events ``event`` causes (usually none: a dictionary look-up); each has an
        ``id``."""
        ...

    def wants(self, event: AuditEvent) -> bool:
        """Whether ``event`` causes events (a dictionary look-up, nothing built)."""
        ...

    async def write(self, conn: AsyncConnection, events: list[dict[str, Any]]) -> None:
        """Write ``events`` on ``conn``, in its open transaction (the audit log off)."""
        ...

    def announce(self, conn: AsyncConnection) -> None:
        """An audit row with events is being written on ``conn``: wake the readers of the
        log once its transaction commits."""
        ...


class AuditLog:
    """The audit trail's writer. ``enabled=False`` (``AUTHKEEP_AUDIT_ENABLED``, refused in
    production) makes every call a no-op, for benchmarks. ``events`` turns audited changes
    into events written in the same transaction (see :class:`EventHook`)."""

    RATE_LIMIT_WINDOW_SECONDS = 60.0
    CONFIG_PROBLEM_WINDOW = timedelta(minutes=10)

    def __init__(
        self,
        db: Database,
        *,
        enabled: bool = True,
        events: EventHook | None = None,
        envelope: Envelope | None = None,
    ) -> None:
        self._db = db
        self._enabled = enabled
        self._events = events
        self._envelope = envelope
        self._rate_limit_throttle = _Throttle(self.RATE_LIMIT_WINDOW_SECONDS)

    @property
    def enabled(self) -> bool:
        """Whether events are written."""
        return self._enabled

    @property
    def envelope(self) -> Envelope | None:
        """What seals the client addresses of the rows (``authkeep.db.audit_ips``); without
        it no address is stored."""
        return self._envelope

    @staticmethod
    def entry(event: AuditEvent, info: RequestInfo | None) -> audit_rows.NewEntry:
        """The row for ``event`` (details redacted; the address still in clear: the
        writers seal it, :func:`authkeep.db.audit_ips.seal`)."""
        return audit_rows.NewEntry(
            action=str(event.action),
            outcome=event.outcome,
            org_id=event.org_id,
            actor_user_id=event.actor.user_id,
            actor_api_key_id=event.actor.api_key_id,
            request_id=info.request_id if info else None,
            # Cut before hashing: the chain covers what is stored, and an over-long
            # address must not fail (and so lose) the event it belongs to.
            ip=clip(info.ip, IP_LENGTH) if info else None,
            entity_type=event.entity_type,
            entity_id=None if event.entity_id is None else str(event.entity_id)[:64],
            details=redact_mapping(dict(event.details)),
        )

    async def record(
        self, conn: AsyncConnection, event: AuditEvent, info: RequestInfo | None = None
    ) -> None:
        """Write ``event`` in ``conn``'s transaction: it commits, or rolls back, with the
        change it describes (on PostgreSQL it joins its hash chain during the commit)."""
        await self._append(conn, event, info)

    async def record_alone(self, event: AuditEvent, info: RequestInfo | None = None) -> None:
        """Write ``event`` in a transaction of its own (an event without a change)."""
        if not self._enabled and (self._events is None or not self._events.wants(event)):
            return
        async with self._db.transaction() as conn:
            await self._append(conn, event, info, alone=True)

    async def prepare(
        self, conn: AsyncConnection, event: AuditEvent, info: RequestInfo | None = None
    ) -> audit_rows.NewEntry | None:
        """:meth:`record` for a caller whose own statement writes the row together with
        the change it describes (PostgreSQL: :func:`authkeep.db.audit.pending_insert_sql`,
        as :func:`authkeep.db.sessions.open_session` does): the row exactly as
        :meth:`record` would write it, its address sealed; its events are announced once
        ``conn``'s transaction commits. None when there is no row to write (the audit log
        off: the events, if any, are then already written on ``conn``, in a transaction
        it opened for them)."""
        entry = self.entry(event, info)
        if self._enabled:
            # Sealed before the row's content digest is taken: the chain covers the address
            # as stored.
            entry = await audit_ips.seal(conn, self._envelope, entry)
        if self._events is not None and self._events.wants(event):
            if not self._enabled:
                await self._events.write(conn, self._events.events_for(event))
                return None
            # Nothing more to write: the events are read from this row once it committed
            # (authkeep.services.webhooks.source), which holds all they need.
            self._events.announce(conn)
        return entry if self._enabled else None

    async def _append(
        self,
        conn: AsyncConnection,
        event: AuditEvent,
        info: RequestInfo | None,
        *,
        alone: bool = False,
    ) -> None:
        entry = await self.prepare(conn, event, info)
        if entry is not None:
            await audit_rows.append_at_commit(conn, entry, alone=alone)

    async def record_quietly(self, event: AuditEvent, info: RequestInfo | None = None) -> None:
        """:meth:`record_alone`, but a failure is logged and counted instead of raised."""
        try:
            await self.record_alone(event, info)
        except Exception:  # the caller is already answering with a refusal; keep it
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.exception("audit_write_failed", action=str(event.action))

    async def rate_limited(
        self,
        info: RequestInfo | None,
        *,
        limit: str,
        key: str | None = None,
        actor: Actor = SYSTEM,
        retry_after: int | None = None,
        route: str | None = None,
    ) -> None:
        """Hook: a rate limit refused a request (a login, or any other route).

        Called where :class:`~authkeep.errors.RateLimited` is mapped to 429 (the error
        mapping) and where a 429 is answered directly (the global limit's middleware).
        ``limit`` names the limit (``login``, ``global``...); ``key`` is what was counted (an
        IP, a user, a hashed email) and is used only to throttle, never stored; ``route`` is
        the route template or path. At most one row per (limit, key) per minute and process:
        a flood of refused requests must not become a flood of database writes (the 429
        metric still counts every one).
        """
        if not self._enabled:
            return
        throttle_key = (limit, key or (info.ip if info else None) or "-")
        if not self._rate_limit_throttle.allow(throttle_key):
            return
        details: dict[str, Any] = {"limit": limit}
        if retry_after is not None:
            details["retry_after"] = retry_after
        if route is not None:
            details["route"] = route[:200]
        await self.record_quietly(
            AuditEvent(Action.RATE_LIMITED, "failure", actor=actor, details=details), info
        )

    async def access_denied(
        self,
        info: RequestInfo | None,
        *,
        actor: Actor,
        method: str | None = None,
        route: str | None = None,
        entity_type: str | None = None,
        entity_id: str | uuid.UUID | None = None,
        org_id: uuid.UUID | None = None,
        reason: str | None = None,
    ) -> None:
        """Hook: a known caller was refused (403). Called by the error mapping for every
        :class:`~authkeep.errors.PermissionDenied`; ``route`` is the route template."""
        details: dict[str, Any] = {}
        if method:
            details["method"] = method
        if route:
            details["route"] = route
        if reason:
            details["reason"] = reason
        await self.record_quietly(
            AuditEvent(
                Action.ACCESS_DENIED,
                "failure",
                actor=actor,
                entity_type=entity_type,
                entity_id=entity_id,
                org_id=org_id,
                details=details,
            ),
            info,
        )

    async def config_problems(self, problems: Iterable[Problem]) -> int:
        """Record configuration problems found at start-up, once: a problem already
        recorded in the last ten minutes (another worker of the same start) is skipped.
        Returns how many rows were written.

        Each problem is logged, with its reason and fix, whether or not the audit log is on:
        an operator reads the start-up log, not the audit table."""
        wanted = list(problems)
        for problem in wanted:
            # Not ``level=``: structlog's own ``level`` key (the log level) would overwrite it.
            log.warning(
                "config_problem",
                setting=problem.setting,
                severity=problem.level,
                reason=problem.message,
            )
        if not self._enabled or not wanted:
            return 0
        async with self._db.transaction() as conn:
            await audit_rows.lock_chain(conn, None)
            since = utcnow() - self.CONFIG_PROBLEM_WINDOW
            seen = {
                (row[0], (row[1] or {}).get("message"))
                for row in await conn.execute(
                    select(AuditEntry.entity_id, AuditEntry.details).where(
                        AuditEntry.action == Action.CONFIG_PROBLEM.value,
                        AuditEntry.at >= since,
                    )
                )
            }
            written = 0
            for problem in wanted:
                if (problem.setting, problem.message) in seen:
                    continue
                event = AuditEvent(
                    Action.CONFIG_PROBLEM,
                    "failure",
                    entity_type="setting",
                    entity_id=problem.setting,
                    details={"level": problem.level, "message": problem.message},
                )
                await audit_rows.append(conn, self.entry(event, None))
                written += 1
        return written
