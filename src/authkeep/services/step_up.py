"""Step-up: sensitive actions need a recent sign-in, and a second factor when the user has one.

A sensitive route (password change, MFA changes, API-key creation, account deletion and
export, platform-admin writes) refuses an access token whose ``auth_time`` is older than its
maximum age, or whose ``acr`` is ``aal1`` while the user has a second factor (or the route
needs ``aal2`` anyway), with :class:`~authkeep.errors.StepUpRequired` — HTTP 401 and RFC 9470's
``insufficient_user_authentication``. The claims are the token's own, fixed when it was
minted from the session row: an elevation ends by itself when its age passes the limit, and
checking it costs no query (``mfa_enabled`` comes with the user row the request loads anyway).
"""

from __future__ import annotations

import time

from authkeep.errors import PermissionDenied, StepUpRequired
from authkeep.security.assurance import AAL2
from authkeep.services.authn import Principal

__all__ = ["StepUpPolicy"]


class StepUpPolicy:
    """The step-up rule, with the default maximum age (``AUTHKEEP_STEP_UP_MAX_AGE_SECONDS``)."""

    def __init__(self, max_age_seconds: int) -> None:
        self.max_age_seconds = max_age_seconds

    def require(
        self,
        principal: Principal,
        *,
        max_age: int | None = None,
        aal2: bool = False,
        now: float | None = None,
    ) -> None:
        """Pass if ``principal`` signed in (or stepped up) at most ``max_age`` seconds ago
        (default: the setting) at ``aal2`` when the user has a second factor or ``aal2`` is
        asked; else raise StepUpRequired saying what a new sign-in must meet. API keys are
        refused outright: no key can re-authenticate a person."""
        claims = principal.claims
        if claims is None:
            raise PermissionDenied("This action needs a person's recent sign-in, not an API key")
        limit = self.max_age_seconds if max_age is None else max_age
        need_aal2 = aal2 or principal.user.mfa_enabled
        acr_values = AAL2 if need_aal2 else None
        moment = time.time() if now is None else now
        if moment - claims.auth_time > limit:
            raise StepUpRequired(max_age=limit, acr_values=acr_values)
        if need_aal2 and claims.acr != AAL2:
            raise StepUpRequired(
                "This action needs a sign-in with your second factor: step up and retry",
                max_age=limit,
                acr_values=AAL2,
            )
