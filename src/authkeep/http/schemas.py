"""Request and response bodies. Requests forbid unknown fields: a client cannot slip
``is_superuser``, ``role`` or ``organization_id`` into a body (mass assignment)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from authkeep.http.fields import ChallengeSolution, CleanText, DisplayName
from authkeep.security.password_policy import MAX_LENGTH, MIN_SCORE
from authkeep.settings import MAX_CONSENT_PURPOSES

Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=320),
    Field(json_schema_extra={"format": "email"}),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LENGTH)]
NewPassword = Annotated[
    str,
    StringConstraints(max_length=MAX_LENGTH),
    Field(
        description="8 to 1024 characters; not a common password; must not contain your "
        "email, its local part, your name or 'authkeep'; zxcvbn score 3 or more "
        "(try it with POST /api/v1/auth/password/strength)"
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RegisterIn(_In):
    """``POST /auth/register``."""

    email: Email
    password: NewPassword
    full_name: DisplayName | None = None
    consents: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_CONSENT_PURPOSES,
        description="The consents the user gives at sign-up: purpose -> the version of its "
        'text they were shown, e.g. {"terms": "2026-11"}. Every required purpose of '
        "AUTHKEEP_CONSENT_PURPOSES must be there at its current version (else 422, whatever "
        "the email); purposes left out are not granted (docs/privacy.md)",
    )


class LoginIn(_In):
    """``POST /auth/login``."""

    email: Email
    password: Password
    challenge_solution: ChallengeSolution | None = Field(
        default=None,
        description="Required after failed logins (401 challenge_required): the solved "
        "challenge, see docs/challenge.md",
    )


class RefreshIn(_In):
    """``POST /auth/refresh``."""

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class PasswordChangeIn(_In):
    """``POST /auth/password``."""

    current_password: Password
    new_password: NewPassword


class PasswordStrengthIn(_In):
    """``POST /auth/password/strength``: a candidate password and, optionally, the email
    and name it would go with (they count as words an attacker tries first). The email
    need not be complete: a sign-up form sends what has been typed so far."""

    password: Annotated[str, StringConstraints(max_length=MAX_LENGTH)]
    email: Annotated[CleanText, StringConstraints(max_length=320)] | None = None
    full_name: DisplayName | None = None


class PasswordStrengthOut(BaseModel):
    """How a candidate password fares against the password policy. Never the password."""

    score: int = Field(ge=0, le=4, description="zxcvbn's score: 0 (too guessable) to 4")
    min_score: int = Field(default=MIN_SCORE, description="The score a new password needs")
    acceptable: bool = Field(description="Whether register and password change accept it")
    problems: list[str] = Field(
        description="Every rule it breaks, as register would say it; empty when acceptable"
    )
    warning: str = Field(description="What makes it guessable; empty when nothing stands out")
    suggestions: list[str] = Field(description="How to make it harder to guess")
    guesses_log10: float = Field(description="log10 of the estimated guesses needed")


class UserOut(BaseModel):
    """A user, as every client sees it. Never a hash."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    created_at: datetime
    email_verified: bool = Field(
        description="Whether the owner proved the address (opened a link sent to it)"
    )
    mfa_enabled: bool = Field(
        description="Whether the user has a second factor (an authenticator app or a passkey)"
    )


class MeOut(UserOut):
    """``GET /auth/me``: the user, with what only this route computes."""

    consents_outstanding: list[str] = Field(
        description="Required consent purposes the user has not granted at their current "
        "version (never, withdrawn, or an older version): PUT /api/v1/auth/me/consents/"
        "{purpose} grants one (docs/privacy.md)"
    )


class TokenOut(BaseModel):
    """A token pair."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: UserOut


class SessionOut(BaseModel):
    """One live session of the user."""

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime = Field(description="Absolute end of the session, refreshed or not.")
    idle_expires_at: datetime = Field(
        description="When the session ends unless refreshed first (the idle timeout after "
        "its last refresh; never after expires_at)."
    )
    ip: str | None
    user_agent: str | None
    current: bool


class Health(BaseModel):
    """``GET /health``."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """``GET /health/ready``."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable", "not_configured"]


class ErrorOut(BaseModel):
    """An error."""

    detail: str
