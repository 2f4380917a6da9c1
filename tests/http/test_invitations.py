"""Invitations over HTTP, end to end: invite, the email (from a real SMTP server and from the
file transport), accept by token or by id, single use, expiry, revoke, decline, re-invite,
the verified-address rule, another user holding the token, concurrent accepts, the
no-oracle 202, the mail limit, and the landing organization of a login."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import time_machine
from fastapi import FastAPI
from sqlalchemy import insert, select

from audit_helpers import app_rows
from authkeep import Settings, create_app
from authkeep.db.base import utcnow
from authkeep.db.models import Invitation, Membership
from helpers import PASSWORD, authkeep_of, client_for, login, running
from mail_helpers import SmtpSink, html_of, read_eml_dir, text_of
from org_helpers import (
    INVITATIONS,
    ORGS,
    Person,
    add_member,
    create_org,
    invite,
    mark_verified,
    pending_id,
    sign_up,
)
from session_helpers import claims_of

PUBLIC = "https://app.example.com"
ACCEPT = f"{INVITATIONS}/accept"
TOKEN_IN_LINK = re.compile(rf"{re.escape(PUBLIC)}/invitations/accept\?token=([A-Za-z0-9_-]{{43}})")
NOT_FOUND = {"detail": "Invitation not found"}
# Headers whose value is per request by design.
PER_REQUEST = {"x-request-id", "date", "ratelimit-remaining", "ratelimit-reset"}


@dataclass
class Site:
    """A running app whose mail is delivered on demand (``deliver``) to ``outgoing`` (the
    file transport) or to a real SMTP server."""

    app: FastAPI
    http: httpx.AsyncClient
    outgoing: Path
    smtp: SmtpSink | None

    async def deliver(self) -> list[EmailMessage]:
        """Run the outbox once; every message delivered so far."""
        await authkeep_of(self.app).services.delivery.worker.run_once()
        if self.smtp is not None:
            return self.smtp.messages()
        return read_eml_dir(self.outgoing)

    async def token_for(self, email: str) -> str:
        """The token of the newest invitation mailed to ``email``."""
        sent = [m for m in await self.deliver() if m["To"] == email]
        assert sent, f"no invitation mailed to {email}"
        found = TOKEN_IN_LINK.search(text_of(sent[-1]))
        assert found is not None, text_of(sent[-1])
        return found.group(1)


@pytest.fixture
async def start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Start a :class:`Site` (file transport unless ``smtp`` is given); settings overrides
    as keywords."""
    stack: list[Any] = []

    async def build(smtp: SmtpSink | None = None, **overrides: Any) -> Site:
        outgoing = tmp_path / f"mail-{len(stack)}"
        transport = smtp.settings() if smtp else {"email_backend": "file"}
        settings = make_settings(
            public_url=PUBLIC,
            email_file_dir=outgoing,
            outbox_in_process=False,
            **{**transport, **overrides},
        )
        app = create_app(settings)
        lifespan = running(app)
        await lifespan.__aenter__()
        http = client_for(app)
        stack.append((lifespan, http))
        return Site(app, http, outgoing, smtp)

    yield build
    for lifespan, http in reversed(stack):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def site(start: Callable[..., Any]) -> Site:
    site: Site = await start()
    return site


@dataclass
class Admin(Person):
    """A signed-in user with an organization of their own (active)."""

    org: uuid.UUID | None = None


async def admin_with_org(http: httpx.AsyncClient, email: str = "admin@example.com") -> Admin:
    person = await sign_up(http, email)
    admin = Admin(person.email, person.user_id, person.access, person.refresh)
    admin.org = await create_org(http, admin, "Acme")
    return admin


def org_of(admin: Admin) -> uuid.UUID:
    assert admin.org is not None
    return admin.org


async def accept(http: httpx.AsyncClient, person: Person, **body: str) -> httpx.Response:
    return await http.post(ACCEPT, json=body, headers=person.auth)


async def actions(app: FastAPI) -> list[str]:
    return [row.action for row in await app_rows(app) if row.action.startswith("invitation.")]


# --- the whole flow -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["smtp", "file"])
async def test_invite_mail_accept_end_to_end(
    start: Callable[..., Any], smtp_server: SmtpSink, transport: str
) -> None:
    site: Site = await start(smtp_server if transport == "smtp" else None, product_name="Acme ID")
    http = site.http
    admin = await admin_with_org(http)
    # Invited before the account even exists.
    invited = await invite(http, admin, org_of(admin), "Bob@Example.com", "editor")
    assert invited.status_code == 202, invited.text
    assert invited.json() == {"detail": "Invitation queued"}

    [message] = await site.deliver()
    assert message["To"] == "Bob@example.com"  # the domain is lower-cased
    assert "Acme" in message["Subject"]
    assert "editor" in text_of(message)
    token = await site.token_for("Bob@example.com")
    assert token in html_of(message)

    bob = await sign_up(http, "bob@example.com")
    await mark_verified(http, bob)
    joined = await accept(http, bob, token=token)
    assert joined.status_code == 200, joined.text
    assert (joined.json()["user_id"], joined.json()["role"]) == (str(bob.user_id), "editor")
    members = await http.get(f"{ORGS}/{org_of(admin)}/members", headers=admin.auth)
    assert {m["email"]: m["role"] for m in members.json()} == {
        "admin@example.com": "admin",
        "bob@example.com": "editor",
    }
    # Single use: the same link again is refused and changes nothing.
    again = await accept(http, bob, token=token)
    assert again.status_code == 400
    assert again.json() == {"detail": "This invitation was already accepted"}
    assert await actions(site.app) == ["invitation.created", "invitation.accepted"]
    [accepted] = await app_rows(site.app, "invitation.accepted")
    assert accepted.org_id == org_of(admin)
    assert accepted.actor_user_id == bob.user_id
    assert accepted.details == {"role": "editor", "user_id": str(bob.user_id), "joined": True}
    # The membership came from an invitation: a later login may start in it.
    async with authkeep_of(site.app).services.db.reading() as conn:
        origin = (
            await conn.execute(select(Membership.origin).where(Membership.user_id == bob.user_id))
        ).scalar_one()
    assert origin == "invitation"


async def test_accept_by_id_from_the_invitees_list_and_decline(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    other = await admin_with_org(http, "other@example.com")
    carol = await sign_up(http, "carol@example.com")
    await mark_verified(http, carol)
    for inviter, role in ((admin, "viewer"), (other, "admin")):
        assert (await invite(http, inviter, org_of(inviter), carol.email, role)).status_code == 202
    listed = (await http.get(INVITATIONS, headers=carol.auth)).json()
    assert [(i["org_id"], i["org_name"], i["role"]) for i in listed] == [
        (str(org_of(admin)), "Acme", "viewer"),
        (str(org_of(other)), "Acme", "admin"),
    ]
    assert all("token" not in item for item in listed)

    first, second = (uuid.UUID(i["id"]) for i in listed)
    assert (await accept(http, carol, invitation_id=str(first))).status_code == 200
    declined = await http.post(f"{INVITATIONS}/{second}/decline", headers=carol.auth)
    assert declined.status_code == 204
    assert (await http.get(INVITATIONS, headers=carol.auth)).json() == []
    late = await accept(http, carol, invitation_id=str(second))
    assert late.status_code == 400
    assert late.json() == {"detail": "This invitation was declined"}
    again = await http.post(f"{INVITATIONS}/{second}/decline", headers=carol.auth)
    assert again.status_code == 400
    orgs = (await http.get(ORGS, headers=carol.auth)).json()
    assert [o["id"] for o in orgs] == [str(org_of(admin))]
    assert await actions(site.app) == [
        "invitation.created",
        "invitation.created",
        "invitation.accepted",
        "invitation.declined",
    ]


# --- who may accept -----------------------------------------------------------------------


async def test_another_signed_in_user_cannot_accept_even_with_the_token(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    await invite(http, admin, org_of(admin), "victim@example.com", "admin")
    token = await site.token_for("victim@example.com")
    thief = await sign_up(http, "thief@example.com")
    await mark_verified(http, thief)
    invitation_id = await http.get(f"{ORGS}/{org_of(admin)}/invitations", headers=admin.auth)
    [pending] = invitation_id.json()

    # Exactly the answer for an invitation that does not exist: no oracle.
    for body in ({"token": token}, {"invitation_id": pending["id"]}):
        refused = await accept(http, thief, **body)
        assert (refused.status_code, refused.json()) == (404, NOT_FOUND)
    for body in ({"token": "A" * 43}, {"invitation_id": str(uuid.uuid4())}, {"token": "junk"}):
        missing = await accept(http, thief, **body)
        assert (missing.status_code, missing.json()) == (404, NOT_FOUND)
    stolen_decline = await http.post(f"{INVITATIONS}/{pending['id']}/decline", headers=thief.auth)
    assert (stolen_decline.status_code, stolen_decline.json()) == (404, NOT_FOUND)
    assert (await http.get(INVITATIONS, headers=thief.auth)).json() == []
    assert (await http.get(ORGS, headers=thief.auth)).json() == []

    # The invitation is intact for its owner.
    victim = await sign_up(http, "victim@example.com")
    await mark_verified(http, victim)
    assert (await accept(http, victim, token=token)).status_code == 200
    assert await actions(site.app) == ["invitation.created", "invitation.accepted"]


async def test_an_unverified_address_can_neither_list_nor_accept(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    # Whoever registered dave@ first may not be dave: the address is unproven.
    squatter = await sign_up(http, "dave@example.com")
    await invite(http, admin, org_of(admin), "dave@example.com", "editor")
    token = await site.token_for("dave@example.com")
    assert (await http.get(INVITATIONS, headers=squatter.auth)).json() == []
    refused = await accept(http, squatter, token=token)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Verify your email address before accepting an invitation"
    assert (await http.get(ORGS, headers=squatter.auth)).json() == []

    await mark_verified(http, squatter)
    assert (await accept(http, squatter, token=token)).status_code == 200


async def test_with_verification_off_the_link_itself_proves_the_address(
    start: Callable[..., Any],
) -> None:
    site: Site = await start(email_verification="off")
    http = site.http
    admin = await admin_with_org(http)
    erin = await sign_up(http, "erin@example.com")
    for role in ("viewer", "editor"):
        await invite(http, admin, org_of(admin), erin.email, role)
    token = await site.token_for(erin.email)
    # By id (no proof of the address), still refused; listing shows nothing.
    [pending] = (await http.get(f"{ORGS}/{org_of(admin)}/invitations", headers=admin.auth)).json()
    assert (await accept(http, erin, invitation_id=pending["id"])).status_code == 403
    assert (await http.get(INVITATIONS, headers=erin.auth)).json() == []
    joined = await accept(http, erin, token=token)
    assert joined.status_code == 200, joined.text
    assert joined.json()["role"] == "editor"


async def test_two_concurrent_accepts_make_one_membership(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    frank = await sign_up(http, "frank@example.com")
    await mark_verified(http, frank)
    await invite(http, admin, org_of(admin), frank.email, "editor")
    token = await site.token_for(frank.email)
    invitation_id = await pending_id(http, frank, org_of(admin))
    answers = await asyncio.gather(
        accept(http, frank, token=token),
        accept(http, frank, invitation_id=str(invitation_id)),
        accept(http, frank, token=token),
    )
    assert sorted(r.status_code for r in answers) == [200, 400, 400]
    assert len(await app_rows(site.app, "invitation.accepted")) == 1
    members = (await http.get(f"{ORGS}/{org_of(admin)}/members", headers=admin.auth)).json()
    assert [m["email"] for m in members].count(frank.email) == 1


# --- expiry, revoke, re-invite ------------------------------------------------------------


async def test_an_invitation_expires(start: Callable[..., Any]) -> None:
    start_at = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
    with time_machine.travel(start_at, tick=False) as clock:
        site: Site = await start(invitation_expire_days=2)
        http = site.http
        admin = await admin_with_org(http)
        gina = await sign_up(http, "gina@example.com")
        await mark_verified(http, gina)
        await invite(http, admin, org_of(admin), gina.email, "viewer")
        token = await site.token_for(gina.email)
        [listed] = (await http.get(INVITATIONS, headers=gina.auth)).json()
        assert datetime.fromisoformat(listed["expires_at"]) == start_at + timedelta(days=2)

        clock.move_to(start_at + timedelta(days=2, seconds=1))
        pair = await login(http, gina.email, PASSWORD)  # the old session has expired too
        gina.access = pair["access_token"]
        expired = await accept(http, gina, token=token)
        assert expired.status_code == 400
        assert expired.json() == {"detail": "This invitation has expired: ask for a new one"}
        assert (await http.get(INVITATIONS, headers=gina.auth)).json() == []
        admin.access = (await login(http, admin.email, PASSWORD))["access_token"]
        org_list = await http.get(f"{ORGS}/{org_of(admin)}/invitations", headers=admin.auth)
        assert org_list.json() == []


async def test_revoke_stops_the_link(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    hank = await sign_up(http, "hank@example.com")
    await mark_verified(http, hank)
    await invite(http, admin, org_of(admin), hank.email, "editor")
    token = await site.token_for(hank.email)
    url = f"{ORGS}/{org_of(admin)}/invitations"
    [pending] = (await http.get(url, headers=admin.auth)).json()
    assert (pending["email"], pending["role"]) == (hank.email, "editor")
    assert pending["invited_by"] == str(admin.user_id)

    # Only the organization's admins revoke; outsiders learn nothing: the invitation is as
    # unknown to them as an id that never existed.
    not_hanks = await http.delete(f"{url}/{pending['id']}", headers=hank.auth)
    unknown = await http.delete(f"{url}/{uuid.uuid4()}", headers=hank.auth)
    assert not_hanks.status_code == 404
    assert (not_hanks.status_code, not_hanks.json()) == (unknown.status_code, unknown.json())
    assert (await http.delete(f"{url}/{pending['id']}", headers=admin.auth)).status_code == 204
    assert (await http.delete(f"{url}/{pending['id']}", headers=admin.auth)).status_code == 404
    assert (await http.get(url, headers=admin.auth)).json() == []
    revoked = await accept(http, hank, token=token)
    assert revoked.status_code == 400
    assert revoked.json() == {"detail": "This invitation was revoked"}
    assert await actions(site.app) == ["invitation.created", "invitation.revoked"]


async def test_reinviting_replaces_the_pending_invitation(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    ivy = await sign_up(http, "ivy@example.com")
    await mark_verified(http, ivy)
    await invite(http, admin, org_of(admin), ivy.email, "viewer")
    old = await site.token_for(ivy.email)
    await invite(http, admin, org_of(admin), "IVY@example.com", "editor")
    new = await site.token_for("IVY@example.com")
    assert new != old
    pending = (await http.get(f"{ORGS}/{org_of(admin)}/invitations", headers=admin.auth)).json()
    assert [(p["email"], p["role"]) for p in pending] == [("IVY@example.com", "editor")]
    assert (await accept(http, ivy, token=old)).json() == {"detail": "This invitation was revoked"}
    assert (await accept(http, ivy, token=new)).json()["role"] == "editor"
    [first, second] = await app_rows(site.app, "invitation.created")
    assert second.details["replaced"] == [first.entity_id]


# --- who may invite, and what the answer says -----------------------------------------------


async def test_only_admins_invite_and_list(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    editor = await sign_up(http, "editor@example.com")
    outsider = await admin_with_org(http, "outsider@example.com")
    await add_member(http, admin, org_of(admin), editor, "editor")
    url = f"{ORGS}/{org_of(admin)}/invitations"
    before = await actions(site.app)
    for caller, expected in ((editor, 403), (outsider, 404)):
        sent = await http.post(url, json={"email": "x@example.com"}, headers=caller.auth)
        assert sent.status_code == expected
        assert (await http.get(url, headers=caller.auth)).status_code == expected
    for body in (
        {"email": "x@example.com", "role": "owner"},
        {"email": "not an email"},
        {"email": "x@example.com", "role": "viewer", "org_id": str(org_of(outsider))},
        {"role": "viewer"},
    ):
        assert (await http.post(url, json=body, headers=admin.auth)).status_code == 422, body
    assert (await http.post(url, json={"email": "x@example.com"})).status_code == 401
    assert await actions(site.app) == before


async def test_the_answer_is_the_same_for_an_account_an_unknown_address_and_a_member(
    site: Site,
) -> None:
    http = site.http
    admin = await admin_with_org(http)
    await sign_up(http, "known@example.com")
    answers = [
        await invite(http, admin, org_of(admin), email, "viewer")
        for email in ("known@example.com", "nobody@example.com", admin.email)
    ]
    for answer in answers:
        assert answer.status_code == 202
        assert answer.content == answers[0].content
        assert {k: v for k, v in answer.headers.items() if k not in PER_REQUEST} == {
            k: v for k, v in answers[0].headers.items() if k not in PER_REQUEST
        }
    # A member gets nothing at all (the admin can read the member list anyway).
    assert sorted(m["To"] for m in await site.deliver()) == [
        "known@example.com",
        "nobody@example.com",
    ]
    pending = (await http.get(f"{ORGS}/{org_of(admin)}/invitations", headers=admin.auth)).json()
    assert sorted(p["email"] for p in pending) == ["known@example.com", "nobody@example.com"]


async def test_past_the_recipient_limit_the_email_is_skipped_not_the_answer(
    start: Callable[..., Any],
) -> None:
    site: Site = await start(mail_recipient_rate_limit="1/hour")
    http = site.http
    admin = await admin_with_org(http)
    answers = [
        await invite(http, admin, org_of(admin), email, "viewer")
        for email in ("jo@example.com", "jo@example.com", "kim@example.com")
    ]
    assert [a.status_code for a in answers] == [202] * 3
    assert {a.content for a in answers} == {answers[0].content}
    assert sorted(m["To"] for m in await site.deliver()) == ["jo@example.com", "kim@example.com"]
    created = await app_rows(site.app, "invitation.created")
    assert [row.details["emailed"] for row in created] == [True, False, True]


async def test_api_keys_cannot_invite(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    made = await http.post(
        "/api/v1/api-keys", json={"name": "ci", "role": "admin"}, headers=admin.auth
    )
    assert made.status_code == 201, made.text
    key = {"X-API-Key": made.json()["key"]}
    url = f"{ORGS}/{org_of(admin)}/invitations"
    assert (await http.post(url, json={"email": "x@example.com"}, headers=key)).status_code == 403
    assert (await http.get(INVITATIONS, headers=key)).status_code == 403


async def test_adding_a_member_directly_is_gone(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    await sign_up(http, "lee@example.com")
    response = await http.post(
        f"{ORGS}/{org_of(admin)}/members",
        json={"email": "lee@example.com", "role": "admin"},
        headers=admin.auth,
    )
    assert response.status_code == 405
    members = (await http.get(f"{ORGS}/{org_of(admin)}/members", headers=admin.auth)).json()
    assert [m["email"] for m in members] == [admin.email]


# --- where a login lands --------------------------------------------------------------------


async def test_an_invitation_never_decides_where_the_invitee_lands(site: Site) -> None:
    """The issue's attack: an attacker's organization invites a victim who has no
    organization; the victim registers and logs in — and is in no organization of the
    attacker's, where an embedding app would have stored their data."""
    http = site.http
    attacker = await admin_with_org(http, "attacker@example.com")
    assert (
        await invite(http, attacker, org_of(attacker), "victim@example.com", "admin")
    ).status_code == 202
    victim = await sign_up(http, "victim@example.com")
    await mark_verified(http, victim)
    assert "org_id" not in claims_of(victim.access)
    assert (await http.get(ORGS, headers=victim.auth)).json() == []
    # Once the victim creates their own, that is where they land.
    own = await create_org(http, victim, "Mine")
    pair = await login(http, victim.email, PASSWORD)
    assert claims_of(pair["access_token"])["org_id"] == str(own)


async def test_a_legacy_membership_is_never_the_landing_organization(site: Site) -> None:
    http = site.http
    adder = await admin_with_org(http, "adder@example.com")
    mia = await sign_up(http, "mia@example.com")
    # What migration 0008 keeps: a direct add from before invitations, the oldest one.
    async with authkeep_of(site.app).services.db.transaction() as conn:
        await conn.execute(
            insert(Membership).values(
                user_id=mia.user_id,
                organization_id=org_of(adder),
                role="viewer",
                origin="legacy",
                created_at=utcnow() - timedelta(days=30),
                updated_at=utcnow(),
            )
        )
    pair = await login(http, mia.email, PASSWORD)
    assert "org_id" not in claims_of(pair["access_token"])
    # Still a member, reachable on purpose.
    mia.access = pair["access_token"]
    switched = await http.post(
        "/api/v1/auth/switch-org", json={"org_id": str(org_of(adder))}, headers=mia.auth
    )
    assert switched.status_code == 200
    own = await create_org(http, mia, "Mine")
    pair = await login(http, mia.email, PASSWORD)
    assert claims_of(pair["access_token"])["org_id"] == str(own)


async def test_invitation_rows_keep_only_a_keyed_hash_of_the_token(site: Site) -> None:
    http = site.http
    admin = await admin_with_org(http)
    await invite(http, admin, org_of(admin), "nina@example.com", "viewer")
    token = await site.token_for("nina@example.com")
    async with authkeep_of(site.app).services.db.reading() as conn:
        [stored] = (await conn.execute(select(Invitation.token_hash))).scalars().all()
    assert token not in stored
    assert len(stored) == 64
