"""API keys for services: create (shown once), list, revoke, authenticate.

A key is ``ak_`` + a 12-character public prefix + ``_`` + a 43-character secret (256 random
bits). Only SHA-256 of the whole key is stored. A fast hash is enough here, unlike for
passwords: slow hashes exist to make guessing *low-entropy* secrets expensive, and no amount
of hashing speed makes 2^256 guesses feasible — while an argon2 verification on every API
request would cost ~20 ms of CPU. The prefix finds the row (unique index); the hashes are
compared in constant time.

A key belongs to one organization and acts for the admin who created it, with at most the
key's role: each request uses the weaker of the key's role and the creator's *current* role
there. A key therefore dies (401) the moment its creator leaves the organization or is
deactivated, and never outlives or outranks the person accountable for it.

Keys cannot manage keys or members (403): a leaked key must not mint its own successors or
add its holder to the organization. Revocation is immediate (no cache: every request reads
the row). ``last_used_at`` moves at most once a minute per key, and the first use is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from authkeep.db import api_keys as key_rows
from authkeep.db.api_keys import ApiKeyRecord
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.errors import InvalidToken, NotFound
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role, weaker
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.authn import ApiKeyIdentity, Principal
from authkeep.services.authz import OrgAccess
from authkeep.services.context import RequestInfo
from authkeep.services.orgs import valid_name

log = structlog.get_logger("authkeep.api_keys")

KEY_PREFIX = "ak_"
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_PREFIX_LENGTH = 12
_SECRET_BYTES = 32
_KEY_SHAPE = re.compile(r"ak_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
TOUCH_INTERVAL = timedelta(minutes=1)


def key_digest(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def looks_like_key(value: str) -> bool:
    """Whether ``value`` is meant as an API key (it may still be wrong)."""
    return value.startswith(KEY_PREFIX)


def new_key() -> tuple[str, str]:
    """A fresh key and its prefix."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}", prefix


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``key`` is the only time the secret is ever shown."""

    record: ApiKeyRecord
    key: str


class ApiKeys:
    """Use cases on API keys."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        touch_interval: timedelta = TOUCH_INTERVAL,
        envelope: Envelope,
    ) -> None:
        """``envelope`` opens a key creator's personal data (read with the key)."""
        self._db = db
        self._envelope = envelope
        self._audit = audit
        self._touch_interval = touch_interval

    @staticmethod
    def _manager(access: OrgAccess) -> None:
        access.ensure_human("Managing API keys")
        access.require(Role.ADMIN)

    async def create(
        self,
        access: OrgAccess,
        *,
        name: str,
        role: Role,
        expires_at: datetime | None = None,
        info: RequestInfo | None = None,
    ) -> CreatedKey:
        """Create a key in the caller's organization (admins, with a user session)."""
        self._manager(access)
        name = valid_name(name)
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise FieldError("expires_at", "Expiry must be in the future")
        key, prefix = new_key()
        async with self._db.tenant_transaction(access.org_id) as conn:
            record = await key_rows.insert_key(
                conn,
                org_id=access.org_id,
                prefix=prefix,
                key_hash=key_digest(key),
                name=name,
                role=role,
                created_by=access.user_id,
                now=now,
                expires_at=expires_at,
            )
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.API_KEY_CREATED,
                    actor=Actor.of(access.principal),
                    entity_type="api_key",
                    entity_id=record.id,
                    org_id=access.org_id,
                    details={
                        "prefix": prefix,
                        "role": role.value,
                        "expires_at": expires_at.isoformat() if expires_at else None,
                    },
                ),
                info,
            )
        log.info("api_key_created", key_id=str(record.id), org_id=str(access.org_id))
        return CreatedKey(record, key)

    async def list(self, access: OrgAccess) -> list[ApiKeyRecord]:
        """The organization's keys (admins)."""
        self._manager(access)
        async with self._db.tenant_reading(access.org_id) as conn:
            return await key_rows.keys_of(conn, access.org_id)

    async def revoke(
        self, access: OrgAccess, key_id: uuid.UUID, info: RequestInfo | None = None
    ) -> ApiKeyRecord:
        """Revoke a key at once (admins); NotFound for a key of another organization."""
        self._manager(access)
        now = utcnow()
        async with self._db.tenant_transaction(access.org_id) as conn:
            record, revoked = await key_rows.revoke(conn, access.org_id, key_id, now)
            if record is None:
                raise NotFound("API key not found")
            if revoked:
                await self._audit.record(
                    conn,
                    AuditEvent(
                        Action.API_KEY_REVOKED,
                        actor=Actor.of(access.principal),
                        entity_type="api_key",
                        entity_id=key_id,
                        org_id=access.org_id,
                        details={"prefix": record.prefix},
                    ),
                    info,
                )
        return record

    async def authenticate(self, key: str, info: RequestInfo | None = None) -> Principal:
        """The principal a presented key stands for, or InvalidToken (401): malformed,
        unknown, wrong secret, revoked, expired, or its creator no longer able to act."""
        match = _KEY_SHAPE.fullmatch(key)
        if match is None:
            raise InvalidToken()
        prefix = match.group(1)
        async with self._db.read_transaction() as conn:
            found = await key_rows.find_for_auth(conn, self._envelope, prefix)
        # The digest is computed whether or not a row was found, and compared in constant
        # time: the answer's timing must not tell a valid prefix from an invalid one.
        digest = key_digest(key)
        stored = found.key_hash if found is not None else "0" * 64
        if not hmac.compare_digest(stored, digest) or found is None:
            raise InvalidToken()
        record, now = found.key, utcnow()
        if record.revoked_at is not None or (
            record.expires_at is not None and record.expires_at <= now
        ):
            raise InvalidToken()
        if not found.creator.can_sign_in or found.creator_role is None:
            raise InvalidToken()
        if record.last_used_at is None or record.last_used_at <= now - self._touch_interval:
            await self._touch(record, now, info)
        return Principal(
            found.creator,
            None,
            record.org_id,
            weaker(record.role, found.creator_role),
            ApiKeyIdentity(record.id, record.prefix, record.name),
            # A key acts for its creator: it is refused in an organization that requires a
            # second factor while its creator has none, or it would outlast the policy.
            org_requires_mfa=found.org_requires_mfa,
        )

    async def _touch(self, record: ApiKeyRecord, now: datetime, info: RequestInfo | None) -> None:
        async with self._db.tenant_transaction(record.org_id) as conn:
            first = await key_rows.touch(
                conn, record.id, now, stale_before=now - self._touch_interval
            )
            if first:
                await self._audit.record(
                    conn,
                    AuditEvent(
                        Action.API_KEY_FIRST_USED,
                        actor=Actor(record.created_by, record.id),
                        entity_type="api_key",
                        entity_id=record.id,
                        org_id=record.org_id,
                        details={"prefix": record.prefix},
                    ),
                    info,
                )
