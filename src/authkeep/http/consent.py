"""``require_consent``: a dependency that keeps a route closed to users who have not granted
a consent purpose at its current version (docs/embedding.md, docs/privacy.md)::

    from authkeep import Principal, require_consent

    @app.post("/newsletter/send-me-offers", dependencies=[Depends(require_consent("marketing"))])
    async def offers() -> ...: ...

    @app.get("/documents")
    async def documents(principal: Annotated[Principal, Depends(require_consent("terms"))]): ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from authkeep.http.deps import CurrentPrincipal, get_authkeep
from authkeep.services.authn import Principal
from authkeep.settings import CONSENT_PURPOSE_NAME


def require_consent(purpose: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that yields the caller's user session when the user has granted
    ``purpose`` at its current version, else 403 naming the purpose and version (and the
    route that grants it). One primary-key look-up per request; a withdrawal or a new
    version applies on the next request.

    Like ``CurrentPrincipal``, it takes user sessions only: 401 without one, 403 for an API
    key. A malformed name fails here, at import time; a name missing from
    ``AUTHKEEP_CONSENT_PURPOSES`` fails every request with a 500 (never open, never a
    misleading 403)."""
    if not CONSENT_PURPOSE_NAME.fullmatch(purpose):
        raise ValueError(f"require_consent: {purpose!r} is not a consent purpose name")

    async def dependency(principal: CurrentPrincipal, request: Request) -> Principal:
        await get_authkeep(request).services.consents.require(principal.user.id, purpose)
        return principal

    dependency.__name__ = f"require_consent_{purpose.replace('-', '_')}"
    return dependency
