"""Request and response bodies. Requests forbid unknown fields: a client cannot slip
``is_superuser``, ``role`` or ``organization_id`` into a body (mass assignment)."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from authkeep.security.password_policy import MAX_LENGTH

Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=320),
    Field(json_schema_extra={"format": "email"}),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LENGTH)]
NewPassword = Annotated[
    str,
    StringConstraints(max_length=MAX_LENGTH),
    Field(description="8 to 1024 characters; not a common password, not your email"),
]


def _no_control_characters(value: str) -> str:
    # NUL makes PostgreSQL refuse the row (a 500), and other control characters (newlines,
    # escapes) let a name forge lines in logs and admin screens. Zero-width joiners stay
    # allowed: several scripts need them in ordinary names.
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


DisplayName = Annotated[
    str, StringConstraints(max_length=200), AfterValidator(_no_control_characters)
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RegisterIn(_In):
    """``POST /auth/register``."""

    email: Email
    password: NewPassword
    full_name: DisplayName | None = None


class LoginIn(_In):
    """``POST /auth/login``."""

    email: Email
    password: Password


class RefreshIn(_In):
    """``POST /auth/refresh``."""

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class PasswordChangeIn(_In):
    """``POST /auth/password``."""

    current_password: Password
    new_password: NewPassword


class UserOut(BaseModel):
    """A user, as every client sees it. Never a hash."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    created_at: datetime


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
    expires_at: datetime
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
