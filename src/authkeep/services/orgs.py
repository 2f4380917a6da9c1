"""Organizations and memberships: create, rename, delete, re-role, remove, switch.

Members join only through invitations (:mod:`authkeep.services.invitations`): nobody becomes
a member without accepting.

Rules (each checked here, so they hold whatever calls the service):

* any member reads the organization and its member list; only admins change them;
* the creator is the first admin; an organization always keeps at least one admin — the last
  admin can neither be demoted nor removed (nor leave): :class:`~authkeep.errors.Conflict`;
* any member may leave (remove themselves);
* a caller who is not a member gets NotFound, never PermissionDenied: an organization's id
  reveals nothing to outsiders;
* API keys manage nothing here (PermissionDenied);
* deleting is soft: the row stays with ``deleted_at`` (the audit trail and the tenant rows
  keep pointing at it), its memberships are removed and its API keys revoked, so every
  member and key loses access on the next request;
* an organization may require a second factor (``require_mfa``, set by its admins with a
  recent sign-in): a member without one gets 403 on its routes, except leaving it and the
  update that turns the policy off (an admin can always undo it).

Each change and its audit row commit in one transaction, in the organization's audit chain.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from authkeep.db import api_keys as key_rows
from authkeep.db import orgs as org_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.orgs import MemberRecord, OrgRecord
from authkeep.errors import Conflict, InvalidToken, NotFound, PermissionDenied
from authkeep.security.assurance import AuthContext
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role
from authkeep.security.text import TextRejected, clean_display_name
from authkeep.security.tokens import TokenCodec
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.authn import Principal
from authkeep.services.authz import ensure_org_mfa
from authkeep.services.context import RequestInfo
from authkeep.services.revocation import UsersChanged
from authkeep.services.step_up import StepUpPolicy

log = structlog.get_logger("authkeep.orgs")

ORG_NOT_FOUND = "Organization not found"
MEMBER_NOT_FOUND = "Member not found"
LAST_ADMIN = "An organization must keep at least one admin: make another member admin first"
NAME_MAX = 100


@dataclass(frozen=True, slots=True)
class OrgToken:
    """An access token scoped to an organization (``POST /auth/switch-org``)."""

    access_token: str
    expires_in: int
    org_id: uuid.UUID
    role: Role


def valid_name(raw: str, field: str = "name") -> str:
    """A display name of 1 to 100 characters (an organization's, an API key's), trimmed and
    NFC-normalised, without control, bidirectional-override or invisible characters
    (:func:`~authkeep.security.text.clean_display_name`); else a FieldError on ``field``."""
    try:
        return clean_display_name(raw, max_length=NAME_MAX)
    except TextRejected as exc:
        raise FieldError(field, f"Name {exc}") from None


def _human(principal: Principal) -> None:
    # Keys are for tenant data; a leaked key must not be able to add its holder as a member
    # or mint more keys (privilege persistence).
    if principal.is_api_key:
        raise PermissionDenied("API keys cannot manage organizations or members")


class Organizations:
    """Use cases on organizations, memberships and the active organization of a session.

    Every membership change ends with ``users_changed`` for the members concerned, after the
    commit: authenticators cache users with their roles, and this is what makes a change
    apply on the member's next request in every worker."""

    def __init__(
        self,
        db: Database,
        codec: TokenCodec,
        audit: AuditLog,
        users_changed: UsersChanged,
        *,
        idle_timeout: timedelta | None = None,
        step_up: StepUpPolicy | None = None,
        envelope: Envelope,
    ) -> None:
        """``idle_timeout``: the sessions' idle timeout (None: their absolute lifetime);
        ``step_up``: the recent-sign-in rule a change of the MFA policy needs (None: the
        default age, 600 s); ``envelope`` opens the members' addresses and names."""
        self._db = db
        self._envelope = envelope
        self._codec = codec
        self._audit = audit
        self._users_changed = users_changed
        self._idle_timeout = idle_timeout if idle_timeout is not None else codec.refresh_ttl
        self._step_up = step_up if step_up is not None else StepUpPolicy(600)

    def _event(
        self,
        action: Action,
        principal: Principal,
        org_id: uuid.UUID,
        *,
        entity_type: str = "organization",
        entity_id: object | None = None,
        details: dict[str, object] | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            action,
            actor=Actor.of(principal),
            entity_type=entity_type,
            entity_id=str(entity_id if entity_id is not None else org_id),
            org_id=org_id,
            details=details or {},
        )

    async def create(
        self, principal: Principal, name: str, info: RequestInfo | None = None
    ) -> OrgRecord:
        """Create an organization; the caller becomes its admin."""
        _human(principal)
        clean = valid_name(name)
        async with self._db.transaction() as conn:
            org = await org_rows.insert_org(
                conn, name=clean, creator=principal.user.id, now=utcnow()
            )
            await self._audit.record(
                conn,
                self._event(Action.ORG_CREATED, principal, org.id, details={"name": clean}),
                info,
            )
        log.info("org_created", org_id=str(org.id), user_id=str(principal.user.id))
        return org

    async def create_and_enter(
        self, principal: Principal, name: str, info: RequestInfo | None = None
    ) -> tuple[OrgRecord, OrgToken | None]:
        """Create an organization; when the caller's session has no active organization
        (its first one), make the new one active and return an access token scoped to it,
        so that the caller can act in it without a second round trip. A caller already
        working in an organization stays there (None): creating another one must not move
        the session's later refreshes elsewhere behind the client's back."""
        org = await self.create(principal, name, info)
        if principal.org_id is not None:
            return org, None
        return org, await self.switch(principal, org.id)

    async def list_mine(self, principal: Principal) -> list[OrgRecord]:
        """The caller's organizations, with the caller's role in each."""
        _human(principal)
        async with self._db.reading() as conn:
            return await org_rows.orgs_of(conn, principal.user.id)

    async def get(self, principal: Principal, org_id: uuid.UUID) -> OrgRecord:
        """One of the caller's organizations; NotFound otherwise."""
        _human(principal)
        async with self._db.reading() as conn:
            org = await org_rows.org_for_member(conn, org_id, principal.user.id)
        if org is None:
            raise NotFound(ORG_NOT_FOUND)
        ensure_org_mfa(principal.user, org.require_mfa)
        return org

    @staticmethod
    def _admin(
        org: OrgRecord | None,
        org_id: uuid.UUID,
        action: str,
        principal: Principal | None = None,
    ) -> OrgRecord:
        """``org`` if the caller is its admin (and, with ``principal``, meets its MFA
        policy); NotFound for a non-member, else PermissionDenied."""
        if org is None:
            raise NotFound(ORG_NOT_FOUND)
        if principal is not None:
            ensure_org_mfa(principal.user, org.require_mfa)
        if org.role is not Role.ADMIN:
            raise PermissionDenied(
                f"Only admins may {action}", entity_type="organization", org_id=org_id
            )
        return org

    async def rename(
        self, principal: Principal, org_id: uuid.UUID, name: str, info: RequestInfo | None = None
    ) -> OrgRecord:
        """Rename an organization (admins)."""
        return await self.update(principal, org_id, name=name, info=info)

    async def update(
        self,
        principal: Principal,
        org_id: uuid.UUID,
        *,
        name: str | None = None,
        require_mfa: bool | None = None,
        info: RequestInfo | None = None,
    ) -> OrgRecord:
        """Rename an organization and/or set its MFA policy (admins; None: unchanged).

        Setting ``require_mfa`` needs a recent sign-in (StepUpRequired, 401), after the admin
        check. An admin without a second factor of an organization that requires one may
        still turn the policy off (and nothing else): the policy never locks its admins out.
        Every member's cached role is dropped when the policy changes, so it applies on their
        next request."""
        _human(principal)
        clean = valid_name(name) if name is not None else None
        members: list[uuid.UUID] = []
        async with self._db.transaction() as conn:
            found = await org_rows.org_for_member(conn, org_id, principal.user.id, lock=True)
            org = self._admin(found, org_id, "change the organization")
            if require_mfa is not False:
                ensure_org_mfa(principal.user, org.require_mfa)
            if require_mfa is not None:
                # A stolen session must not switch the policy of a whole organization.
                self._step_up.require(principal)
            await org_rows.update_org(conn, org_id, utcnow(), name=clean, require_mfa=require_mfa)
            if clean is not None:
                await self._audit.record(
                    conn,
                    self._event(
                        Action.ORG_UPDATED,
                        principal,
                        org_id,
                        details={"from": org.name, "to": clean},
                    ),
                    info,
                )
            if require_mfa is not None and require_mfa != org.require_mfa:
                members = await org_rows.member_ids(conn, org_id)
                await self._audit.record(
                    conn,
                    self._event(
                        Action.ORG_MFA_POLICY,
                        principal,
                        org_id,
                        details={"require_mfa": require_mfa, "members": len(members)},
                    ),
                    info,
                )
        if members:
            await self._users_changed(members)
            log.info("org_mfa_policy", org_id=str(org_id), require_mfa=require_mfa)
        return OrgRecord(
            org.id,
            clean if clean is not None else org.name,
            org.created_at,
            org.role,
            org.require_mfa if require_mfa is None else require_mfa,
        )

    async def delete(
        self, principal: Principal, org_id: uuid.UUID, info: RequestInfo | None = None
    ) -> None:
        """Soft-delete an organization (admins): memberships removed, API keys revoked."""
        _human(principal)
        now = utcnow()
        # Bound to the organization: api_keys is a tenant table under row-level security.
        async with self._db.tenant_transaction(org_id) as conn:
            org = await org_rows.org_for_member(conn, org_id, principal.user.id, lock=True)
            self._admin(org, org_id, "delete the organization", principal)
            former = await org_rows.member_ids(conn, org_id)
            removed = await org_rows.soft_delete_org(conn, org_id, now)
            revoked = await key_rows.revoke_all(conn, org_id, now)
            await self._audit.record(
                conn,
                self._event(
                    Action.ORG_DELETED,
                    principal,
                    org_id,
                    details={"memberships_removed": removed, "api_keys_revoked": revoked},
                ),
                info,
            )
        await self._users_changed(former)
        log.info("org_deleted", org_id=str(org_id), user_id=str(principal.user.id))

    async def members(self, principal: Principal, org_id: uuid.UUID) -> list[MemberRecord]:
        """The members of one of the caller's organizations."""
        _human(principal)
        async with self._db.read_transaction() as conn:
            org = await org_rows.org_for_member(conn, org_id, principal.user.id)
            if org is None:
                raise NotFound(ORG_NOT_FOUND)
            ensure_org_mfa(principal.user, org.require_mfa)
            return await org_rows.members(conn, self._envelope, org_id)

    async def change_role(
        self,
        principal: Principal,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        role: Role,
        info: RequestInfo | None = None,
    ) -> MemberRecord:
        """Change a member's role (admins); the last admin cannot be demoted. Applies on
        the member's next request: roles are read per request, not from tokens."""
        _human(principal)
        async with self._db.transaction() as conn:
            org = await org_rows.org_for_member(conn, org_id, principal.user.id, lock=True)
            self._admin(org, org_id, "change roles", principal)
            target = await org_rows.member(conn, self._envelope, org_id, user_id)
            if target is None:
                raise NotFound(MEMBER_NOT_FOUND)
            if target.role is role:
                return target
            if target.role is Role.ADMIN and await org_rows.count_admins(conn, org_id) <= 1:
                raise Conflict(LAST_ADMIN)
            await org_rows.set_role(conn, org_id, user_id, role, utcnow())
            await self._audit.record(
                conn,
                self._event(
                    Action.MEMBER_ROLE_CHANGED,
                    principal,
                    org_id,
                    entity_type="user",
                    entity_id=user_id,
                    details={"from": target.role.value, "to": role.value},
                ),
                info,
            )
        await self._users_changed([user_id])
        return MemberRecord(target.user_id, target.email, target.full_name, role, target.joined_at)

    async def remove_member(
        self,
        principal: Principal,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        info: RequestInfo | None = None,
    ) -> None:
        """Remove a member (admins), or leave (any member, ``user_id`` = self). The last
        admin cannot go. Applies on the member's next request."""
        _human(principal)
        leaving = user_id == principal.user.id
        async with self._db.transaction() as conn:
            org = await org_rows.org_for_member(conn, org_id, principal.user.id, lock=True)
            if not leaving:
                self._admin(org, org_id, "remove members", principal)
            elif org is None:
                raise NotFound(ORG_NOT_FOUND)
            target = await org_rows.member(conn, self._envelope, org_id, user_id)
            if target is None:
                raise NotFound(MEMBER_NOT_FOUND)
            if target.role is Role.ADMIN and await org_rows.count_admins(conn, org_id) <= 1:
                raise Conflict(LAST_ADMIN)
            await org_rows.remove_member(conn, org_id, user_id)
            await self._audit.record(
                conn,
                self._event(
                    Action.MEMBER_REMOVED,
                    principal,
                    org_id,
                    entity_type="user",
                    entity_id=user_id,
                    details={"role": target.role.value, "left": leaving},
                ),
                info,
            )
        await self._users_changed([user_id])

    async def switch(self, principal: Principal, org_id: uuid.UUID) -> OrgToken:
        """Make ``org_id`` the session's active organization and issue an access token
        scoped to it. The session keeps its id and its refresh token; later refreshes stay
        in this organization (the session row remembers it)."""
        _human(principal)
        session_id = principal.session_id
        async with self._db.transaction() as conn:
            org = await org_rows.org_for_member(conn, org_id, principal.user.id)
            if org is None:
                raise NotFound(ORG_NOT_FOUND)
            ensure_org_mfa(principal.user, org.require_mfa)
            # Only a live session: a switch mints a fresh access token, and repeated switches
            # would otherwise keep a session past its idle timeout and absolute end.
            if not await org_rows.set_session_org(
                conn,
                session_id,
                principal.user.id,
                org_id,
                now=utcnow(),
                idle_timeout=self._idle_timeout,
            ):
                raise InvalidToken()
        access = self._codec.issue_access(
            user_id=str(principal.user.id),
            email=principal.user.email,
            session_id=str(session_id),
            org_id=str(org_id),
            role=org.role.value,
            email_verified=principal.user.email_verified,
            auth=_auth_of(principal),
        )
        expires_in = int((access.expires_at - access.issued_at).total_seconds())
        return OrgToken(access.token, expires_in, org_id, org.role)


def _auth_of(principal: Principal) -> AuthContext | None:
    """The presented token's authentication, kept by a token minted from it (a switch of
    organization is no new sign-in)."""
    claims = principal.claims
    if claims is None:
        return None
    return AuthContext(datetime.fromtimestamp(claims.auth_time, UTC), claims.amr)
