"""Authorization inside an organization: the service-level rules, usable without HTTP.

Two levels, both needed:

* **route level** — :func:`org_access` (behind ``require_role("editor")``): the caller has an
  active organization and at least this role in it, else 403;
* **service level** — :meth:`OrgAccess.ensure_can_write` on the row being changed: admins
  change anything, editors only what they own, viewers nothing (403). A row of another
  organization is never found in the first place (404), so its id tells the caller nothing.

Roles are the current ones, never the token's: read from the database, or from a per-worker
cache that every role change invalidates at once (see :mod:`authkeep.services.authn`).

An organization may require a second factor (``require_mfa``): a member without one
(``users.mfa_enabled`` false) is refused its routes with 403 :data:`MFA_REQUIRED`
(:class:`~authkeep.errors.SecondFactorRequired`, not audited: a pending enrolment) — the
token-scoped ones here (:func:`org_access`), the ``/orgs/{id}`` ones in the services
(:func:`ensure_org_mfa`). Enrolment routes check no organization, so they stay reachable.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from authkeep.db.users import UserRecord
from authkeep.errors import PermissionDenied, SecondFactorRequired
from authkeep.security.permissions import Role
from authkeep.services.authn import ApiKeyIdentity, Principal

NO_ORG = (
    "No active organization: this token is not scoped to one. Call POST "
    '/api/v1/auth/switch-org with {"org_id": ...} and use the access_token it returns '
    "(creating your first organization returns one already)"
)
NOT_MEMBER = "Not a member of the active organization (any more)"
MFA_REQUIRED = SecondFactorRequired.detail


@dataclass(frozen=True, slots=True)
class OrgAccess:
    """What the caller may do in its active organization: who (``user``, or an API key
    acting for its creator), where (``org_id``) and how much (``role``)."""

    principal: Principal
    org_id: uuid.UUID
    role: Role

    @property
    def user(self) -> UserRecord:
        """The user (for an API key: its creator)."""
        return self.principal.user

    @property
    def user_id(self) -> uuid.UUID:
        """The id of :attr:`user`: what ``owner_id`` columns store."""
        return self.principal.user.id

    @property
    def api_key(self) -> ApiKeyIdentity | None:
        """The API key used, if any."""
        return self.principal.api_key

    @property
    def is_api_key(self) -> bool:
        """True for an API key."""
        return self.principal.is_api_key

    def at_least(self, minimum: Role | str) -> bool:
        """Whether the role grants ``minimum``."""
        return self.role.at_least(minimum)

    def require(self, minimum: Role | str) -> None:
        """PermissionDenied unless the role grants ``minimum``."""
        if not self.role.at_least(minimum):
            raise PermissionDenied(
                f"Requires the {Role(minimum).value} role or higher", org_id=self.org_id
            )

    def can_write(self, owner_id: uuid.UUID | None) -> bool:
        """Whether the caller may change or delete a row owned by ``owner_id``: admins
        anything, editors their own rows, viewers nothing."""
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.EDITOR and owner_id is not None and owner_id == self.user_id

    def ensure_can_write(
        self,
        owner_id: uuid.UUID | None,
        *,
        entity_type: str | None = None,
        entity_id: object | None = None,
    ) -> None:
        """PermissionDenied unless :meth:`can_write`; ``entity_*`` go to the audit log."""
        if not self.can_write(owner_id):
            detail = (
                "Only the owner or an admin may change this"
                if self.role is Role.EDITOR
                else "Viewers may only read"
            )
            raise PermissionDenied(
                detail, entity_type=entity_type, entity_id=entity_id, org_id=self.org_id
            )

    def ensure_human(self, what: str = "This action") -> None:
        """PermissionDenied for an API key (keys cannot manage keys or members)."""
        if self.is_api_key:
            raise PermissionDenied(f"{what} needs a user session; API keys cannot do it")


def ensure_org_mfa(user: UserRecord, require_mfa: bool) -> None:
    """SecondFactorRequired (403, :data:`MFA_REQUIRED`) when the organization requires a
    second factor and ``user`` has none."""
    if require_mfa and not user.mfa_enabled:
        raise SecondFactorRequired()


def org_access(principal: Principal, minimum: Role | str = Role.VIEWER) -> OrgAccess:
    """The caller's access to its active organization, or PermissionDenied (403): no active
    organization, no longer a member, the organization requires a second factor the user
    (for an API key: its creator) lacks, or a role below ``minimum``."""
    if principal.org_id is None or principal.role is None:
        scoped = principal.claims is not None and principal.claims.org_id is not None
        raise PermissionDenied(NOT_MEMBER if scoped else NO_ORG)
    ensure_org_mfa(principal.user, principal.org_requires_mfa)
    access = OrgAccess(principal, principal.org_id, principal.role)
    access.require(minimum)
    return access
