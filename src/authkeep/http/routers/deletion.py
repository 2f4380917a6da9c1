"""``DELETE /api/v1/auth/me`` and ``POST /api/v1/auth/me/deletion/cancel``: an account's
owner deletes it, and cancels that through the emailed link (docs/privacy.md, "Deletion").
The rules live in :class:`authkeep.services.privacy.deletion.AccountDeletion`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status

from authkeep.http.deletion_schemas import (
    CancelDeletionIn,
    DeleteMeIn,
    DeletionOut,
    SoleAdminOut,
)
from authkeep.http.deps import Info, RecentPrincipal, get_authkeep
from authkeep.http.limits import limit_per_user

router = APIRouter(prefix="/auth", tags=["privacy"])

SOLE_ADMIN: dict[int | str, dict[str, Any]] = {
    409: {
        "model": SoleAdminOut,
        "description": "The account is the only admin of organizations that have other "
        "members (named in `organizations`): another member must become admin first",
    }
}


@router.delete(
    "/me",
    response_model=DeletionOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        401: {
            "description": "Missing, invalid or revoked credentials; or the sign-in is not "
            "recent (or lacks the second factor): `insufficient_user_authentication`, step "
            "up and retry"
        },
        403: {"description": "An API key: only the account's owner, signed in, deletes it"},
        **SOLE_ADMIN,
        422: {"description": "Wrong password (on `password`), or a malformed body"},
        429: {"description": "Too many password attempts; see Retry-After"},
    },
    # The budget of every route that takes the current password: a stolen token does not
    # get more guesses by spreading them over several routes.
    dependencies=[Depends(limit_per_user("password_change"))],
)
async def delete_me(
    body: DeleteMeIn, principal: RecentPrincipal, request: Request, info: Info
) -> DeletionOut:
    """Delete the caller's account. It is locked at once: every session and API key of it
    stops working (401) on every worker, and it cannot sign in. It is erased at
    ``deletion_at`` (``AUTHKEEP_ACCOUNT_DELETION_GRACE_DAYS`` from now; at once with 0);
    until then the link emailed to its address cancels the deletion. Needs the password and
    a recent sign-in (with the second factor, when enrolled)."""
    scheduled = await get_authkeep(request).services.deletion.request(
        principal.user, body.password, info
    )
    return DeletionOut(deletion_at=scheduled.deletion_at)


@router.post(
    "/me/deletion/cancel",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        400: {
            "description": "The link's token is invalid, used or expired, or the account "
            "was erased already"
        }
    },
)
async def cancel_deletion(body: CancelDeletionIn, request: Request, info: Info) -> Response:
    """Cancel a pending deletion with the token of the emailed link: the account is
    unlocked; sign in again (no session comes back)."""
    await get_authkeep(request).services.deletion.cancel(body.token, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
