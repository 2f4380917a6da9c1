"""``POST /api/v1/auth/step-up``: re-authenticate without ending the session.

The answer to RFC 9470's ``insufficient_user_authentication``: the signed-in user gives the
password or a TOTP code again and gets an access token of the same session whose
``auth_time`` is now (and, with a code, ``acr`` ``aal2``). The rules live in
:class:`authkeep.services.step_up.StepUp`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from authkeep.http.deps import CurrentPrincipal, Info, get_authkeep
from authkeep.http.limits import limit_per_user, report_of
from authkeep.http.step_up_schemas import StepUpIn, StepUpOut

router = APIRouter(prefix="/auth", tags=["auth"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated, or an incorrect password or code"},
    403: {"description": "An API key: only a person's session can step up"},
    422: {"description": "Not exactly one of password and code; or a code without a factor"},
    429: {
        "description": "Too many attempts: the per-user budget, or the failed logins of the "
        "account or client IP; see Retry-After"
    },
}


@router.post(
    "/step-up",
    response_model=StepUpOut,
    responses=_RESPONSES,
    # One budget, per user, for every password check behind an access token (password
    # change, email change, step-up): a stolen token must not become a password oracle.
    dependencies=[Depends(limit_per_user("password_change"))],
)
async def step_up(
    body: StepUpIn, principal: CurrentPrincipal, request: Request, info: Info
) -> StepUpOut:
    """Prove again who you are, with your password or a TOTP code; the session (and its
    refresh token) carries on with the new sign-in."""
    step_up = get_authkeep(request).services.step_ups
    if body.code is not None:
        done = await step_up.with_code(principal, body.code, info, report_of(request.scope))
    else:
        assert body.password is not None  # the body's validator: exactly one
        done = await step_up.with_password(principal, body.password, info)
    return StepUpOut(
        access_token=done.access_token,
        expires_in=done.expires_in,
        auth_time=int(done.auth.auth_time.timestamp()),
        amr=list(done.auth.amr),
        acr=done.auth.acr,
    )
