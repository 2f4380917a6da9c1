"""The signed export of everything authkeep holds about a user (``GET /auth/me/export``,
docs/privacy.md#export).

One JSON document — profile, memberships, pending invitations, sessions, API keys' metadata,
consents, second factors' metadata, the audit events about the user and the heads of the
audit chains they sit in — read in one database snapshot and signed as a compact JWS with the
token key ring (:mod:`authkeep.security.signed_documents`, ``typ`` ``authkeep-export+jwt``).
With an Ed25519 or RSA key anyone verifies it against ``/.well-known/jwks.json``; the user can
later prove what the service held, and when.

Rules:

* a recent sign-in (the route's step-up dependency), then ``AUTHKEEP_EXPORT_RATE_LIMIT`` per
  user (fails closed: 503 while the limiter is down), counted before any reading: one export
  reads every table about the user and signs;
* never a secret: no password hash, no token or code hash, no TOTP secret, no passkey public
  key, no API key hash;
* nobody else's personal data: in an audit row someone else wrote about the user (a platform
  admin's reset, say), the writer's IP address, request id and ids are left out — only that it
  was *someone else*;
* bounded: the newest :data:`SESSIONS_LIMIT` sessions and :data:`AUDIT_EVENTS_LIMIT` audit
  events, each list saying whether it was ``truncated``;
* audited (``user.exported``) with the SHA-256 of the signed document: the hash-chained audit
  log then also holds proof of which document the service issued.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
import structlog

from authkeep.db import api_keys as key_rows
from authkeep.db import audit as audit_rows
from authkeep.db import consents as consent_rows
from authkeep.db import mfa as mfa_rows
from authkeep.db import orgs as org_rows
from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db import webauthn as webauthn_rows
from authkeep.db.api_keys import ApiKeyRecord
from authkeep.db.base import utcnow
from authkeep.db.consents import ConsentRecord
from authkeep.db.engine import ORG_SETTING, Database, set_local
from authkeep.db.invitations import InvitationRecord
from authkeep.db.sessions import SessionRecord
from authkeep.errors import NotFound
from authkeep.security.assurance import parse_amr
from authkeep.security.envelope import Envelope
from authkeep.security.keys import KeyRing
from authkeep.security.signed_documents import EXPORT_TYPE, document_digest, sign_document
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.audit_admin import ReadEntry, read_entries, snapshot
from authkeep.services.authn import Principal
from authkeep.services.consents import ConsentPolicy
from authkeep.services.context import RequestInfo
from authkeep.services.invitations import Invitations
from authkeep.services.rate_limits import LimitReport, RateLimits

__all__ = [
    "AUDIT_EVENTS_LIMIT",
    "EXPORT_FORMAT",
    "EXPORT_REFUSED",
    "EXPORT_TYPE",
    "SESSIONS_LIMIT",
    "DataExports",
    "SignedExport",
]

log = structlog.get_logger("authkeep.privacy")

EXPORT_FORMAT = "authkeep-export/1"
"""The document's ``format``: what a reader of the JSON can rely on."""
SESSIONS_LIMIT = 1000
"""Sessions in one export, newest first (ended ones stay only until the purge)."""
AUDIT_EVENTS_LIMIT = 1000
"""Audit events in one export, newest first."""
EXPORT_REFUSED = "Too many exports, try again later"


@dataclass(frozen=True, slots=True)
class SignedExport:
    """An export: the document and the compact JWS whose payload is that same document."""

    document: dict[str, Any]
    jws: str


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _bounded(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A list read with ``limit + 1`` rows, as ``{items, truncated, limit}``."""
    return {"items": items[:limit], "truncated": len(items) > limit, "limit": limit}


class DataExports:
    """Builds, signs and audits a user's data export."""

    def __init__(
        self,
        db: Database,
        envelope: Envelope,
        keys: KeyRing,
        audit: AuditLog,
        consents: ConsentPolicy,
        invitations: Invitations,
        limits: RateLimits,
        *,
        issuer: str,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._keys = keys
        self._audit = audit
        self._consents = consents
        self._invitations = invitations
        self._limits = limits
        self._issuer = issuer

    async def export(
        self,
        principal: Principal,
        info: RequestInfo | None = None,
        report: LimitReport | None = None,
    ) -> SignedExport:
        """Everything held about ``principal``'s user, signed. The caller has checked the
        sign-in is recent; RateLimited (429) past ``AUTHKEEP_EXPORT_RATE_LIMIT``,
        LimiterUnavailable (503) when the limiter does not answer."""
        user_id = principal.user.id
        await self._admit(user_id, report)
        invitations = await self._invitations.mine(principal)
        document = await self._collect(principal, invitations)
        jws = sign_document(self._keys, document, typ=EXPORT_TYPE)
        digest = document_digest(document)
        audit = document["audit"]
        await self._audit.record_alone(
            AuditEvent(
                Action.USER_EXPORTED,
                actor=Actor(user_id),
                entity_type="user",
                entity_id=user_id,
                details={
                    "export_id": document["export_id"],
                    "sha256": digest,
                    "kid": jwt.get_unverified_header(jws).get("kid"),
                    "audit_events": len(audit["events"]),
                    "truncated": audit["truncated"] or document["sessions"]["truncated"],
                },
            ),
            info,
        )
        log.info("user_exported", user_id=str(user_id), export_id=document["export_id"])
        return SignedExport(document, jws)

    async def _admit(self, user_id: uuid.UUID, report: LimitReport | None) -> None:
        limits = self._limits
        if not limits.enabled:
            return
        key = f"user:{user_id}"
        decision = await limits.hit("export", limits.config.export, key)
        if report is not None:
            report.note(decision)
        if decision is not None and not decision.allowed:
            log.info("export_rate_limited", user_id=str(user_id), retry_after=decision.retry_after)
            raise decision.refusal(EXPORT_REFUSED, key=key)

    async def _collect(
        self, principal: Principal, invitations: Iterable[InvitationRecord]
    ) -> dict[str, Any]:
        user_id = principal.user.id
        envelope = self._envelope
        # One snapshot: every section, and the chain heads, describe the same moment.
        async with snapshot(self._db) as conn:
            user = await user_rows.get_by_id(conn, envelope, user_id)
            if user is None:
                raise NotFound("User not found")
            orgs = await org_rows.orgs_of(conn, user_id)
            sessions = await session_rows.sessions_of(
                conn, envelope, user_id, limit=SESSIONS_LIMIT + 1
            )
            consents = await consent_rows.for_user(conn, user_id)
            totp = await mfa_rows.get_totp(conn, user_id)
            codes_left = await mfa_rows.count_unused_codes(conn, user_id)
            passkeys = await webauthn_rows.list_for_user(conn, user_id)
            events = await read_entries(
                conn,
                envelope,
                await audit_rows.about_user(conn, user_id, limit=AUDIT_EVENTS_LIMIT + 1),
            )
            # Keys live in their organization's tenant table (row-level security on
            # PostgreSQL): the user's memberships, and organizations the user has since
            # left whose chains record a key they created.
            key_orgs = {org.id for org in orgs} | set(
                await audit_rows.orgs_acted_in(conn, user_id, Action.API_KEY_CREATED)
            )
            keys: list[ApiKeyRecord] = []
            for org_id in sorted(key_orgs):
                await set_local(conn, ORG_SETTING, str(org_id))
                keys += [k for k in await key_rows.keys_of(conn, org_id) if k.created_by == user_id]
            shown = events[:AUDIT_EVENTS_LIMIT]
            chains = list(dict.fromkeys(event.record.org_id for event in shown))
            tips = await audit_rows.chain_tips(conn, chains)
        current = principal.claims.session_id if principal.claims is not None else None
        audit = _bounded([_event(event, user_id) for event in events], AUDIT_EVENTS_LIMIT)
        return {
            "format": EXPORT_FORMAT,
            "export_id": str(uuid.uuid4()),
            "issuer": self._issuer,
            "exported_at": _time(utcnow()),
            "subject": str(user_id),
            "profile": {
                "id": str(user.id),
                "email": user.email,
                "full_name": user.full_name,
                "created_at": _time(user.created_at),
                "is_active": user.is_active,
                "is_platform_admin": user.is_superuser,
                "email_verified_at": _time(user.email_verified_at),
                "mfa_enabled": user.mfa_enabled,
            },
            "memberships": [
                {
                    "org_id": str(org.id),
                    "org_name": org.name,
                    "role": org.role.value,
                    "org_requires_mfa": org.require_mfa,
                }
                for org in orgs
            ],
            "invitations": [
                {
                    "id": str(found.id),
                    "org_id": str(found.org_id),
                    "org_name": found.org_name,
                    "role": found.role.value,
                    "created_at": _time(found.created_at),
                    "expires_at": _time(found.expires_at),
                }
                for found in invitations
            ],
            "sessions": _bounded(
                [_session(record, current) for record in sessions], SESSIONS_LIMIT
            ),
            "api_keys": [_api_key(key) for key in keys],
            "consents": self._consent_list(consents),
            "mfa": {
                "totp": None
                if totp is None
                else {
                    "enrolled_at": _time(totp.created_at),
                    "confirmed_at": _time(totp.confirmed_at),
                },
                "recovery_codes_left": codes_left,
                "passkeys": [
                    {
                        "id": str(key.id),
                        "name": key.name,
                        "created_at": _time(key.created_at),
                        "last_used_at": _time(key.last_used_at),
                        "device_type": key.device_type,
                        "backed_up": key.backed_up,
                        "transports": list(key.transports),
                    }
                    for key in passkeys
                ],
            },
            "audit": {
                "events": audit["items"],
                "truncated": audit["truncated"],
                "limit": AUDIT_EVENTS_LIMIT,
                "chains": [
                    {"chain": chain, "seq": seq, "hash": head}
                    for chain, (seq, head) in tips.items()
                ],
            },
        }

    def _consent_list(self, stored: Mapping[str, ConsentRecord]) -> list[dict[str, Any]]:
        """Every configured purpose (in its order), then any stored decision on a purpose no
        longer configured: the decision held and how it stands today."""
        found = []
        for name, purpose in self._consents.purposes.items():
            state = self._consents.state(name, stored.get(name))
            record = stored.get(name)
            found.append(
                {
                    "purpose": name,
                    "granted": None if record is None else record.granted,
                    "version": None if record is None else record.version,
                    "at": _time(None if record is None else record.at),
                    "current_version": purpose.version,
                    "required": purpose.required,
                    "outstanding": state.outstanding,
                }
            )
        for name, record in stored.items():
            if name not in self._consents.purposes:
                found.append(
                    {
                        "purpose": name,
                        "granted": record.granted,
                        "version": record.version,
                        "at": _time(record.at),
                        "current_version": None,
                        "required": False,
                        "outstanding": False,
                    }
                )
        return found


def _session(record: SessionRecord, current: str | None) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "current": str(record.id) == current,
        "created_at": _time(record.created_at),
        "last_used_at": _time(record.last_used_at),
        "expires_at": _time(record.expires_at),
        "revoked_at": _time(record.revoked_at),
        "ip": record.ip,
        "user_agent": record.user_agent,
        "auth_time": _time(record.auth_time),
        "amr": list(parse_amr(record.amr)),
    }


def _api_key(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "org_id": str(key.org_id),
        "name": key.name,
        "prefix": key.prefix,
        "role": key.role.value,
        "created_at": _time(key.created_at),
        "expires_at": _time(key.expires_at),
        "last_used_at": _time(key.last_used_at),
        "revoked_at": _time(key.revoked_at),
    }


def _event(entry: ReadEntry, user_id: uuid.UUID) -> dict[str, Any]:
    """An audit row as the user sees it. A row another actor wrote about the user keeps what
    happened but not who did it from where: their IP address, request and ids are theirs."""
    row = entry.record
    own = row.actor_user_id == user_id
    if own:
        actor = "you"
    elif row.actor_user_id is None and row.actor_api_key_id is None:
        actor = "system"
    else:
        actor = "someone_else"
    return {
        "seq": row.id,
        "chain": row.chain,
        "at": _time(row.at),
        "action": row.action,
        "outcome": row.outcome,
        "actor": actor,
        "api_key_id": _id(row.actor_api_key_id) if own else None,
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "ip": entry.ip if own else None,
        "request_id": row.request_id if own else None,
        "details": row.details,
        "hash": row.hash,
    }
