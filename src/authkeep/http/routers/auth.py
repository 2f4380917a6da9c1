"""``/api/v1/auth``: register, login, refresh, logout, me, password, sessions (the email
flows are in :mod:`authkeep.http.routers.account_email`, the OAuth2 token endpoint in
:mod:`authkeep.http.routers.oauth2`)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status

from authkeep.db.users import UserRecord
from authkeep.http.deps import CurrentPrincipal, Info, RecentPrincipal, get_authkeep
from authkeep.http.email_schemas import AcceptedOut
from authkeep.http.limits import limit_per_ip, limit_per_user, report_of
from authkeep.http.mfa_schemas import MfaRequiredOut
from authkeep.http.schemas import (
    LoginIn,
    MeOut,
    PasswordChangeIn,
    PasswordStrengthIn,
    PasswordStrengthOut,
    RefreshIn,
    RegisterIn,
    SessionOut,
    TokenOut,
    UserOut,
)
from authkeep.services.sessions import MfaPending, TokenPair

router = APIRouter(prefix="/auth", tags=["auth"])

_401: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, expired or revoked credentials"}
}
_429: dict[int | str, dict[str, Any]] = {
    429: {"description": "Rate limit reached; see Retry-After and RateLimit-* headers"}
}
_LOGIN: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Incorrect email or password; or, after failed logins, "
        '`"challenge_required": true` with a `challenge` to solve (docs/challenge.md)'
    },
    **_429,
    403: {
        "description": "Email not verified (AUTHKEEP_EMAIL_VERIFICATION=required; said only "
        "after a correct password, and a new link is sent)"
    },
    503: {"description": "Rate limiter unreachable: logins are refused until it answers"},
}


def user_out(user: UserRecord) -> UserOut:
    """The public view of a user."""
    return UserOut(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        is_active=user.is_active,
        created_at=user.created_at,
        email_verified=user.email_verified,
        mfa_enabled=user.mfa_enabled,
    )


def mfa_required_out(pending: MfaPending) -> MfaRequiredOut:
    """The public view of a login waiting for its second factor."""
    return MfaRequiredOut(mfa_token=pending.mfa_token, methods=pending.methods)


def token_out(pair: TokenPair) -> TokenOut:
    """The public view of a token pair."""
    return TokenOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        user=user_out(pair.user),
    )


# First: routes are matched in declaration order (twice: once to pick the router, once
# inside it), and this is the most frequent request.
@router.get("/me", response_model=MeOut, responses=_401)
async def me(principal: CurrentPrincipal, request: Request) -> MeOut:
    """The current user, with the required consents they have not given at their current
    version (computed here only: one query, none when no purpose is required)."""
    outstanding = await get_authkeep(request).services.consents.outstanding(principal.user.id)
    return MeOut(**user_out(principal.user).model_dump(), consents_outstanding=outstanding)


REGISTER_ACCEPTED = "Check your email to continue: we sent you a link"


@router.post(
    "/register",
    response_model=AcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_429,
    dependencies=[Depends(limit_per_ip("register"))],
)
async def register(body: RegisterIn, request: Request, info: Info) -> AcceptedOut:
    """Create an account. The same answer (status, body, headers) whether or not the
    address already has one: its owner is emailed instead, so this route cannot be used to
    find out who has an account."""
    await get_authkeep(request).services.email_flows.signup.register(
        email=body.email,
        password=body.password,
        full_name=body.full_name,
        consents=body.consents,
        info=info,
        report=report_of(request.scope),
    )
    return AcceptedOut(detail=REGISTER_ACCEPTED)


@router.post("/login", response_model=TokenOut | MfaRequiredOut, responses=_LOGIN)
async def login(body: LoginIn, request: Request, info: Info) -> TokenOut | MfaRequiredOut:
    """Exchange email and password for an access and a refresh token. For an account with
    a second factor: ``{"mfa_required": true, "mfa_token", "methods"}`` and no token;
    ``POST /auth/mfa/verify`` (or a passkey) finishes the login (docs/mfa.md)."""
    result = await get_authkeep(request).services.login_throttle.login(
        body.email,
        body.password,
        info,
        report_of(request.scope),
        challenge_solution=body.challenge_solution,
    )
    if isinstance(result, MfaPending):
        return mfa_required_out(result)
    return token_out(result)


@router.post(
    "/refresh",
    response_model=TokenOut,
    responses={**_401, **_429},
    dependencies=[Depends(limit_per_ip("refresh"))],
)
async def refresh(body: RefreshIn, request: Request, info: Info) -> TokenOut:
    """Spend a refresh token for a new pair."""
    pair = await get_authkeep(request).services.sessions.refresh(body.refresh_token, info)
    return token_out(pair)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_401)
async def logout(principal: CurrentPrincipal, request: Request, info: Info) -> Response:
    """End the current session: its access and refresh tokens stop working at once."""
    await get_authkeep(request).services.sessions.end(
        principal.user.id, only=principal.session_id, reason="logout", info=info
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, responses=_401)
async def logout_all(principal: CurrentPrincipal, request: Request, info: Info) -> Response:
    """End every session of the user."""
    await get_authkeep(request).services.sessions.end(
        principal.user.id, reason="logout_all", info=info
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_401, **_429},
    dependencies=[Depends(limit_per_user("password_change"))],
)
async def change_password(
    body: PasswordChangeIn, principal: RecentPrincipal, request: Request, info: Info
) -> Response:
    """Change the password; every other session ends. Needs a recent sign-in (and the
    second factor, when enrolled): else 401 ``insufficient_user_authentication``."""
    await get_authkeep(request).services.accounts.change_password(
        principal.user,
        current_password=body.current_password,
        new_password=body.new_password,
        keep_session=principal.session_id,
        info=info,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password/strength",
    response_model=PasswordStrengthOut,
    responses={
        **_429,
        503: {"description": "Busy, or the rate limiter is unreachable; see Retry-After"},
    },
    dependencies=[Depends(limit_per_ip("password_strength"))],
)
async def password_strength(body: PasswordStrengthIn, request: Request) -> PasswordStrengthOut:
    """Rate a candidate password for a sign-up page's strength meter: the same rules as
    register and password change. Nothing is stored, and the password is never logged."""
    assessment = await get_authkeep(request).services.accounts.password_strength(
        body.password, email=body.email, full_name=body.full_name
    )
    return PasswordStrengthOut(
        score=assessment.score,
        acceptable=assessment.acceptable,
        problems=list(assessment.problems),
        warning=assessment.warning,
        suggestions=list(assessment.suggestions),
        guesses_log10=assessment.guesses_log10,
    )


@router.get("/sessions", response_model=list[SessionOut], responses=_401)
async def sessions(principal: CurrentPrincipal, request: Request) -> list[SessionOut]:
    """The user's live sessions; ``current`` marks the one making this request."""
    live = await get_authkeep(request).services.sessions.list_live(principal.user.id)
    return [
        SessionOut(
            id=session.record.id,
            created_at=session.record.created_at,
            last_used_at=session.record.last_used_at,
            expires_at=session.record.expires_at,
            idle_expires_at=session.idle_expires_at,
            ip=session.record.ip,
            user_agent=session.record.user_agent,
            current=session.record.id == principal.session_id,
        )
        for session in live
    ]


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_401, 404: {"description": "No such live session of yours"}},
)
async def end_session(
    session_id: uuid.UUID, principal: CurrentPrincipal, request: Request, info: Info
) -> Response:
    """End one of the user's sessions."""
    await get_authkeep(request).services.sessions.end_one(principal.user.id, session_id, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
