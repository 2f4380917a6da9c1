"""An organization's two-factor policy (``require_mfa``, issue 14): set by its admins with a
recent sign-in, audited; members without a second factor get 403 with a clear detail on the
organization's routes — ``/orgs/{id}…`` and routes scoped by the token's organization, API
keys of such a creator included — while the enrolment routes stay reachable; an admin can
always turn it off. The policy is read in the same query as the role: no extra query."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import time_machine
from fastapi import FastAPI
from sqlalchemy import event

from audit_helpers import app_rows
from authkeep import Authkeep, OrgViewer, Settings
from helpers import authkeep_of, bearer, client_for, running
from org_helpers import ORGS, Person, add_member, create_org, sign_up
from step_up_helpers import MAX_AGE, START, challenge, enrol_totp

MFA_REQUIRED = (
    "This organization requires two-factor authentication; enrol a second factor at "
    "/api/v1/auth/mfa/totp/setup"
)


def policy_app(settings: Settings) -> FastAPI:
    """authkeep's routes plus a tenant route of an embedding app (any member may read it)."""
    app = FastAPI()
    Authkeep(settings).install(app)

    @app.get("/tenant")
    async def tenant(access: OrgViewer) -> dict[str, str]:
        return {"org": str(access.org_id)}

    return app


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = policy_app(settings)
    async with running(app), client_for(app) as http:
        yield app, http


async def set_policy(
    http: httpx.AsyncClient, person: Person, org_id: uuid.UUID, on: bool
) -> httpx.Response:
    return await http.patch(f"{ORGS}/{org_id}", json={"require_mfa": on}, headers=person.auth)


def refused_for_mfa(response: httpx.Response) -> bool:
    return response.status_code == 403 and response.json() == {"detail": MFA_REQUIRED}


async def test_members_without_a_second_factor_are_refused_until_they_enrol(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with serving(make_settings()) as (app, http):
            admin = await sign_up(http, "admin@example.com")
            org_id = await create_org(http, admin)
            viewer = await sign_up(http, "viewer@example.com")
            await add_member(http, admin, org_id, viewer, "viewer")
            assert (await http.get("/tenant", headers=viewer.auth)).status_code == 200

            turned_on = await set_policy(http, admin, org_id, True)
            assert turned_on.status_code == 200, turned_on.text
            assert turned_on.json()["require_mfa"] is True
            [row] = await app_rows(app, "org.mfa_policy_changed")
            assert (row.org_id, row.details["require_mfa"]) == (org_id, True)
            assert row.actor_user_id == admin.user_id

            # On the member's very next request, on every route of the organization.
            for response in (
                await http.get("/tenant", headers=viewer.auth),
                await http.get(f"{ORGS}/{org_id}", headers=viewer.auth),
                await http.get(f"{ORGS}/{org_id}/members", headers=viewer.auth),
                await http.post(
                    "/api/v1/auth/switch-org", json={"org_id": str(org_id)}, headers=viewer.auth
                ),
            ):
                assert refused_for_mfa(response), (response.request.url, response.text)
            # A pending enrolment, not an attack: no audit row per refused request.
            assert await app_rows(app, "authz.denied") == []
            # Not the account's own routes: the enrolment above all (a passkey's here, the
            # authenticator app's below).
            assert (await http.get("/api/v1/auth/me", headers=viewer.auth)).status_code == 200
            passkey = await http.post("/api/v1/auth/webauthn/register/options", headers=viewer.auth)
            assert passkey.status_code == 200, passkey.text
            listed = await http.get(ORGS, headers=viewer.auth)
            assert listed.json()[0]["require_mfa"] is True

            clock.shift(timedelta(seconds=30))
            await enrol_totp(http, viewer.access, START + timedelta(seconds=30))
            assert (await http.get("/tenant", headers=viewer.auth)).status_code == 200
            members = await http.get(f"{ORGS}/{org_id}/members", headers=viewer.auth)
            assert members.status_code == 200


async def test_an_admin_without_a_second_factor_can_always_turn_it_off(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings()) as (_app, http):
        admin = await sign_up(http, "admin@example.com")
        org_id = await create_org(http, admin)
        assert (await set_policy(http, admin, org_id, True)).status_code == 200

        assert refused_for_mfa(await http.get("/api/v1/api-keys", headers=admin.auth))
        renamed = await http.patch(f"{ORGS}/{org_id}", json={"name": "B"}, headers=admin.auth)
        assert refused_for_mfa(renamed)

        turned_off = await set_policy(http, admin, org_id, False)
        assert turned_off.status_code == 200, turned_off.text
        assert turned_off.json()["require_mfa"] is False
        assert (await http.get("/api/v1/api-keys", headers=admin.auth)).status_code == 200


async def test_setting_the_policy_needs_an_admin_and_a_recent_sign_in(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with serving(make_settings()) as (app, http):
            admin = await sign_up(http, "admin@example.com")
            org_id = await create_org(http, admin)
            editor = await sign_up(http, "editor@example.com")
            await add_member(http, admin, org_id, editor, "editor")
            assert (await set_policy(http, editor, org_id, True)).status_code == 403

            clock.shift(timedelta(seconds=MAX_AGE + 1))
            stale = await set_policy(http, admin, org_id, True)
            assert stale.status_code == 401
            assert stale.headers["www-authenticate"] == challenge()
            # A rename is no policy change: no step-up for it.
            renamed = await http.patch(f"{ORGS}/{org_id}", json={"name": "B"}, headers=admin.auth)
            assert renamed.status_code == 200
            assert renamed.json()["require_mfa"] is False
            assert await app_rows(app, "org.mfa_policy_changed") == []
            both = await http.patch(f"{ORGS}/{org_id}", json={}, headers=admin.auth)
            assert both.status_code == 422


async def test_an_api_key_of_a_creator_without_a_second_factor_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    with time_machine.travel(START, tick=False) as clock:
        async with serving(make_settings()) as (_app, http):
            admin = await sign_up(http, "admin@example.com")
            org_id = await create_org(http, admin)
            created = await http.post("/api/v1/api-keys", json={"name": "ci"}, headers=admin.auth)
            assert created.status_code == 201, created.text
            key = {"X-API-Key": created.json()["key"]}
            assert (await http.get("/tenant", headers=key)).status_code == 200

            assert (await set_policy(http, admin, org_id, True)).status_code == 200
            assert refused_for_mfa(await http.get("/tenant", headers=key))

            clock.shift(timedelta(seconds=30))
            await enrol_totp(http, admin.access, START + timedelta(seconds=30))
            assert (await http.get("/tenant", headers=key)).status_code == 200


async def test_the_policy_is_read_with_the_role_in_one_query(
    make_settings: Callable[..., Settings],
) -> None:
    async with serving(make_settings(outbox_in_process=False)) as (app, http):
        admin = await sign_up(http, "admin@example.com")
        await create_org(http, admin)
        services = authkeep_of(app).services
        assert (await http.get("/tenant", headers=admin.auth)).status_code == 200
        await services.revocations.users_changed([str(admin.user_id)])
        seen: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if statement.strip().upper() != "BEGIN":
                seen.append(statement)

        engine = services.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            response = await http.get("/tenant", headers=bearer(admin.access))
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert response.status_code == 200
        [statement] = seen
        assert "memberships" in statement
        assert "require_mfa" in statement
