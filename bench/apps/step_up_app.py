"""An embedding app for ``bench/mfa.py``: authkeep installed with its routers and middleware,
and two routes of the app's own that differ only in the dependency that protects them:

- ``GET /plain``: :data:`authkeep.CurrentPrincipal` (a valid session);
- ``GET /sensitive``: :data:`authkeep.RecentPrincipal` (the same, signed in at most
  ``AUTHKEEP_STEP_UP_MAX_AGE_SECONDS`` ago, with the second factor when enrolled).

Settings come from the environment (``AUTHKEEP_*``); run ``authkeep migrate`` first.
Serve with ``uvicorn apps.step_up_app:build_app --factory``.
"""

from __future__ import annotations

from fastapi import FastAPI

from authkeep import Authkeep, CurrentPrincipal, RecentPrincipal, Settings


def build_app(settings: Settings | None = None) -> FastAPI:
    """The app, with ``settings`` (None: from the environment)."""
    app = FastAPI()
    Authkeep(settings).install(app)

    @app.get("/plain")
    async def plain(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user": str(principal.user.id)}

    @app.get("/sensitive")
    async def sensitive(principal: RecentPrincipal) -> dict[str, str]:
        return {"user": str(principal.user.id)}

    return app
