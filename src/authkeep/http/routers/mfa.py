"""``/api/v1/auth/mfa``: the authenticator app (TOTP), recovery codes, and the second step of
a login. The rules live in :mod:`authkeep.services.mfa` (``docs/mfa.md``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from authkeep.http.deps import CurrentPrincipal, Info, RecentPrincipal, get_authkeep
from authkeep.http.limits import report_of
from authkeep.http.mfa_schemas import (
    MfaVerifyIn,
    RecoveryCodesOut,
    TotpConfirmIn,
    TotpSetupOut,
)
from authkeep.http.routers.auth import token_out
from authkeep.http.schemas import TokenOut

router = APIRouter(prefix="/auth/mfa", tags=["mfa"])

_RECENT: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Not authenticated; or the sign-in is too old, or lacks the second "
        'factor: `WWW-Authenticate: Bearer error="insufficient_user_authentication"` '
        "(RFC 9470), step up and retry"
    },
    403: {"description": "An API key: only a person's session may change its factors"},
}
_CODE_LIMIT: dict[int | str, dict[str, Any]] = {
    429: {"description": "AUTHKEEP_MFA_RATE_LIMIT (per user and client IP); see Retry-After"},
    503: {"description": "The rate limiter does not answer: codes are not checked meanwhile"},
}


@router.post(
    "/totp/setup",
    response_model=TotpSetupOut,
    responses={**_RECENT, 409: {"description": "An authenticator app is already set up"}},
)
async def totp_setup(principal: RecentPrincipal, request: Request) -> TotpSetupOut:
    """Start setting up an authenticator app: its secret, ``otpauth://`` URI and QR code.
    Nothing changes until ``/totp/confirm`` gets a correct code; calling this again before
    then replaces the pending secret."""
    setup = await get_authkeep(request).services.totp.setup(principal.user)
    return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.otpauth_uri, qr_svg=setup.qr_svg)


@router.post(
    "/totp/confirm",
    response_model=RecoveryCodesOut,
    responses={
        401: {"description": "Not authenticated"},
        403: {"description": "An API key: only a person's session may change its factors"},
        409: {"description": "No setup pending, or an authenticator app is already set up"},
        422: {"description": "The code is not the app's current one (or not 6 digits)"},
        **_CODE_LIMIT,
    },
)
async def totp_confirm(
    body: TotpConfirmIn, principal: CurrentPrincipal, request: Request, info: Info
) -> RecoveryCodesOut:
    """Confirm the pending authenticator app with its current code: MFA is on, and the
    answer holds 10 recovery codes — shown this once, keep them somewhere safe."""
    codes = await get_authkeep(request).services.totp.confirm(
        principal.user, body.code, info, report_of(request.scope)
    )
    return RecoveryCodesOut(recovery_codes=codes)


@router.delete(
    "/totp",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_RECENT, 404: {"description": "No authenticator app is set up"}},
)
async def totp_delete(principal: RecentPrincipal, request: Request, info: Info) -> Response:
    """Remove the authenticator app (needs a recent sign-in with the second factor). With no
    other factor left, MFA is off and the recovery codes stop working."""
    await get_authkeep(request).services.totp.delete(principal.user, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/recovery-codes",
    response_model=RecoveryCodesOut,
    responses={**_RECENT, 409: {"description": "No second factor is set up"}},
)
async def recovery_codes(
    principal: RecentPrincipal, request: Request, info: Info
) -> RecoveryCodesOut:
    """A new set of 10 recovery codes, shown this once; the previous set stops working."""
    codes = await get_authkeep(request).services.recovery_codes.regenerate(principal.user, info)
    return RecoveryCodesOut(recovery_codes=codes)


@router.post(
    "/verify",
    response_model=TokenOut,
    responses={
        401: {
            "description": "`Invalid code` (wrong, replayed, older or spent); or the "
            "`mfa_token` is unknown, used, expired or dead after 5 wrong codes: sign in again"
        },
        422: {"description": "Not exactly one of `code` and `recovery_code`"},
        **_CODE_LIMIT,
    },
)
async def verify(body: MfaVerifyIn, request: Request, info: Info) -> TokenOut:
    """Finish a login that answered ``mfa_required``: its ``mfa_token`` and the app's
    current ``code`` or one ``recovery_code``. Tokens carry ``amr`` ``["pwd", "otp"]`` or
    ``["pwd", "rc"]`` (``acr`` ``aal2``)."""
    pair = await get_authkeep(request).services.mfa_logins.verify_code(
        body.mfa_token,
        info,
        code=body.code,
        recovery_code=body.recovery_code,
        report=report_of(request.scope),
    )
    return token_out(pair)
