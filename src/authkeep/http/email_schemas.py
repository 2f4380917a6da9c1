"""Request and response bodies of the email flows (``/auth/verify-email``, ``/auth/password/
forgot`` and ``/reset``, ``/auth/email/change`` and ``/confirm``). Unknown fields are
refused, as everywhere."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from authkeep.http.fields import ChallengeSolution, CleanText
from authkeep.http.schemas import Email, NewPassword, Password, _In

# Longer than any token we issue (43 characters), so a mangled link gets the 400 of an
# unusable token (its detail says what to do), not a 422; far shorter than a body limit.
LinkToken = Annotated[
    CleanText,
    StringConstraints(min_length=1, max_length=256),
    Field(description="The token of the link from the email"),
]


class TokenIn(_In):
    """``POST /auth/verify-email`` and ``POST /auth/email/confirm``."""

    token: LinkToken


class EmailIn(_In):
    """``POST /auth/verify-email/resend`` and ``POST /auth/password/forgot``."""

    email: Email


class ForgotPasswordIn(EmailIn):
    """``POST /auth/password/forgot``: after failed logins from this client IP or for this
    email, a solved challenge too (docs/challenge.md)."""

    challenge_solution: ChallengeSolution | None = None


class PasswordResetIn(_In):
    """``POST /auth/password/reset``."""

    token: LinkToken
    new_password: NewPassword


class EmailChangeIn(_In):
    """``POST /auth/email/change``: the current password proves it is the owner asking."""

    new_email: Email
    password: Password


class AcceptedOut(BaseModel):
    """A 202: the request is taken; what happens next arrives by email, if anything."""

    detail: str
