"""Bodies of the MFA routes (``/auth/mfa/...``) and of a login that needs its second step.
Unknown fields are refused, as everywhere; no 422 repeats a submitted code or token."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, StringConstraints, model_validator

from authkeep.http.schemas import _In

TotpCode = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{6}$"),
    Field(description="The authenticator app's current 6-digit code"),
]
# Longer than any token we issue (43 characters): a mangled one gets the 401 of an
# unusable token, not a 422.
MfaToken = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    Field(description="The `mfa_token` the login answered with (5 minutes, single use)"),
]
RecoveryCodeText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(description="One of the recovery codes, `xxxx-xxxx-xxxx` (case, dashes, spaces ignored)"),
]


class TotpSetupOut(BaseModel):
    """A pending authenticator-app factor: add it to the app, then confirm with a code."""

    secret: str = Field(description="The shared secret, base32 (for typing it in by hand)")
    otpauth_uri: str = Field(description="The `otpauth://totp/…` URI the QR code holds")
    qr_svg: str = Field(description="The QR code of `otpauth_uri`, an SVG document")


class TotpConfirmIn(_In):
    """``POST /auth/mfa/totp/confirm``."""

    code: TotpCode


class RecoveryCodesOut(BaseModel):
    """A new set of recovery codes, shown this once: each works once, in place of a code."""

    recovery_codes: list[str]


class MfaVerifyIn(_In):
    """``POST /auth/mfa/verify``: the ``mfa_token`` and exactly one of ``code`` and
    ``recovery_code``."""

    mfa_token: MfaToken
    code: TotpCode | None = None
    recovery_code: RecoveryCodeText | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.code is None) == (self.recovery_code is None):
            # Names the fields, never their values.
            raise ValueError("send exactly one of code and recovery_code")
        return self


class MfaRequiredOut(BaseModel):
    """A right password for an account with a second factor: no token yet. Finish with
    ``POST /auth/mfa/verify`` (or a passkey) within 5 minutes."""

    mfa_required: Literal[True] = True
    mfa_token: str = Field(description="Single use; dies after 5 minutes or 5 wrong codes")
    methods: list[str] = Field(
        description="What can finish the login: `totp`, `recovery_code`, `webauthn`"
    )
