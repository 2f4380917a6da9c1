"""``/api/v1/api-keys`` and authenticating with a key, over HTTP on both backends.

A key is created by an org admin and shown once; it works as ``Authorization: Bearer ak_…``
or ``X-API-Key``, inside its organization and with at most its role (and never more than its
creator's current role); revocation and expiry apply on the very next request; only a hash
is stored; keys cannot manage keys or members. The tenant routes below are a tiny app built
inline from authkeep's public pieces (``require_role``, ``TenantDB``), as a user's would be.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from audit_helpers import app_rows
from authkeep import OrgAccess, Settings, TenantDB, create_app, require_role
from authkeep.db.base import utcnow
from authkeep.db.models import ApiKey
from authkeep.services import api_keys as api_key_service
from authkeep.services.audit import Action
from helpers import bearer, client_for, login, register, running
from org_helpers import join, sign_up

KEYS = "/api/v1/api-keys"
ORGS = "/api/v1/orgs"
KEY_SHAPE = re.compile(r"ak_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")

Viewer = Annotated[OrgAccess, Depends(require_role("viewer"))]
Editor = Annotated[OrgAccess, Depends(require_role("editor"))]


def add_tenant_routes(app: FastAPI) -> None:
    """A user's own org-scoped routes: notes kept in memory, per organization."""
    notes: dict[str, dict[str, str]] = {}

    @app.get("/test/whoami")
    async def whoami(access: Viewer, db: TenantDB) -> dict[str, Any]:
        return {
            "org_id": str(access.org_id),
            "tenant_db_org_id": str(db.org_id),
            "role": access.role.value,
            "user_id": str(access.user_id),
            "api_key_id": str(access.api_key.id) if access.api_key else None,
        }

    @app.post("/test/notes", status_code=201)
    async def create_note(access: Editor) -> dict[str, str]:
        note = {"id": str(uuid.uuid4()), "org_id": str(access.org_id)}
        notes[note["id"]] = note
        return note

    @app.get("/test/notes/{note_id}")
    async def read_note(note_id: str, access: Viewer) -> dict[str, str]:
        note = notes.get(note_id)
        # Another tenant's row is "not found", exactly like a missing one.
        if note is None or note["org_id"] != str(access.org_id):
            raise HTTPException(status_code=404)
        return note


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings())
    add_tenant_routes(application)
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@dataclass(frozen=True)
class Member:
    """A user logged in with an access token scoped to one organization."""

    email: str
    user_id: str
    org_id: str
    headers: dict[str, str]


async def scoped_login(http: httpx.AsyncClient, email: str, org_id: str) -> Member:
    tokens = await login(http, email)
    switched = await http.post(
        "/api/v1/auth/switch-org", json={"org_id": org_id}, headers=bearer(tokens["access_token"])
    )
    assert switched.status_code == 200, switched.text
    return Member(email, tokens["user"]["id"], org_id, bearer(switched.json()["access_token"]))


async def new_org(http: httpx.AsyncClient, email: str, name: str = "Acme") -> Member:
    """Register ``email``, create an organization (they are its admin) and switch to it."""
    await register(http, email)
    tokens = await login(http, email)
    created = await http.post(ORGS, json={"name": name}, headers=bearer(tokens["access_token"]))
    assert created.status_code == 201, created.text
    return await scoped_login(http, email, created.json()["id"])


async def add_member(http: httpx.AsyncClient, admin: Member, email: str, role: str) -> Member:
    """Register ``email`` and have them join ``admin``'s organization with ``role`` (invited,
    accepted)."""
    person = await sign_up(http, email)
    await join(http, admin.headers, uuid.UUID(admin.org_id), person, role)
    return await scoped_login(http, email, admin.org_id)


async def create_key(
    http: httpx.AsyncClient, admin: Member, role: str = "viewer", **extra: Any
) -> dict[str, Any]:
    response = await http.post(
        KEYS, json={"name": f"{role} bot", "role": role, **extra}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def as_bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def as_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> Member:
    return await new_org(client, "alice@example.com", "Acme")


async def list_keys(http: httpx.AsyncClient, admin: Member) -> list[dict[str, Any]]:
    response = await http.get(KEYS, headers=admin.headers)
    assert response.status_code == 200, response.text
    return list(response.json())


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


# --- creating and listing ---------------------------------------------------------------


async def test_admin_creates_a_key_that_is_shown_once(
    client: httpx.AsyncClient, alice: Member
) -> None:
    body = await create_key(client, alice, "editor")
    key = body["key"]
    match = KEY_SHAPE.fullmatch(key)
    assert match is not None, "a key is ak_ + 12-character prefix + _ + 43-character secret"
    prefix, secret = match.groups()
    assert body["prefix"] == prefix
    assert body["role"] == "editor"
    assert body["org_id"] == alice.org_id
    assert body["created_by"] == alice.user_id
    assert body["last_used_at"] is None
    assert body["revoked_at"] is None

    listing = await client.get(KEYS, headers=alice.headers)
    assert listing.status_code == 200
    [listed] = listing.json()
    assert listed["id"] == body["id"]
    assert listed["prefix"] == prefix
    assert "key" not in listed
    assert "key_hash" not in listed
    # Neither the secret nor its hash is retrievable after creation, in any field.
    assert secret not in listing.text
    assert hashlib.sha256(key.encode()).hexdigest() not in listing.text

    # Two keys never share a prefix or a secret.
    other = (await create_key(client, alice))["key"]
    assert other != key
    assert other[3:15] != prefix


async def test_only_an_org_admin_with_a_session_may_create_or_list_keys(
    client: httpx.AsyncClient, alice: Member
) -> None:
    editor = await add_member(client, alice, "ed@example.com", "editor")
    viewer = await add_member(client, alice, "vi@example.com", "viewer")
    for member in (editor, viewer):
        refused = await client.post(KEYS, json={"name": "x"}, headers=member.headers)
        assert refused.status_code == 403, refused.text
        assert (await client.get(KEYS, headers=member.headers)).status_code == 403

    # A user without an active organization has nowhere to put a key.
    await register(client, "loner@example.com")
    loner = bearer((await login(client, "loner@example.com"))["access_token"])
    assert (await client.post(KEYS, json={"name": "x"}, headers=loner)).status_code == 403

    assert_401(await client.post(KEYS, json={"name": "x"}))
    assert_401(await client.get(KEYS))
    assert await list_keys(client, alice) == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x", "role": "owner"},
        {"name": "x", "role": "superuser"},
        {"name": "x", "expires_at": "2020-01-01T00:00:00Z"},
        {"name": "x", "expires_at": "2999-01-01T00:00:00"},  # no time zone
        {"name": "x", "org_id": str(uuid.uuid4())},
        {"name": "x", "created_by": str(uuid.uuid4())},
    ],
)
async def test_invalid_key_requests_are_422(
    client: httpx.AsyncClient, alice: Member, body: dict[str, Any]
) -> None:
    response = await client.post(KEYS, json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert await list_keys(client, alice) == []


# --- using a key ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", [as_bearer, as_header], ids=["bearer", "x-api-key"])
async def test_a_key_authenticates_in_its_org_with_its_role(
    client: httpx.AsyncClient,
    alice: Member,
    transport: Callable[[str], dict[str, str]],
) -> None:
    created = await create_key(client, alice, "editor")
    response = await client.get("/test/whoami", headers=transport(created["key"]))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "org_id": alice.org_id,
        "tenant_db_org_id": alice.org_id,
        "role": "editor",
        "user_id": alice.user_id,
        "api_key_id": created["id"],
    }
    assert (await client.post("/test/notes", headers=transport(created["key"]))).status_code == 201


async def test_both_a_token_and_a_key_is_refused(client: httpx.AsyncClient, alice: Member) -> None:
    key = (await create_key(client, alice))["key"]
    both = {**alice.headers, **as_header(key)}
    assert_401(await client.get("/test/whoami", headers=both))
    assert_401(await client.get("/api/v1/auth/me", headers=both))


async def test_a_viewer_key_reads_but_cannot_write(
    client: httpx.AsyncClient, alice: Member
) -> None:
    note = (await client.post("/test/notes", headers=alice.headers)).json()
    key = (await create_key(client, alice, "viewer"))["key"]
    assert (
        await client.get(f"/test/notes/{note['id']}", headers=as_header(key))
    ).status_code == 200
    refused = await client.post("/test/notes", headers=as_header(key))
    assert refused.status_code == 403, refused.text


async def test_a_key_of_org_a_sees_404_for_org_b(client: httpx.AsyncClient, alice: Member) -> None:
    bob = await new_org(client, "bob@example.com", "Bobco")
    bobs_note = (await client.post("/test/notes", headers=bob.headers)).json()
    bobs_key = await create_key(client, bob, "admin")
    alices_key = (await create_key(client, alice, "admin"))["key"]

    assert (
        await client.get(f"/test/notes/{bobs_note['id']}", headers=bob.headers)
    ).status_code == 200
    response = await client.get(f"/test/notes/{bobs_note['id']}", headers=as_header(alices_key))
    assert response.status_code == 404
    # authkeep's own routes: Bob's key id means nothing in Alice's organization...
    assert (
        await client.delete(f"{KEYS}/{bobs_key['id']}", headers=alice.headers)
    ).status_code == 404
    # ...and Bob's organization is not reachable with Alice's key at all.
    assert (
        await client.get(f"{ORGS}/{bob.org_id}", headers=as_header(alices_key))
    ).status_code == 403
    # Bob's key still works: nothing above touched it.
    whoami = await client.get("/test/whoami", headers=as_bearer(bobs_key["key"]))
    assert whoami.json()["org_id"] == bob.org_id


async def test_a_key_never_outranks_its_creator(client: httpx.AsyncClient, alice: Member) -> None:
    carol = await add_member(client, alice, "carol@example.com", "admin")
    key = (await create_key(client, carol, "admin"))["key"]
    assert (await client.get("/test/whoami", headers=as_header(key))).json()["role"] == "admin"

    demoted = await client.patch(
        f"{ORGS}/{alice.org_id}/members/{carol.user_id}",
        json={"role": "viewer"},
        headers=alice.headers,
    )
    assert demoted.status_code == 200, demoted.text
    # The very next request acts as a viewer: the key's role is capped by its creator's.
    assert (await client.get("/test/whoami", headers=as_header(key))).json()["role"] == "viewer"
    assert (await client.post("/test/notes", headers=as_header(key))).status_code == 403

    removed = await client.delete(
        f"{ORGS}/{alice.org_id}/members/{carol.user_id}", headers=alice.headers
    )
    assert removed.status_code == 204, removed.text
    assert_401(await client.get("/test/whoami", headers=as_header(key)))


# --- revocation, expiry, last use ---------------------------------------------------------


async def test_a_revoked_key_gets_401_on_its_very_next_use(
    client: httpx.AsyncClient, alice: Member
) -> None:
    created = await create_key(client, alice, "editor")
    assert (await client.get("/test/whoami", headers=as_header(created["key"]))).status_code == 200

    assert (
        await client.delete(f"{KEYS}/{created['id']}", headers=alice.headers)
    ).status_code == 204
    assert_401(await client.get("/test/whoami", headers=as_header(created["key"])))
    assert_401(await client.get("/test/whoami", headers=as_bearer(created["key"])))
    [listed] = await list_keys(client, alice)
    assert listed["revoked_at"] is not None

    # Revoking again is harmless; an unknown id is 404.
    assert (
        await client.delete(f"{KEYS}/{created['id']}", headers=alice.headers)
    ).status_code == 204
    missing = await client.delete(f"{KEYS}/{uuid.uuid4()}", headers=alice.headers)
    assert missing.status_code == 404


async def test_deleting_the_organization_revokes_its_keys(
    client: httpx.AsyncClient, alice: Member
) -> None:
    key = (await create_key(client, alice, "admin"))["key"]
    bob = await new_org(client, "bob@example.com", "Bobco")
    bobs_key = (await create_key(client, bob))["key"]
    deleted = await client.delete(f"{ORGS}/{alice.org_id}", headers=alice.headers)
    assert deleted.status_code == 204, deleted.text
    assert_401(await client.get("/test/whoami", headers=as_header(key)))
    # Only that organization's keys.
    assert (await client.get("/test/whoami", headers=as_header(bobs_key))).status_code == 200


def shift_clock(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Move the key service's clock (and only it) forward."""
    monkeypatch.setattr(api_key_service, "utcnow", lambda: utcnow() + by)


async def test_an_expired_key_gets_401(
    client: httpx.AsyncClient, alice: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    expires_at = (utcnow() + timedelta(hours=1)).isoformat()
    created = await create_key(client, alice, expires_at=expires_at)
    assert datetime.fromisoformat(created["expires_at"]) == datetime.fromisoformat(expires_at)
    assert (await client.get("/test/whoami", headers=as_header(created["key"]))).status_code == 200

    shift_clock(monkeypatch, timedelta(hours=1, seconds=1))
    assert_401(await client.get("/test/whoami", headers=as_header(created["key"])))
    # A key without an expiry is unaffected by the passing time.
    forever = (await create_key(client, alice))["key"]
    assert (await client.get("/test/whoami", headers=as_header(forever))).status_code == 200


async def test_last_used_at_is_kept(
    client: httpx.AsyncClient, alice: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_key(client, alice)
    before = utcnow()
    assert (await client.get("/test/whoami", headers=as_header(created["key"]))).status_code == 200
    [listed] = await list_keys(client, alice)
    first_use = datetime.fromisoformat(listed["last_used_at"])
    assert first_use >= before - timedelta(seconds=1)

    # Within the minute it does not move (one write per key per minute at most)...
    assert (await client.get("/test/whoami", headers=as_header(created["key"]))).status_code == 200
    assert (await list_keys(client, alice))[0]["last_used_at"] == listed["last_used_at"]
    # ...after it, it does.
    shift_clock(monkeypatch, timedelta(minutes=2))
    assert (await client.get("/test/whoami", headers=as_header(created["key"]))).status_code == 200
    later = datetime.fromisoformat((await list_keys(client, alice))[0]["last_used_at"])
    assert later >= first_use + timedelta(minutes=2)


# --- storage ------------------------------------------------------------------------------


async def test_the_database_stores_only_a_hash(
    app: FastAPI, client: httpx.AsyncClient, alice: Member, backend: Any
) -> None:
    created = await create_key(client, alice, "editor")
    key = created["key"]
    secret = KEY_SHAPE.fullmatch(key).group(2)  # type: ignore[union-attr]
    await client.get("/test/whoami", headers=as_header(key))

    # Read the row as the database owner, past row-level security and the app's code.
    engine = create_async_engine(backend.owner_url)
    try:
        async with engine.connect() as conn:
            table = ApiKey.__table__
            [row] = (
                await conn.execute(select(table).where(table.c.id == uuid.UUID(created["id"])))
            ).mappings()
    finally:
        await engine.dispose()
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == created["prefix"]
    stored = " ".join(str(value) for value in row.values())
    assert secret not in stored
    assert key not in stored

    # Nor does any audit row hold it.
    for entry in await app_rows(app):
        assert secret not in str(entry.as_json())


# --- what keys may not do -----------------------------------------------------------------


async def test_keys_cannot_manage_keys_or_members(client: httpx.AsyncClient, alice: Member) -> None:
    created = await create_key(client, alice, "admin")
    await register(client, "dave@example.com")
    members = f"{ORGS}/{alice.org_id}/members"
    for headers in (as_header(created["key"]), as_bearer(created["key"])):
        attempts = [
            await client.post(KEYS, json={"name": "child", "role": "admin"}, headers=headers),
            await client.get(KEYS, headers=headers),
            await client.delete(f"{KEYS}/{created['id']}", headers=headers),
            await client.post(
                f"{ORGS}/{alice.org_id}/invitations",
                json={"email": "dave@example.com", "role": "admin"},
                headers=headers,
            ),
            await client.get(members, headers=headers),
            await client.patch(
                f"{members}/{alice.user_id}", json={"role": "viewer"}, headers=headers
            ),
            await client.delete(f"{members}/{alice.user_id}", headers=headers),
            await client.post(ORGS, json={"name": "Keyco"}, headers=headers),
            await client.get("/api/v1/auth/me", headers=headers),
            await client.post(
                "/api/v1/auth/switch-org", json={"org_id": alice.org_id}, headers=headers
            ),
        ]
        assert [a.status_code for a in attempts] == [403] * len(attempts), [
            (a.request.method, a.request.url.path, a.status_code) for a in attempts
        ]
    # Nothing changed: one key, still live; Alice still the only member, still admin.
    [listed] = await list_keys(client, alice)
    assert listed["revoked_at"] is None
    roster = (await client.get(members, headers=alice.headers)).json()
    assert [(m["email"], m["role"]) for m in roster] == [("alice@example.com", "admin")]


# --- bad keys -----------------------------------------------------------------------------


def _bad_keys(good: str) -> list[str]:
    prefix, secret = KEY_SHAPE.fullmatch(good).groups()  # type: ignore[union-attr]
    flipped = "B" if secret[-1] == "A" else "A"
    return [
        "ak_",
        "ak_" + prefix,
        good[:-1],  # truncated
        good[:20],
        good + "A",  # one character too many
        f"ak_{prefix}_{secret[:-1]}{flipped}",  # right prefix, wrong secret
        f"ak_{'0' * 12}_{secret}",  # unknown prefix, right secret
        f"ak_{prefix.upper()}_{secret}",
        "AK_" + good[3:],
        f"ak_{prefix}_{secret[:-1]}\u00e9",  # non-ASCII
        "ak_" + "x" * 4000,
        "ak_../../etc/passwd",
        "ak_' OR '1'='1",
    ]


async def test_forged_unknown_and_truncated_keys_get_401_never_500(
    client: httpx.AsyncClient, alice: Member
) -> None:
    good = (await create_key(client, alice, "admin"))["key"]
    for bad in _bad_keys(good):
        for headers in (as_header(bad), as_bearer(bad)):
            try:
                response = await client.get("/test/whoami", headers=headers)
            except UnicodeEncodeError:
                continue  # httpx refuses to send it: no server path to test
            assert response.status_code == 401, (bad[:40], response.status_code, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            # A forged key is no credential at all, on the routes that refuse keys too.
            me = await client.get("/api/v1/auth/me", headers=headers)
            assert me.status_code == 401, (bad[:40], me.status_code, me.text)
    # None of those touched the real key.
    assert (await client.get("/test/whoami", headers=as_header(good))).status_code == 200


async def test_a_non_ascii_key_header_is_401(app: FastAPI, alice: Member) -> None:
    # httpx encodes header values as ASCII; raw bytes reach the app through the ASGI scope.
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/test/whoami",
        "raw_path": b"/test/whoami",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"x-api-key", "ak_\u00e9\u00e9".encode("latin-1"))],
        "client": ("203.0.113.7", 40000),
        "server": ("localhost", 80),
    }
    await app(scope, receive, send)
    assert messages[0]["status"] == 401


async def test_keys_are_compared_in_constant_time(
    client: httpx.AsyncClient, alice: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No timing measurement (noisy on shared machines): check instead that every presented
    # key, found or not, goes through hmac.compare_digest against a full-length digest.
    good = (await create_key(client, alice))["key"]
    prefix, secret = KEY_SHAPE.fullmatch(good).groups()  # type: ignore[union-attr]
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    # Only the key service's view of hmac is replaced; token checks elsewhere are untouched.
    monkeypatch.setattr(api_key_service, "hmac", SimpleNamespace(compare_digest=spy))
    wrong_secret = f"ak_{prefix}_{'A' * 43}"
    unknown_prefix = f"ak_{'0' * 12}_{secret}"
    for key in (wrong_secret, unknown_prefix):
        assert_401(await client.get("/test/whoami", headers=as_header(key)))
    assert (await client.get("/test/whoami", headers=as_header(good))).status_code == 200
    assert [len(a) == len(b) == 64 for a, b in calls] == [True, True, True]
    assert calls[0][1] == hashlib.sha256(wrong_secret.encode()).hexdigest()
    assert calls[1][1] == hashlib.sha256(unknown_prefix.encode()).hexdigest()
    assert calls[2] == (hashlib.sha256(good.encode()).hexdigest(),) * 2


# --- audit ----------------------------------------------------------------------------------


async def test_create_first_use_and_revoke_are_each_audited_once(
    app: FastAPI, client: httpx.AsyncClient, alice: Member
) -> None:
    created = await create_key(client, alice, "editor")
    key = created["key"]
    # Concurrent first uses still make one "first used" row.
    uses = await asyncio.gather(
        *(client.get("/test/whoami", headers=as_header(key)) for _ in range(5))
    )
    assert [u.status_code for u in uses] == [200] * 5
    await client.get("/test/whoami", headers=as_bearer(key))
    for _ in range(2):
        await client.delete(f"{KEYS}/{created['id']}", headers=alice.headers)
    assert_401(await client.get("/test/whoami", headers=as_header(key)))

    [made] = await app_rows(app, Action.API_KEY_CREATED)
    [first] = await app_rows(app, Action.API_KEY_FIRST_USED)
    [revoked] = await app_rows(app, Action.API_KEY_REVOKED)
    for row in (made, first, revoked):
        assert str(row.org_id) == alice.org_id
        assert row.entity_type == "api_key"
        assert row.entity_id == created["id"]
        assert row.details["prefix"] == created["prefix"]
    assert (str(made.actor_user_id), made.actor_api_key_id) == (alice.user_id, None)
    assert made.details["role"] == "editor"
    # The first use is the key's own act (on behalf of its creator).
    assert (str(first.actor_user_id), str(first.actor_api_key_id)) == (
        alice.user_id,
        created["id"],
    )
    assert (str(revoked.actor_user_id), revoked.actor_api_key_id) == (alice.user_id, None)
