"""Step-up for an embedding app: ``require_recent_auth(max_age)``, ``require_aal2()`` and
``RecentPrincipal`` on routes of a tiny FastAPI app that installs ``Authkeep``; and the proof
that the check costs no database query (SQL statements counted on the engine for the same
request on a plain and on a sensitive route)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Annotated, Any

import httpx
import time_machine
from fastapi import Depends, FastAPI
from sqlalchemy import event

from authkeep import (
    Authkeep,
    CurrentPrincipal,
    Principal,
    RecentPrincipal,
    Settings,
    current_principal,
    require_aal2,
    require_recent_auth,
)
from helpers import PASSWORD, authkeep_of, bearer, client_for, login, register, running
from step_up_helpers import START, challenge, code_at, enrol_totp, step_up, user_id_of


def embedding_app(settings: Settings) -> FastAPI:
    """An app of its own that protects three routes with authkeep's dependencies."""
    app = FastAPI()
    Authkeep(settings).install(app)

    @app.get("/plain")
    async def plain(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user": str(principal.user.id)}

    @app.get("/sensitive")
    async def sensitive(principal: RecentPrincipal) -> dict[str, str]:
        return {"user": str(principal.user.id)}

    @app.post("/payouts")
    async def payout(
        principal: Annotated[Principal, require_recent_auth(60)],
    ) -> dict[str, str]:
        return {"paid_by": str(principal.user.id)}

    @app.post("/wire-transfer")
    async def wire(principal: Annotated[Principal, require_aal2()]) -> dict[str, str]:
        return {"sent_by": str(principal.user.id)}

    @app.get("/both", dependencies=[Depends(current_principal)])
    async def both(principal: RecentPrincipal) -> dict[str, str]:
        return {"user": str(principal.user.id)}

    return app


@asynccontextmanager
async def embedded(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = embedding_app(settings)
    async with running(app), client_for(app) as http:
        yield app, http


async def test_require_recent_auth_and_require_aal2_protect_an_embedding_apps_routes(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with embedded(make_settings()) as (_app, http):
            await register(http)
            pair = await login(http)
            token = bearer(pair["access_token"])
            assert (await http.post("/payouts", headers=token)).status_code == 200

            clock.shift(timedelta(seconds=61))
            late = await http.post("/payouts", headers=token)
            assert late.status_code == 401
            assert late.headers["www-authenticate"] == challenge(60)
            # The default age (600 s) still holds for RecentPrincipal.
            assert (await http.get("/sensitive", headers=token)).status_code == 200

            # require_aal2: a password sign-in is never enough, however recent.
            weak = await http.post("/wire-transfer", headers=token)
            assert weak.status_code == 401
            assert weak.headers["www-authenticate"] == challenge(aal2=True, too_old=False)

            secret = await enrol_totp(http, pair["access_token"], START + timedelta(seconds=61))
            clock.shift(timedelta(seconds=30))  # the enrolment's code is spent
            moment = START + timedelta(seconds=91)
            stepped = await step_up(http, pair["access_token"], code=code_at(secret, moment))
            assert stepped.status_code == 200, stepped.text
            strong = bearer(stepped.json()["access_token"])
            assert (await http.post("/wire-transfer", headers=strong)).status_code == 200
            assert (await http.post("/payouts", headers=strong)).status_code == 200

            clock.shift(timedelta(seconds=61))
            again = await http.post("/payouts", headers=strong)
            assert again.status_code == 401
            assert again.headers["www-authenticate"] == challenge(60, aal2=True)


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    """Every SQL statement (transaction control aside) the app's engine sends while the
    block runs."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # SQLite's explicit BEGIN (authkeep's own hook) is no query.
        if statement.strip().upper() != "BEGIN":
            seen.append(statement)

    engine = authkeep_of(app).services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_the_step_up_check_adds_no_database_query(
    make_settings: Callable[..., Settings],
) -> None:
    # No in-process outbox worker: its polling would be counted too.
    async with embedded(make_settings(outbox_in_process=False)) as (app, http):
        await register(http)
        pair = await login(http, "alice@example.com", PASSWORD)
        token = bearer(pair["access_token"])
        user_id = str(await user_id_of(app, "alice@example.com"))
        revocations = authkeep_of(app).services.revocations

        async def queries(path: str, *, cold: bool) -> int:
            if cold:  # the user changed: every worker reloads them (one query)
                await revocations.users_changed([user_id])
            else:
                assert (await http.get(path, headers=token)).status_code == 200
            with statements(app) as seen:
                response = await http.get(path, headers=token)
            assert response.status_code == 200, response.text
            return len(seen)

        # The first authenticated request of a fresh revocation store synchronises it (one
        # query, once per process): out of the way before counting.
        assert (await http.get("/plain", headers=token)).status_code == 200
        for cold in (True, False):
            plain = await queries("/plain", cold=cold)
            sensitive = await queries("/sensitive", cold=cold)
            assert sensitive == plain, (cold, plain, sensitive)
            # Cold: the one user-and-role query every authenticated request makes after a
            # change; warm: none (the revocation store answers, the user is cached).
            assert sensitive == (1 if cold else 0), (cold, sensitive)


async def test_a_route_that_also_takes_the_session_verifies_the_token_once(
    make_settings: Callable[..., Settings],
) -> None:
    async with embedded(make_settings()) as (app, http):
        await register(http)
        pair = await login(http)
        authenticator = authkeep_of(app).services.authenticator
        calls: list[str] = []
        real = authenticator.authenticate

        async def counted(token: str) -> Principal:
            calls.append(token)
            return await real(token)

        authenticator.authenticate = counted  # type: ignore[method-assign]
        response = await http.get("/both", headers=bearer(pair["access_token"]))
        assert response.status_code == 200
        assert len(calls) == 1
