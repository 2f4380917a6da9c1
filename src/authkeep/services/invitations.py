"""Invitations: the only way into an organization other than creating it.

An org admin invites an email address with a role; the address gets a link with a
single-use token (through the outbox, in the transaction that writes the invitation); the
membership exists only once the invitee — signed in, with that address *verified* —
accepts. Rules, each checked here:

* **No oracle.** Inviting answers the same whether or not the address has an account: no
  account is looked up, and an address that already belongs to a member gets nothing (no
  row, no email) — the admin can read the member list anyway. The per-recipient and per-IP
  mail limits are counted the same way for every address; beyond them the invitation is
  still written, only its email is skipped.
* **Roles**: an admin invites with any role up to their own (:meth:`Role.at_least`).
* **Re-inviting** an address with a pending invitation revokes that one (its link stops
  working) and writes a new one with a new token, role and expiry.
* **Accepting** needs the signed-in user's folded email to equal the invitation's and the
  address to be verified. An invitation that is not the caller's is NotFound, exactly like
  one that does not exist, whether it was named by id or by token. In
  ``AUTHKEEP_EMAIL_VERIFICATION=off`` nobody verifies, so the token itself (which only the
  address received) stands in for the proof; by id, a verified address is still required.
* **Single use, atomically**: accept, decline and revoke are one conditional update each
  (``WHERE`` still pending); of two concurrent accepts one wins, the other gets 400.
* Accepted, declined, revoked and expired invitations are 400 with a detail saying which.
* API keys neither invite nor accept (PermissionDenied).

Every step writes one audit row in the organization's chain, in the transaction of the
change (``invitation.created``, ``.revoked``, ``.accepted``, ``.declined``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import invitations as rows
from authkeep.db import orgs as org_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.invitations import InvitationRecord
from authkeep.db.orgs import MemberRecord
from authkeep.errors import InvitationUnusable, NotFound, PermissionDenied
from authkeep.security.email_tokens import EmailTokenKey
from authkeep.security.emails import InvalidEmail, email_key, normalize_email
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role
from authkeep.services.accounts import FieldError
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.authn import Principal
from authkeep.services.authz import ensure_org_mfa
from authkeep.services.context import RequestInfo
from authkeep.services.email_flows.limits import MailLimits
from authkeep.services.mail import Mailer
from authkeep.services.orgs import ORG_NOT_FOUND

log = structlog.get_logger("authkeep.invitations")

TEMPLATE = "invitation"
INVITATION_NOT_FOUND = "Invitation not found"
NOT_VERIFIED = "Verify your email address before accepting an invitation"
_UNUSABLE = {
    "accepted": "This invitation was already accepted",
    "declined": "This invitation was declined",
    "revoked": "This invitation was revoked",
    "expired": "This invitation has expired: ask for a new one",
}

Verification = Literal["required", "optional", "off"]


def _human(principal: Principal) -> None:
    # A leaked API key must not invite its holder into the organization (persistence), nor
    # accept on a user's behalf.
    if principal.is_api_key:
        raise PermissionDenied("API keys cannot manage invitations")


def valid_email(raw: str) -> tuple[str, str]:
    """The stored and folded forms of an invited address; a FieldError on ``email``."""
    try:
        stored = normalize_email(raw)
    except InvalidEmail as exc:
        raise FieldError("email", str(exc)) from None
    return stored, email_key(stored)


class Invitations:
    """Use cases on invitations: invite, list, revoke (org admins); list, accept, decline
    (the invitee)."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        mailer: Mailer,
        tokens: EmailTokenKey,
        users_changed: Callable[[list[uuid.UUID]], Awaitable[None]],
        *,
        expire: timedelta = timedelta(days=7),
        verification: Verification = "optional",
        limits: MailLimits | None = None,
        envelope: Envelope,
    ) -> None:
        """``expire``: how long an invitation stays acceptable; ``verification``: the
        ``AUTHKEEP_EMAIL_VERIFICATION`` mode; ``limits``: the mail abuse limits (None: no
        limits, for tests of other rules); ``envelope`` seals the invited addresses and opens
        the accounts' ones."""
        self._db = db
        self._envelope = envelope
        self._audit = audit
        self._mailer = mailer
        self._tokens = tokens
        self._users_changed = users_changed
        self._expire = expire
        self._verification = verification
        self._limits = limits

    @staticmethod
    def _event(
        action: Action,
        principal: Principal,
        invitation_id: uuid.UUID,
        org_id: uuid.UUID,
        details: dict[str, object],
    ) -> AuditEvent:
        # The address is personal data: the row names the invitation, which holds it.
        return AuditEvent(
            action,
            actor=Actor.of(principal),
            entity_type="invitation",
            entity_id=str(invitation_id),
            org_id=org_id,
            details=details,
        )

    async def _admin_of(
        self, conn: AsyncConnection, principal: Principal, org_id: uuid.UUID, action: str
    ) -> org_rows.OrgRecord:
        org = await org_rows.org_for_member(conn, org_id, principal.user.id, lock=True)
        if org is None:
            raise NotFound(ORG_NOT_FOUND)
        ensure_org_mfa(principal.user, org.require_mfa)
        if org.role is not Role.ADMIN:
            raise PermissionDenied(
                f"Only admins may {action}", entity_type="organization", org_id=org_id
            )
        return org

    # -- the organization's side -----------------------------------------------------------

    async def invite(
        self,
        principal: Principal,
        org_id: uuid.UUID,
        email: str,
        role: Role,
        info: RequestInfo | None = None,
    ) -> None:
        """Invite ``email`` into ``org_id`` with ``role`` (admins). Returns nothing on
        purpose: the caller learns nothing about the address."""
        _human(principal)
        stored, key = valid_email(email)
        # Counted before anything about the address is known (account, membership), the
        # same way for every address: a spent recipient budget skips the email only.
        mailed = await self._limits.admit(key, info.ip if info else None) if self._limits else True
        now = utcnow()
        async with self._db.transaction() as conn:
            org = await self._admin_of(conn, principal, org_id, "invite members")
            if not org.role.at_least(role):
                raise PermissionDenied(
                    "You cannot invite with a role above your own",
                    entity_type="organization",
                    org_id=org_id,
                )
            if await org_rows.has_member_with_email(conn, self._envelope, org_id, key):
                # Nothing to do, and nothing to say: the admin can read the member list.
                return
            replaced = await rows.revoke_pending(conn, self._envelope, org_id, key, now)
            issued = self._tokens.issue()
            invitation_id = await rows.insert_invitation(
                conn,
                self._envelope,
                org_id=org_id,
                email=stored,
                email_key=key,
                role=role,
                token_hash=issued.hash,
                invited_by=principal.user.id,
                now=now,
                expires_at=now + self._expire,
            )
            if mailed:
                await self._mailer.enqueue(
                    conn,
                    TEMPLATE,
                    stored,
                    {
                        "token": issued.token,
                        "org_name": org.name,
                        "role": role.value,
                        "inviter_name": principal.user.full_name,
                        "expires_days": self._expire.days,
                    },
                    dedup_key=f"invitation:{invitation_id}",
                )
            details: dict[str, object] = {"role": role.value, "emailed": mailed}
            if replaced:
                details["replaced"] = [str(old) for old in replaced]
            await self._audit.record(
                conn,
                self._event(Action.INVITATION_CREATED, principal, invitation_id, org_id, details),
                info,
            )
        log.info("invitation_created", org_id=str(org_id), invitation_id=str(invitation_id))

    async def pending_for_org(
        self, principal: Principal, org_id: uuid.UUID
    ) -> list[InvitationRecord]:
        """The organization's pending invitations (admins)."""
        _human(principal)
        async with self._db.read_transaction() as conn:
            org = await org_rows.org_for_member(conn, org_id, principal.user.id)
            if org is None:
                raise NotFound(ORG_NOT_FOUND)
            ensure_org_mfa(principal.user, org.require_mfa)
            if org.role is not Role.ADMIN:
                raise PermissionDenied(
                    "Only admins may list invitations", entity_type="organization", org_id=org_id
                )
            return await rows.pending_for_org(conn, self._envelope, org_id, utcnow())

    async def revoke(
        self,
        principal: Principal,
        org_id: uuid.UUID,
        invitation_id: uuid.UUID,
        info: RequestInfo | None = None,
    ) -> None:
        """Revoke a pending invitation (admins); NotFound when the organization has no such
        pending invitation."""
        _human(principal)
        async with self._db.transaction() as conn:
            await self._admin_of(conn, principal, org_id, "revoke invitations")
            if not await rows.revoke(conn, org_id, invitation_id, utcnow()):
                raise NotFound(INVITATION_NOT_FOUND)
            await self._audit.record(
                conn,
                self._event(Action.INVITATION_REVOKED, principal, invitation_id, org_id, {}),
                info,
            )

    # -- the invitee's side ----------------------------------------------------------------

    async def mine(self, principal: Principal) -> list[InvitationRecord]:
        """The caller's pending invitations: those of their address, once it is verified
        (an unverified address may not be the caller's)."""
        _human(principal)
        async with self._db.read_transaction() as conn:
            me = await rows.invitee(conn, self._envelope, principal.user.id)
            if me is None or not me.email_verified:
                return []
            return await rows.for_email(conn, self._envelope, me.email_key, utcnow())

    async def _find_own(
        self,
        conn: AsyncConnection,
        principal: Principal,
        *,
        token: str | None,
        invitation_id: uuid.UUID | None,
    ) -> InvitationRecord:
        """The caller's invitation, checked: theirs, their address proven, still pending."""
        me = await rows.invitee(conn, self._envelope, principal.user.id)
        found = None
        if token is not None:
            # One hash per secret of the ring (none when not even shaped like a token): an
            # invitation sent before a key rotation still opens.
            for digest in self._tokens.hashes(token):
                found = await rows.by_token_hash(conn, self._envelope, digest)
                if found is not None:
                    break
        elif invitation_id is not None:
            found = await rows.by_id(conn, self._envelope, invitation_id)
        # Someone else's invitation looks exactly like a missing one, even to a caller who
        # holds its token: a leaked or forwarded link grants nothing to another account.
        if me is None or found is None or found.email_key != me.email_key:
            raise NotFound(INVITATION_NOT_FOUND)
        proven = me.email_verified or (self._verification == "off" and token is not None)
        if not proven:
            # Otherwise whoever registered an address they do not own would collect the
            # invitations meant for its owner.
            raise PermissionDenied(
                NOT_VERIFIED,
                entity_type="invitation",
                entity_id=found.id,
                org_id=found.org_id,
            )
        state = found.state(utcnow())
        if state != "pending":
            raise InvitationUnusable(_UNUSABLE[state])
        return found

    async def accept(
        self,
        principal: Principal,
        *,
        token: str | None = None,
        invitation_id: uuid.UUID | None = None,
        info: RequestInfo | None = None,
    ) -> MemberRecord:
        """Accept an invitation named by its link's token or by its id: the caller becomes a
        member with the invited role (an existing membership is left as it is)."""
        _human(principal)
        user = principal.user
        now = utcnow()
        async with self._db.transaction() as conn:
            found = await self._find_own(conn, principal, token=token, invitation_id=invitation_id)
            if not await org_rows.lock_org(conn, found.org_id):
                raise NotFound(INVITATION_NOT_FOUND)
            if not await rows.mark_accepted(conn, found.id, user.id, now):
                # A concurrent accept (or decline, revoke) settled it first.
                raise InvitationUnusable("This invitation is no longer pending")
            joined = True
            try:
                await org_rows.insert_member(
                    conn,
                    org_id=found.org_id,
                    user_id=user.id,
                    role=found.role,
                    now=now,
                    origin=org_rows.INVITATION,
                )
            except org_rows.AlreadyMember:
                joined = False
            member = await org_rows.member(conn, self._envelope, found.org_id, user.id)
            if member is None:  # the user row went away under us
                raise NotFound(INVITATION_NOT_FOUND)
            await self._audit.record(
                conn,
                self._event(
                    Action.INVITATION_ACCEPTED,
                    principal,
                    found.id,
                    found.org_id,
                    {"role": found.role.value, "user_id": str(user.id), "joined": joined},
                ),
                info,
            )
        await self._users_changed([user.id])
        log.info("invitation_accepted", org_id=str(found.org_id), invitation_id=str(found.id))
        return member

    async def decline(
        self, principal: Principal, invitation_id: uuid.UUID, info: RequestInfo | None = None
    ) -> None:
        """Decline one of the caller's pending invitations."""
        _human(principal)
        async with self._db.transaction() as conn:
            found = await self._find_own(conn, principal, token=None, invitation_id=invitation_id)
            if not await rows.decline(conn, found.id, utcnow()):
                raise InvitationUnusable("This invitation is no longer pending")
            await self._audit.record(
                conn,
                self._event(Action.INVITATION_DECLINED, principal, found.id, found.org_id, {}),
                info,
            )
