"""Consents over HTTP: sign-up with the required purposes, grant and withdraw (audited with the
version), a new version makes an older grant outstanding, ``require_consent`` in an embedding
app; and register's answer stays the same for a taken address. On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from audit_helpers import app_rows
from authkeep import Authkeep, Principal, Settings, create_app, require_consent
from authkeep.db import consents as consent_rows
from helpers import (
    PASSWORD,
    app_of,
    authkeep_of,
    bearer,
    client_for,
    login,
    running,
    user_json,
)

REGISTER = "/api/v1/auth/register"
ME = "/api/v1/auth/me"
CONSENTS = "/api/v1/auth/me/consents"
TERMS_V1 = {"version": "2026-11", "required": True}
PURPOSES: dict[str, Any] = {"terms": TERMS_V1, "marketing": {"version": "1"}}
# Header values that differ between any two requests, whatever the address.
PER_REQUEST = frozenset({"x-request-id", "ratelimit-remaining", "ratelimit-reset"})


@asynccontextmanager
async def service(
    make_settings: Callable[..., Settings], purposes: dict[str, Any] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(consent_purposes=PURPOSES if purposes is None else purposes))
    async with running(app), client_for(app) as http:
        yield http


async def sign_up(
    http: httpx.AsyncClient, email: str = "alice@example.com", **consents: str
) -> dict[str, str]:
    """Register with ``consents`` and log in; the Authorization header."""
    response = await http.post(
        REGISTER, json={"email": email, "password": PASSWORD, "consents": consents}
    )
    assert response.status_code == 202, response.text
    return bearer((await login(http, email))["access_token"])


async def consent_rows_of(http: httpx.AsyncClient, email: str) -> dict[str, tuple[str, bool]]:
    """The stored decisions of ``email``'s account: purpose -> (version, granted)."""
    app = app_of(http)
    user_id = uuid.UUID((await user_json(app, email))["id"])
    async with authkeep_of(app).services.db.reading() as conn:
        stored = await consent_rows.for_user(conn, user_id)
    return {purpose: (row.version, row.granted) for purpose, row in stored.items()}


def shape(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in response.headers.items() if k not in PER_REQUEST)
    return response.status_code, response.content, headers


async def test_register_needs_every_required_purpose_at_its_current_version(
    make_settings: Callable[..., Settings],
) -> None:
    async with service(make_settings) as http:
        cases = [
            (None, "Registering needs consent to 'terms' version '2026-11'"),
            ({}, 'send "consents": {"terms": "2026-11"}'),
            ({"marketing": "1"}, "Registering needs consent to 'terms'"),
            ({"terms": "2026-10"}, "The current version of 'terms' is '2026-11'"),
            ({"terms": "2026-11", "analytics": "1"}, "the purposes are: terms, marketing"),
        ]
        for consents, says in cases:
            body: dict[str, Any] = {"email": "alice@example.com", "password": PASSWORD}
            if consents is not None:
                body["consents"] = consents
            response = await http.post(REGISTER, json=body)
            assert response.status_code == 422, response.text
            [error] = response.json()["detail"]
            assert error["loc"] == ["body", "consents"]
            assert says in error["msg"]
            assert "2026-10" not in response.text  # the submitted version is not repeated
        # Refused before anything about the address: a malformed one gets the same answer.
        bad_email = await http.post(REGISTER, json={"email": "nope", "password": PASSWORD})
        assert bad_email.json()["detail"][0]["loc"] == ["body", "consents"]
        no_user = await http.post(
            "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert no_user.status_code == 401  # none of the refusals made an account

        auth = await sign_up(http, terms="2026-11")
        me = await http.get(ME, headers=auth)
        assert me.status_code == 200
        assert me.json()["consents_outstanding"] == []
        listed = (await http.get(CONSENTS, headers=auth)).json()
        assert [(c["purpose"], c["granted"], c["granted_version"]) for c in listed] == [
            ("terms", True, "2026-11"),
            ("marketing", False, None),
        ]
        [row] = await app_rows(app_of(http), "consent.granted")
        assert row.details == {"purpose": "terms", "version": "2026-11", "via": "register"}
        assert str(row.actor_user_id) == me.json()["id"] == row.entity_id


async def test_register_answers_a_taken_address_alike_and_records_nothing_for_it(
    make_settings: Callable[..., Settings],
) -> None:
    async with service(make_settings) as http:
        await sign_up(http, "alice@example.com", terms="2026-11")
        body = {"password": PASSWORD, "consents": {"terms": "2026-11", "marketing": "1"}}
        taken = await http.post(REGISTER, json={"email": "alice@example.com", **body})
        new = await http.post(REGISTER, json={"email": "bob@example.com", **body})
        assert taken.status_code == 202
        assert shape(taken) == shape(new)
        # Alice's consents are hers: the stranger's "marketing" was not recorded for her.
        assert await consent_rows_of(http, "alice@example.com") == {"terms": ("2026-11", True)}
        assert await consent_rows_of(http, "bob@example.com") == {
            "terms": ("2026-11", True),
            "marketing": ("1", True),
        }
        granted = await app_rows(app_of(http), "consent.granted")
        assert len(granted) == 3  # alice's terms, bob's two


async def test_grant_and_withdraw_are_audited_with_the_version(
    make_settings: Callable[..., Settings],
) -> None:
    async with service(make_settings) as http:
        app = app_of(http)
        auth = await sign_up(http, terms="2026-11")
        granted = await http.put(
            f"{CONSENTS}/marketing", json={"granted": True, "version": "1"}, headers=auth
        )
        assert granted.status_code == 200, granted.text
        assert granted.json() | {"at": None} == {
            "purpose": "marketing",
            "version": "1",
            "required": False,
            "granted": True,
            "granted_version": "1",
            "at": None,
            "outstanding": False,
        }
        # The same decision again changes and records nothing.
        again = await http.put(
            f"{CONSENTS}/marketing", json={"granted": True, "version": "1"}, headers=auth
        )
        assert again.json() == granted.json()
        rows = await app_rows(app, "consent.granted")
        assert [r.details for r in rows][-1] == {
            "purpose": "marketing",
            "version": "1",
            "via": "api",
        }
        assert len(rows) == 2  # terms at sign-up, marketing once

        withdrawn = await http.put(
            f"{CONSENTS}/marketing", json={"granted": False, "version": "1"}, headers=auth
        )
        assert (withdrawn.json()["granted"], withdrawn.json()["granted_version"]) == (False, None)
        # A required purpose may be withdrawn too: it becomes outstanding.
        terms = await http.put(
            f"{CONSENTS}/terms", json={"granted": False, "version": "2026-11"}, headers=auth
        )
        assert terms.status_code == 200
        assert terms.json()["outstanding"] is True
        assert (await http.get(ME, headers=auth)).json()["consents_outstanding"] == ["terms"]
        withdrawals = await app_rows(app, "consent.withdrawn")
        assert [r.details for r in withdrawals] == [
            {"purpose": "marketing", "version": "1", "via": "api"},
            {"purpose": "terms", "version": "2026-11", "via": "api"},
        ]
        assert all(r.actor_user_id == rows[0].actor_user_id for r in withdrawals)


async def test_a_new_version_makes_an_older_grant_outstanding(
    make_settings: Callable[..., Settings],
) -> None:
    async with service(make_settings) as http:
        auth = await sign_up(http, terms="2026-11")
        assert (await http.get(ME, headers=auth)).json()["consents_outstanding"] == []

    # The operator publishes new terms: same database, new setting.
    v2 = {**PURPOSES, "terms": {"version": "2027-01", "required": True}}
    async with service(make_settings, v2) as http:
        me = await http.get(ME, headers=auth)
        assert me.json()["consents_outstanding"] == ["terms"]
        terms = (await http.get(CONSENTS, headers=auth)).json()[0]
        assert terms | {"at": None} == {
            "purpose": "terms",
            "version": "2027-01",
            "required": True,
            "granted": False,
            "granted_version": "2026-11",
            "at": None,
            "outstanding": True,
        }
        stale = await http.put(
            f"{CONSENTS}/terms", json={"granted": True, "version": "2026-11"}, headers=auth
        )
        assert stale.status_code == 409
        assert stale.json() == {
            "detail": "The current version of 'terms' is '2027-01': show that text and send "
            "its version"
        }
        current = await http.put(
            f"{CONSENTS}/terms", json={"granted": True, "version": "2027-01"}, headers=auth
        )
        assert current.json()["granted"] is True
        assert (await http.get(ME, headers=auth)).json()["consents_outstanding"] == []


async def test_unknown_purposes_wrong_versions_and_loose_booleans_are_refused(
    make_settings: Callable[..., Settings],
) -> None:
    async with service(make_settings) as http:
        auth = await sign_up(http, terms="2026-11")
        unknown = await http.put(
            f"{CONSENTS}/analytics", json={"granted": True, "version": "1"}, headers=auth
        )
        assert unknown.status_code == 404
        assert unknown.json() == {"detail": "Unknown consent purpose"}
        wrong = await http.put(
            f"{CONSENTS}/marketing", json={"granted": True, "version": "2"}, headers=auth
        )
        assert wrong.status_code == 409
        # A consent is an explicit JSON true: "yes", 1 or "true" grant nothing.
        for loose in ("yes", 1, "true"):
            response = await http.put(
                f"{CONSENTS}/marketing", json={"granted": loose, "version": "1"}, headers=auth
            )
            assert response.status_code == 422
        assert (await http.get(CONSENTS)).status_code == 401
        assert await consent_rows_of(http, "alice@example.com") == {"terms": ("2026-11", True)}


async def test_without_purposes_there_is_nothing_to_consent_to(
    make_settings: Callable[..., Settings],
) -> None:
    async with service(make_settings, {}) as http:
        auth = await sign_up(http)
        assert (await http.get(CONSENTS, headers=auth)).json() == []
        assert (await http.get(ME, headers=auth)).json()["consents_outstanding"] == []
        refused = await http.post(
            REGISTER,
            json={"email": "bob@example.com", "password": PASSWORD, "consents": {"x": "1"}},
        )
        assert refused.status_code == 422
        assert "No consent purpose is configured" in refused.text


def embedding_app(settings: Settings) -> FastAPI:
    """An app of its own with routes that need consents."""
    app = FastAPI()
    Authkeep(settings).install(app)

    @app.get("/documents")
    async def documents(
        principal: Annotated[Principal, Depends(require_consent("terms"))],
    ) -> dict[str, str]:
        return {"user": str(principal.user.id)}

    @app.post("/offers", dependencies=[Depends(require_consent("marketing"))])
    async def offers() -> dict[str, bool]:
        return {"sent": True}

    return app


async def test_require_consent_blocks_an_embedding_apps_route_until_granted(
    make_settings: Callable[..., Settings],
) -> None:
    app = embedding_app(make_settings(consent_purposes=PURPOSES))
    async with running(app), client_for(app) as http:
        auth = await sign_up(http, terms="2026-11")
        assert (await http.get("/documents", headers=auth)).status_code == 200
        refused = await http.post("/offers", headers=auth)
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": "Consent required: 'marketing' version '1' is not granted; grant it "
            "with PUT /api/v1/auth/me/consents/marketing"
        }
        grant = {"granted": True, "version": "1"}
        assert (await http.put(f"{CONSENTS}/marketing", json=grant, headers=auth)).is_success
        assert (await http.post("/offers", headers=auth)).json() == {"sent": True}
        # Withdrawn: closed again on the very next request.
        grant["granted"] = False
        assert (await http.put(f"{CONSENTS}/marketing", json=grant, headers=auth)).is_success
        assert (await http.post("/offers", headers=auth)).status_code == 403
        assert (await http.get("/documents")).status_code == 401
        # The user's pending decision is no security refusal: no audit row per request.
        assert await app_rows(app, "authz.denied") == []

    # New terms: the route that needs them closes until the user agrees again.
    v2 = {**PURPOSES, "terms": {"version": "2027-01", "required": True}}
    app = embedding_app(make_settings(consent_purposes=v2))
    async with running(app), client_for(app) as http:
        refused = await http.get("/documents", headers=auth)
        assert refused.status_code == 403
        assert "'terms' version '2027-01'" in refused.json()["detail"]
        grant = {"granted": True, "version": "2027-01"}
        assert (await http.put(f"{CONSENTS}/terms", json=grant, headers=auth)).is_success
        assert (await http.get("/documents", headers=auth)).status_code == 200


def test_require_consent_refuses_a_malformed_purpose_name_at_import() -> None:
    with pytest.raises(ValueError, match="is not a consent purpose name"):
        require_consent("Terms of Service")
