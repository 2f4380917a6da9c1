"""Bodies of the organization, member, API-key and platform-admin routes.

Requests forbid unknown fields: ``is_superuser``, ``organization_id``, ``owner_id`` and the
like cannot ride along in a body (mass assignment). Where a role *is* a field (inviting,
changing a member's, creating a key) it is validated against the three roles.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from authkeep.http.fields import CleanText, Name, UTCDatetime
from authkeep.security.permissions import Role

RoleName = Literal["admin", "editor", "viewer"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgIn(_In):
    """``POST /orgs``, ``PATCH /orgs/{id}``."""

    name: Name


class OrgPatchIn(_In):
    """``PATCH /orgs/{id}`` (admins): a new name, the MFA policy, or both. Setting
    ``require_mfa`` needs a recent sign-in (step-up)."""

    name: Name | None = None
    require_mfa: bool | None = Field(
        default=None,
        description="Members without a second factor are refused the organization's routes "
        "(403) until they enrol one",
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.name is None and self.require_mfa is None:
            raise ValueError("send name, require_mfa or both")
        return self


class OrgOut(BaseModel):
    """An organization, with the caller's role in it."""

    id: uuid.UUID
    name: str
    created_at: datetime
    role: Role
    require_mfa: bool = Field(
        default=False, description="Whether members need a second factor (two-factor policy)"
    )


class MemberRoleIn(_In):
    """``PATCH /orgs/{id}/members/{user_id}``."""

    role: RoleName


class MemberOut(BaseModel):
    """One member of an organization."""

    user_id: uuid.UUID
    email: str
    full_name: str | None
    role: Role
    joined_at: datetime


class SwitchOrgIn(_In):
    """``POST /auth/switch-org``."""

    org_id: uuid.UUID


class OrgTokenOut(BaseModel):
    """A new access token scoped to the organization; the refresh token is unchanged."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    org_id: uuid.UUID
    role: Role


class OrgCreatedOut(OrgOut):
    """``POST /orgs``: the organization; and, when it became the session's active one (the
    caller had none), an access token scoped to it (the refresh token is unchanged).
    Otherwise the token fields are null: ``POST /auth/switch-org`` enters it."""

    access_token: str | None = None
    token_type: Literal["bearer"] | None = None
    expires_in: int | None = None


class ApiKeyIn(_In):
    """``POST /api-keys``: a key for the caller's active organization."""

    name: Name
    role: RoleName = "viewer"
    expires_at: UTCDatetime | None = None


class ApiKeyOut(BaseModel):
    """A key as listed: never its secret or its hash."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    prefix: str
    role: Role
    created_by: uuid.UUID
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    """A new key: ``key`` is shown this once and cannot be retrieved again."""

    key: str


class AdminUserOut(BaseModel):
    """A user, as a platform admin sees it (still never a hash)."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    deleted_at: datetime | None


class AdminUserPage(BaseModel):
    """A page of users."""

    items: list[AdminUserOut]
    total: int
    offset: int
    limit: int


class AdminUserPatch(_In):
    """``PATCH /admin/users/{id}``: only activation; roles and superuser status are not
    settable through the API."""

    is_active: bool


class AdminMfaResetIn(_In):
    """``POST /admin/users/{id}/mfa/reset``: why (kept in the audit log)."""

    reason: Annotated[CleanText, StringConstraints(min_length=1, max_length=500)]
