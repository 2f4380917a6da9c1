"""Request and response bodies of account deletion (``DELETE /auth/me``, ``POST
/auth/me/deletion/cancel``, ``DELETE /admin/users/{id}``). Unknown fields are refused, as
everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, StringConstraints

from authkeep.http.email_schemas import LinkToken
from authkeep.http.fields import CleanText
from authkeep.http.schemas import Password, _In


class DeleteMeIn(_In):
    """``DELETE /auth/me``: the current password proves it is the owner asking."""

    password: Password


class DeletionOut(BaseModel):
    """A deletion taken: the account is locked now and erased at ``deletion_at`` (now, with
    no grace period); until then the emailed link cancels it."""

    deletion_at: datetime


class CancelDeletionIn(_In):
    """``POST /auth/me/deletion/cancel``: the token of the emailed link."""

    token: LinkToken


class AdminDeleteIn(_In):
    """``DELETE /admin/users/{id}``: why (kept in the audit log, which outlives the
    account: write no personal data in it)."""

    # At least one visible character: blanks are no reason.
    reason: Annotated[CleanText, StringConstraints(min_length=1, max_length=500, pattern=r"\S")]


class OrganizationRef(BaseModel):
    """An organization named by a refusal."""

    id: str
    name: str


class SoleAdminOut(BaseModel):
    """409: the account is the only admin of these organizations, which have other members;
    another member must become admin first."""

    detail: str
    organizations: list[OrganizationRef]
