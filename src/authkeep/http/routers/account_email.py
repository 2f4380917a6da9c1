"""``/api/v1/auth``: the email flows — verification, forgot/reset password, email change.

Thin: each route validates its body and calls one use case of
:mod:`authkeep.services.email_flows`. The open routes that may send mail answer 202 with a
fixed body whatever the address (see ``docs/security-model.md``, "Accounts by email").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status

from authkeep.http.deps import Info, RecentPrincipal, get_authkeep
from authkeep.http.email_schemas import (
    AcceptedOut,
    EmailChangeIn,
    EmailIn,
    ForgotPasswordIn,
    PasswordResetIn,
    TokenIn,
)
from authkeep.http.limits import limit_per_user, report_of
from authkeep.http.routers.auth import user_out
from authkeep.http.schemas import UserOut

router = APIRouter(prefix="/auth", tags=["auth"])

RESEND_ACCEPTED = (
    "If an account with an unverified address uses this email, a new verification link "
    "is on its way"
)
FORGOT_ACCEPTED = "If an account uses this email, a link to reset its password is on its way"
CHANGE_ACCEPTED = (
    "A confirmation link is on its way to the new address; nothing changes until it is opened"
)

_400: dict[int | str, dict[str, Any]] = {
    400: {"description": "The link's token is invalid, used, expired or replaced by a newer one"}
}
_401: dict[int | str, dict[str, Any]] = {401: {"description": "Missing or invalid credentials"}}
_MAIL: dict[int | str, dict[str, Any]] = {
    429: {"description": "This client asked for too many emails; see Retry-After"},
    503: {"description": "The rate limiter is unreachable: mail requests are refused"},
}


@router.post("/verify-email", response_model=UserOut, responses=_400)
async def verify_email(body: TokenIn, request: Request, info: Info) -> UserOut:
    """Prove the address with the link from the verification email."""
    user = await get_authkeep(request).services.email_flows.signup.verify(body.token, info)
    return user_out(user)


@router.post(
    "/verify-email/resend",
    response_model=AcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_MAIL,
)
async def resend_verification(body: EmailIn, request: Request, info: Info) -> AcceptedOut:
    """Send a new verification link. The same answer whatever the address."""
    await get_authkeep(request).services.email_flows.signup.resend(
        body.email, info, report_of(request.scope)
    )
    return AcceptedOut(detail=RESEND_ACCEPTED)


@router.post(
    "/password/forgot",
    response_model=AcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_MAIL,
)
async def forgot_password(body: ForgotPasswordIn, request: Request, info: Info) -> AcceptedOut:
    """Send a password-reset link. The same answer, in the same time, whatever the address.
    After failed logins, a solved challenge first (a sprayer cannot pivot to this route)."""
    services = get_authkeep(request).services
    await services.login_throttle.guard(body.email, info, body.challenge_solution)
    await services.email_flows.recovery.forgot(body.email, info, report_of(request.scope))
    return AcceptedOut(detail=FORGOT_ACCEPTED)


@router.post("/password/reset", status_code=status.HTTP_204_NO_CONTENT, responses=_400)
async def reset_password(body: PasswordResetIn, request: Request, info: Info) -> Response:
    """Choose a new password with the link from the reset email; every session ends."""
    await get_authkeep(request).services.email_flows.recovery.reset(
        body.token, body.new_password, info
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/email/change",
    response_model=AcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**_401, **_MAIL},
    # The password is checked here as in a password change: one budget for both, per user,
    # so a stolen access token cannot be used to guess it.
    dependencies=[Depends(limit_per_user("password_change"))],
)
async def change_email(
    body: EmailChangeIn, principal: RecentPrincipal, request: Request, info: Info
) -> AcceptedOut:
    """Ask to move the account to another address: a link goes to the new address, a notice
    to the current one. Nothing changes until the link is opened. Needs a recent sign-in
    (and the second factor, when enrolled): else 401 ``insufficient_user_authentication``."""
    await get_authkeep(request).services.email_flows.email_change.request(
        principal.user,
        new_email=body.new_email,
        password=body.password,
        info=info,
        report=report_of(request.scope),
    )
    return AcceptedOut(detail=CHANGE_ACCEPTED)


@router.post(
    "/email/confirm",
    response_model=UserOut,
    responses={**_400, 409: {"description": "Another account uses this address now"}},
)
async def confirm_email(body: TokenIn, request: Request, info: Info) -> UserOut:
    """Confirm an email change with the link sent to the new address."""
    user = await get_authkeep(request).services.email_flows.email_change.confirm(body.token, info)
    return user_out(user)
