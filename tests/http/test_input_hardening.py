"""Input that once made a 500 (issue 12, defect 1) now gets a 4xx that says what is wrong.

Each reproduction of the outside review runs over HTTP on SQLite and on PostgreSQL + Redis:
datetimes whose conversion to UTC leaves the representable range, an audit cursor whose id
no database column holds, NUL characters (refused by PostgreSQL only), an IPv6 zone id that
made the forwarded client address longer than its column, and control, bidirectional-override
and invisible format characters in display names.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Text

from audit_helpers import app_rows, services
from authkeep import Settings, create_app
from authkeep.db.models import AuditEntry, AuthSession
from authkeep.http.client_ip import ClientIPResolver
from authkeep.services.audit import Action
from helpers import PASSWORD, PEER, app_of, bearer, client_for, login, running, user_json
from org_helpers import ORGS, create_org, sign_up

KEYS = "/api/v1/api-keys"
AUDIT = "/api/v1/audit"
USERS = "/api/v1/admin/users"
REGISTER = "/api/v1/auth/register"
ROOT = "root@example.com"

LATE = "9999-12-31T23:59:59-05:00"  # 10000-01-01T04:59:59Z: past datetime.max
EARLY = "0001-01-01T00:00:00+05:00"  # 0000-12-31T19:00:00Z: before datetime.min
ZONE = "z" * 60


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(trusted_proxies=[PEER[0]]))
    async with running(application):
        yield application


@pytest.fixture
async def root(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    """A platform admin's session headers."""
    await services(app).accounts.register(email=ROOT, password=PASSWORD, is_superuser=True)
    return bearer((await login(client, ROOT))["access_token"])


@pytest.fixture
async def org_admin(client: httpx.AsyncClient) -> dict[str, str]:
    """An org admin whose session is in that organization (may create API keys)."""
    person = await sign_up(client, "owner@example.com")
    await create_org(client, person)
    return person.auth


def messages(response: httpx.Response) -> str:
    """Every ``msg`` of a 422 body, or its detail string, in one text."""
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return detail
    return " ".join(str(item["msg"]) for item in detail)


def assert_422(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 422, response.text
    text = messages(response)
    for word in words:
        assert word in text, text


# Datetimes ------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", [LATE, EARLY])
async def test_api_key_expiry_out_of_range_in_utc_is_422(
    client: httpx.AsyncClient, org_admin: dict[str, str], moment: str
) -> None:
    response = await client.post(KEYS, json={"name": "k", "expires_at": moment}, headers=org_admin)
    assert_422(response, "out of range", "UTC")
    assert response.json()["detail"][0]["loc"] == ["body", "expires_at"]


async def test_api_key_expiry_with_offset_is_stored_in_utc(
    client: httpx.AsyncClient, org_admin: dict[str, str]
) -> None:
    response = await client.post(
        KEYS, json={"name": "k", "expires_at": "9999-12-31T18:59:59-05:00"}, headers=org_admin
    )
    assert response.status_code == 201, response.text
    assert response.json()["expires_at"].startswith("9999-12-31T23:59:59")


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("moment", [LATE, EARLY])
async def test_audit_dates_out_of_range_in_utc_are_422(
    client: httpx.AsyncClient, root: dict[str, str], name: str, moment: str
) -> None:
    response = await client.get(AUDIT, params={name: moment}, headers=root)
    assert_422(response, "out of range")
    assert response.json()["detail"][0]["loc"] == ["query", name]


async def test_audit_dates_at_the_extremes_of_the_range_work(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    response = await client.get(
        AUDIT,
        params={"since": "0001-01-01T05:00:00+05:00", "until": "9999-12-31T23:59:59"},
        headers=root,
    )
    assert response.status_code == 200, response.text


# Cursors --------------------------------------------------------------------------------


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "YTE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # the review's: a1:99999999999999999999999
        cursor_of(f"a1:{2**63}"),
        cursor_of("a1:0"),
        cursor_of("a1:-5"),
        cursor_of("a1:١٢"),  # Arabic-Indic digits, which int() accepts
        "not base64!",
    ],
)
async def test_audit_cursor_beyond_any_row_id_is_422(
    client: httpx.AsyncClient, root: dict[str, str], cursor: str
) -> None:
    response = await client.get(AUDIT, params={"cursor": cursor}, headers=root)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": "Invalid cursor"}


async def test_audit_cursor_at_the_largest_row_id_works(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    response = await client.get(
        AUDIT, params={"cursor": cursor_of(f"a1:{2**63 - 1}")}, headers=root
    )
    assert response.status_code == 200, response.text


# NUL and control characters -------------------------------------------------------------


async def test_nul_in_api_key_name_is_422(
    client: httpx.AsyncClient, org_admin: dict[str, str]
) -> None:
    response = await client.post(KEYS, json={"name": "a\u0000b"}, headers=org_admin)
    assert_422(response, "control character")


@pytest.mark.parametrize("name", ["action", "entity_id", "entity_type"])
@pytest.mark.parametrize("value", ["\x00", "a\x00b", "a\nb", "\x7f"])
async def test_control_characters_in_audit_filters_are_422(
    client: httpx.AsyncClient, root: dict[str, str], name: str, value: str
) -> None:
    response = await client.get(AUDIT, params={name: value}, headers=root)
    assert_422(response, "control character")
    assert response.json()["detail"][0]["loc"] == ["query", name]


@pytest.mark.parametrize("value", ["\x00", "root\x00", "a\tb"])
async def test_control_characters_in_admin_search_are_422(
    client: httpx.AsyncClient, root: dict[str, str], value: str
) -> None:
    response = await client.get(USERS, params={"q": value}, headers=root)
    assert_422(response, "control character")


async def test_ordinary_filters_still_work(client: httpx.AsyncClient, root: dict[str, str]) -> None:
    # The admin search takes an exact address (non-ASCII allowed) or an id.
    assert (
        await client.get(USERS, params={"q": "röot@example.com"}, headers=root)
    ).status_code == 200
    response = await client.get(AUDIT, params={"action": "user.registered"}, headers=root)
    assert response.status_code == 200, response.text


# Forwarded IPv6 zone ids ----------------------------------------------------------------


async def test_forwarded_ipv6_zone_id_is_dropped_on_register_and_login(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    forwarded = {"X-Forwarded-For": f"fe80::1%{ZONE}"}
    response = await client.post(
        REGISTER, json={"email": "eve@example.com", "password": PASSWORD}, headers=forwarded
    )
    assert response.status_code == 202, response.text
    response = await client.post(
        "/api/v1/auth/login",
        json={"email": "eve@example.com", "password": PASSWORD},
        headers=forwarded,
    )
    assert response.status_code == 200, response.text
    registered = await app_rows(app, str(Action.USER_REGISTERED))
    assert [row.ip for row in registered] == ["fe80::1"]
    # The session's address is stored sealed: read it as the API shows it.
    sessions = await client.get(
        "/api/v1/auth/sessions", headers=bearer(response.json()["access_token"])
    )
    assert [s["ip"] for s in sessions.json()] == ["fe80::1"]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("fe80::1%eth0", None, "fe80::1"),  # no trusted proxy: the socket peer
        (PEER[0], f"fe80::2%{ZONE}", "fe80::2"),  # behind the trusted proxy
        (PEER[0], f"[fe80::3%{ZONE}]:443", "fe80::3"),
        (PEER[0], "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_ip_never_carries_a_zone_id(peer: str, forwarded: str | None, expected: str) -> None:
    trusted = ClientIPResolver([PEER[0]])
    assert trusted.resolve(peer, [forwarded] if forwarded else []) == expected
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 1), "headers": headers}
    assert trusted.from_scope(scope) == expected
    if forwarded is None:
        assert ClientIPResolver([]).from_scope(scope) == expected


def test_the_clipped_columns_hold_any_sealed_value() -> None:
    # clip() cuts a reported address and user agent to IP_LENGTH / USER_AGENT_LENGTH before
    # they are sealed; the ciphertext is longer than the value, so the columns are TEXT:
    # were one bounded again, a long value would fail the login it describes.
    for column in (AuthSession.ip, AuthSession.user_agent, AuditEntry.ip):
        assert isinstance(column.type, Text), column


async def test_an_over_long_peer_address_and_user_agent_still_log_in(
    make_settings: Callable[..., Settings],
) -> None:
    # Whatever the server hands over as the peer (a unix socket path, a proxy's label), the
    # session row and the audit row must be written, not fail on their column's length.
    application = create_app(make_settings())
    async with running(application), client_for(application, ("x" * 300, 1)) as http:
        headers = {"User-Agent": "agent/" + "u" * 600}
        response = await http.post(
            REGISTER, json={"email": "eve@example.com", "password": PASSWORD}, headers=headers
        )
        assert response.status_code == 202, response.text
        response = await http.post(
            "/api/v1/auth/login",
            json={"email": "eve@example.com", "password": PASSWORD},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        sessions = await http.get(
            "/api/v1/auth/sessions", headers=bearer(response.json()["access_token"])
        )
        assert sessions.status_code == 200, sessions.text
        (session,) = sessions.json()
        assert len(session["ip"]) <= 45
        assert session["user_agent"].startswith("agent/uuu")
        assert len(session["user_agent"]) <= 256


# Display names --------------------------------------------------------------------------

CONTROL = ["a\x00b", "a\nb", "a\tb", "a\x1bb", "a\x85b"]
FORMAT = ["abc\u202egpj.exe", "a\u2066b", "a\u200bb", "a\u200eb", "a\ufeffb", "a\u00adb"]
SEPARATOR = ["a\u2028b", "a\u2029b"]


@pytest.mark.parametrize("name", CONTROL + SEPARATOR)
async def test_control_characters_in_api_key_name_are_422(
    client: httpx.AsyncClient, org_admin: dict[str, str], name: str
) -> None:
    response = await client.post(KEYS, json={"name": name}, headers=org_admin)
    assert_422(response, "control character")


@pytest.mark.parametrize("name", FORMAT)
async def test_bidi_and_invisible_characters_in_api_key_name_are_422(
    client: httpx.AsyncClient, org_admin: dict[str, str], name: str
) -> None:
    response = await client.post(KEYS, json={"name": name}, headers=org_admin)
    assert_422(response, "bidirectional")


@pytest.mark.parametrize("name", FORMAT)
async def test_bidi_and_invisible_characters_in_full_name_are_422(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(
        REGISTER, json={"email": "eve@example.com", "password": PASSWORD, "full_name": name}
    )
    assert_422(response, "bidirectional")
    assert response.json()["detail"][0]["loc"] == ["body", "full_name"]


@pytest.mark.parametrize("name", CONTROL)
async def test_control_characters_in_full_name_are_422(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(
        REGISTER, json={"email": "eve@example.com", "password": PASSWORD, "full_name": name}
    )
    assert_422(response, "control character")


@pytest.mark.parametrize("name", ["Acme\u202e", "Ac\x00me"])
async def test_org_names_follow_the_same_rule(
    client: httpx.AsyncClient, org_admin: dict[str, str], name: str
) -> None:
    response = await client.post(ORGS, json={"name": name}, headers=org_admin)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


@pytest.mark.parametrize(
    "name",
    [
        "José Ñúñez",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: needs ZWNJ
        "\u0915\u094d\u200d\u0937",  # Devanagari: ZWJ
        "👩\u200d💻 deploy bot",  # emoji ZWJ sequence
        "李小龍",
    ],
)
async def test_names_of_every_script_are_accepted(
    client: httpx.AsyncClient, org_admin: dict[str, str], name: str
) -> None:
    key = await client.post(KEYS, json={"name": name}, headers=org_admin)
    assert key.status_code == 201, key.text
    assert key.json()["name"] == name
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post(
        REGISTER, json={"email": email, "password": PASSWORD, "full_name": name}
    )
    assert registered.status_code == 202, registered.text
    assert (await user_json(app_of(client), email))["full_name"] == name


async def test_names_are_stored_trimmed_and_nfc_normalised(
    client: httpx.AsyncClient, org_admin: dict[str, str]
) -> None:
    # "e" + combining acute (2 code points) is stored as "é" (1), as org names already were.
    response = await client.post(KEYS, json={"name": "  Cafe\u0301  "}, headers=org_admin)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Caf\u00e9"


async def test_a_name_that_grows_under_nfc_past_its_limit_is_422(
    client: httpx.AsyncClient, org_admin: dict[str, str]
) -> None:
    # U+0958 is excluded from composition: NFC turns each into two code points, so 100 of
    # them would be 200 characters in a 100-character column.
    response = await client.post(KEYS, json={"name": "\u0958" * 100}, headers=org_admin)
    assert_422(response, "100")


@pytest.mark.parametrize("name", ["", "   ", "\u200d", " \u200c "])
async def test_a_name_without_a_visible_character_is_422(
    client: httpx.AsyncClient, org_admin: dict[str, str], name: str
) -> None:
    response = await client.post(KEYS, json={"name": name}, headers=org_admin)
    assert response.status_code == 422, response.text


async def test_refusals_do_not_echo_the_value(
    client: httpx.AsyncClient, org_admin: dict[str, str]
) -> None:
    response = await client.post(KEYS, json={"name": "secretish\u202e"}, headers=org_admin)
    assert response.status_code == 422
    assert "secretish" not in response.text
