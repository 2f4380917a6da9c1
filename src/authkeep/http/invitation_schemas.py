"""Bodies of the invitation routes (``/orgs/{id}/invitations``, ``/auth/invitations``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from authkeep.http.fields import CleanText
from authkeep.http.org_schemas import RoleName
from authkeep.http.schemas import Email
from authkeep.security.permissions import Role

INVITATION_QUEUED = "Invitation queued"

LinkToken = Annotated[CleanText, StringConstraints(min_length=1, max_length=512)]
"""A token from an email link (opaque; never echoed)."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InvitationIn(_In):
    """``POST /orgs/{id}/invitations``: invite an email address with a role."""

    email: Email
    role: RoleName = "viewer"


class InvitationQueuedOut(BaseModel):
    """The same answer whether or not the address has an account."""

    detail: str = INVITATION_QUEUED


class AcceptIn(_In):
    """``POST /auth/invitations/accept``: the link's ``token``, or an ``invitation_id`` from
    ``GET /auth/invitations`` — exactly one of them."""

    token: LinkToken | None = None
    invitation_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.token is None) == (self.invitation_id is None):
            raise ValueError("send exactly one of token and invitation_id")
        return self


class InvitationOut(BaseModel):
    """A pending invitation (never its token)."""

    id: uuid.UUID
    org_id: uuid.UUID
    org_name: str
    email: str
    role: Role
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
