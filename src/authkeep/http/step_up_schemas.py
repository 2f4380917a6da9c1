"""Bodies of ``POST /api/v1/auth/step-up``."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from authkeep.http.schemas import Password

# Six digits; apps show them as "123 456", so spaces may come along.
TotpCode = Annotated[str, StringConstraints(pattern=r"^[0-9 ]{6,12}$")]


class StepUpIn(BaseModel):
    """``{password}`` or ``{code}`` (the current TOTP code): exactly one."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    password: Password | None = Field(default=None, description="The account's password")
    code: TotpCode | None = Field(
        default=None, description="The authenticator app's current 6-digit code"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.password is None) == (self.code is None):
            # The message names the fields, never their values (422s echo nothing).
            raise ValueError("send exactly one of password and code")
        return self


class StepUpOut(BaseModel):
    """A new access token of the same session, carrying the fresh sign-in. The refresh
    token is unchanged: later refreshes carry the new sign-in too."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    auth_time: int = Field(description="When the user last authenticated (epoch seconds)")
    amr: list[str] = Field(description='The methods used (RFC 8176): e.g. ["pwd", "otp"]')
    acr: Literal["aal1", "aal2"] = Field(description="The assurance level they reach")
