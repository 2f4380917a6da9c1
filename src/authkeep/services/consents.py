"""Consents: the purposes users agree to, versioned (docs/privacy.md).

Purposes and their current versions are configuration (``AUTHKEEP_CONSENT_PURPOSES``); a
user's decisions are rows (:mod:`authkeep.db.consents`, one per purpose) and audit rows
(``consent.granted``, ``consent.withdrawn``, with the purpose and version), written in one
transaction. A consent counts only for the version it was given to: when the operator
publishes a new version of a required purpose, every user who agreed to an older one has it
*outstanding* until they agree again.

* :class:`ConsentPolicy` — the configured purposes, and the rules a sign-up's consents must
  meet (pure, no database);
* :class:`Consents` — reading a user's consents, granting and withdrawing, and the check
  behind :func:`authkeep.require_consent`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import consents as consent_rows
from authkeep.db.base import utcnow
from authkeep.db.consents import ConsentRecord
from authkeep.db.engine import Database
from authkeep.errors import Conflict, ConsentRequired, NotFound
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.settings import ConsentPurpose, Settings

log = structlog.get_logger("authkeep.consents")

UNKNOWN_PURPOSE = "Unknown consent purpose"


@dataclass(frozen=True, slots=True)
class ConsentState:
    """One configured purpose as it stands for one user.

    ``granted`` is true only for a grant of the *current* ``version``; ``granted_version``
    is the version the user last granted (None: never, or withdrawn since); ``at`` is when
    the user last decided (None: never).
    """

    purpose: str
    version: str
    required: bool
    granted: bool
    granted_version: str | None
    at: datetime | None

    @property
    def outstanding(self) -> bool:
        """Required, and not granted at the current version."""
        return self.required and not self.granted


class ConsentPolicy:
    """The configured purposes (in their configured order) and the rules they impose."""

    def __init__(self, purposes: Mapping[str, ConsentPurpose] | None = None) -> None:
        self._purposes = dict(purposes or {})
        self._required = {name: p.version for name, p in self._purposes.items() if p.required}

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsentPolicy:
        """The policy of ``AUTHKEEP_CONSENT_PURPOSES``."""
        return cls(settings.consent_purposes)

    @property
    def purposes(self) -> Mapping[str, ConsentPurpose]:
        """Every configured purpose by name."""
        return self._purposes

    @property
    def required(self) -> Mapping[str, str]:
        """The required purposes and their current versions."""
        return self._required

    def purpose(self, name: str) -> ConsentPurpose:
        """The configured purpose ``name``; NotFound otherwise."""
        found = self._purposes.get(name)
        if found is None:
            raise NotFound(UNKNOWN_PURPOSE)
        return found

    def state(self, name: str, record: ConsentRecord | None) -> ConsentState:
        """Purpose ``name`` (configured) for a user whose stored decision is ``record``."""
        purpose = self._purposes[name]
        granted_version = record.version if record is not None and record.granted else None
        return ConsentState(
            purpose=name,
            version=purpose.version,
            required=purpose.required,
            granted=granted_version == purpose.version,
            granted_version=granted_version,
            at=record.at if record is not None else None,
        )

    def signup_grants(self, consents: Mapping[str, str] | None) -> dict[str, str]:
        """The grants a sign-up sends (purpose -> the version the user was shown), checked:
        every purpose configured, every version current, every required purpose there.
        FieldError on ``consents`` otherwise; it says what to send and never repeats the
        submitted values (they may be anything)."""
        given = dict(consents or {})
        if any(name not in self._purposes for name in given):
            if not self._purposes:
                raise FieldError("consents", "No consent purpose is configured; send none")
            raise FieldError(
                "consents",
                f"{UNKNOWN_PURPOSE}; the purposes are: {', '.join(self._purposes)}",
            )
        for name, version in given.items():
            current = self._purposes[name].version
            if version != current:
                raise FieldError(
                    "consents",
                    f"The current version of {name!r} is {current!r}: show that text and "
                    "send its version",
                )
        missing = {name: version for name, version in self._required.items() if name not in given}
        if missing:
            raise FieldError(
                "consents",
                "Registering needs consent to "
                + ", ".join(f"{name!r} version {version!r}" for name, version in missing.items())
                + f'; send "consents": {json.dumps(self._required)}',
            )
        return given


class Consents:
    """Consent use cases. Each change and its audit row commit together."""

    def __init__(self, db: Database, audit: AuditLog, policy: ConsentPolicy) -> None:
        self._db = db
        self._audit = audit
        self._policy = policy

    @property
    def policy(self) -> ConsentPolicy:
        """The configured purposes."""
        return self._policy

    async def states(self, user_id: uuid.UUID) -> list[ConsentState]:
        """Every configured purpose as it stands for the user, in configured order."""
        if not self._policy.purposes:
            return []
        async with self._db.reading() as conn:
            records = await consent_rows.for_user(conn, user_id)
        return [self._policy.state(name, records.get(name)) for name in self._policy.purposes]

    async def outstanding(self, user_id: uuid.UUID) -> list[str]:
        """The required purposes the user has not granted at their current version. No
        query when no purpose is required."""
        if not self._policy.required:
            return []
        return [state.purpose for state in await self.states(user_id) if state.outstanding]

    async def decide(
        self,
        user_id: uuid.UUID,
        purpose: str,
        *,
        granted: bool,
        version: str,
        info: RequestInfo | None = None,
    ) -> ConsentState:
        """Grant or withdraw ``purpose`` for the user. ``version`` must be the purpose's
        current one (the text the user was shown): Conflict otherwise. NotFound for an
        unknown purpose. Repeating the stored decision changes and records nothing.
        Withdrawing a required purpose is allowed: it becomes outstanding."""
        current = self._policy.purpose(purpose)
        if version != current.version:
            raise Conflict(
                f"The current version of {purpose!r} is {current.version!r}: show that text "
                "and send its version"
            )
        async with self._db.transaction() as conn:
            changed = await consent_rows.decide(
                conn, user_id, purpose, version=version, granted=granted, now=utcnow()
            )
            if changed is not None:
                await self._audit.record(
                    conn, _event(user_id, purpose, version, granted=granted, via="api"), info
                )
            record = changed or await consent_rows.get(conn, user_id, purpose)
        if changed is not None:
            log.info(
                "consent_granted" if granted else "consent_withdrawn",
                user_id=str(user_id),
                purpose=purpose,
                version=version,
            )
        return self._policy.state(purpose, record)

    async def require(self, user_id: uuid.UUID, purpose: str) -> None:
        """ConsentRequired unless the user granted ``purpose`` at its current version (one
        primary-key look-up). A purpose that is not configured is the embedding app's
        mistake, not the user's: LookupError (a 500), so a typo never silently opens or
        closes a route."""
        configured = self._policy.purposes.get(purpose)
        if configured is None:
            raise LookupError(
                f"require_consent({purpose!r}): no such purpose in AUTHKEEP_CONSENT_PURPOSES"
            )
        async with self._db.reading() as conn:
            record = await consent_rows.get(conn, user_id, purpose)
        if record is None or not record.granted or record.version != configured.version:
            raise ConsentRequired(purpose, configured.version)

    async def record_signup(
        self,
        conn: AsyncConnection,
        user_id: uuid.UUID,
        grants: Mapping[str, str],
        info: RequestInfo | None = None,
    ) -> None:
        """Store a new account's grants (checked by :meth:`ConsentPolicy.signup_grants`) and
        audit each, in the sign-up's transaction ``conn``."""
        await consent_rows.insert_grants(conn, user_id, grants, utcnow())
        for purpose, version in grants.items():
            await self._audit.record(
                conn, _event(user_id, purpose, version, granted=True, via="register"), info
            )


def _event(
    user_id: uuid.UUID, purpose: str, version: str, *, granted: bool, via: str
) -> AuditEvent:
    return AuditEvent(
        Action.CONSENT_GRANTED if granted else Action.CONSENT_WITHDRAWN,
        actor=Actor(user_id),
        entity_type="user",
        entity_id=user_id,
        details={"purpose": purpose, "version": version, "via": via},
    )
