"""``incoming_webhook``: an embedding app verifies webhooks it receives — Standard Webhooks
or a plain HMAC header — with a timestamp tolerance and each id accepted once (in process on
SQLite, through Redis on the PostgreSQL + Redis backend, shared by every worker)."""

# No ``from __future__ import annotations``: the routes are made inside a function, and
# FastAPI must resolve their local ``Annotated`` aliases when it reads them.
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from standardwebhooks.webhooks import Webhook

from authkeep import IncomingWebhook, Settings, create_app, incoming_webhook
from authkeep.services.webhooks.incoming import HmacScheme
from helpers import client_for, running

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
PLAIN = "plain-shared-secret-0123456789"


class Event(BaseModel):
    type: str


def build(app: FastAPI, name: str = "billing") -> list[Any]:
    """Routes on ``app`` that record what they got; ``/hooks/fail`` raises after verifying."""
    seen: list[Any] = []
    Standard = Annotated[
        IncomingWebhook,
        Depends(incoming_webhook([SECRET, OLD_SECRET], tolerance_seconds=300, name=name)),
    ]
    Plain = Annotated[
        IncomingWebhook,
        Depends(incoming_webhook(PLAIN, scheme="hmac-sha256", name=name + "-plain")),
    ]

    @app.post("/hooks/standard")
    async def standard(hook: Standard, event: Event) -> dict[str, str]:
        # The route still gets the body: raw from the dependency, parsed by FastAPI.
        seen.append((hook.id, hook.body, event.type))
        return {"ok": hook.id}

    @app.post("/hooks/plain")
    async def plain(hook: Plain) -> dict[str, str]:
        seen.append((hook.id, hook.body))
        return {"ok": hook.id}

    failures = {"left": 1}

    @app.post("/hooks/fail")
    async def fail(hook: Standard) -> dict[str, str]:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("the handler broke")
        seen.append((hook.id, hook.body))
        return {"ok": hook.id}

    return seen


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings())
    application.state.seen = build(application)
    async with running(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


def signed(
    body: bytes,
    *,
    secret: str = SECRET,
    message_id: str | None = None,
    at: float | None = None,
) -> dict[str, str]:
    message_id = message_id or "msg_" + secrets.token_hex(8)
    moment = datetime.fromtimestamp(int(at if at is not None else time.time()), tz=UTC)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, moment, body.decode()),
    }


BODY = json.dumps({"type": "invoice.paid", "data": {"amount": 12}}).encode()


async def test_a_good_signature_is_accepted_and_the_route_gets_the_body(
    http: httpx.AsyncClient, app: FastAPI
) -> None:
    headers = signed(BODY, message_id="msg_good1")
    answer = await http.post("/hooks/standard", content=BODY, headers=headers)
    assert answer.status_code == 200, answer.text
    assert app.state.seen == [("msg_good1", BODY, "invoice.paid")]


async def test_the_previous_secret_verifies_during_a_rotation(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/hooks/standard", content=BODY, headers=signed(BODY, secret=OLD_SECRET)
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "tamper",
    ["body", "secret", "id", "signature", "version", "garbage", "missing", "timestamp"],
)
async def test_a_bad_signature_is_refused(
    http: httpx.AsyncClient, app: FastAPI, tamper: str
) -> None:
    body, headers = BODY, signed(BODY)
    if tamper == "body":
        body = BODY.replace(b"12", b"1200")
    elif tamper == "secret":
        headers = signed(BODY, secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    elif tamper == "id":
        headers["webhook-id"] = "msg_other"
    elif tamper == "signature":
        headers["webhook-signature"] = "v1," + base64.b64encode(b"\0" * 32).decode()
    elif tamper == "version":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif tamper == "garbage":
        headers["webhook-signature"] = "v1 ,,, v1,%%%not-base64 nonsense"
    elif tamper == "missing":
        del headers["webhook-signature"]
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + 1)
    answer = await http.post("/hooks/standard", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("Webhook ")
    assert SECRET.removeprefix("whsec_") not in answer.text
    assert app.state.seen == []


@pytest.mark.parametrize(("offset", "word"), [(-310, "too old"), (310, "future")])
async def test_a_timestamp_outside_the_tolerance_is_refused(
    http: httpx.AsyncClient, offset: int, word: str
) -> None:
    headers = signed(BODY, at=time.time() + offset)
    answer = await http.post("/hooks/standard", content=BODY, headers=headers)
    assert answer.status_code == 400
    assert word in answer.json()["detail"]


async def test_a_replayed_id_is_refused(http: httpx.AsyncClient, app: FastAPI) -> None:
    headers = signed(BODY, message_id="msg_once")
    assert (await http.post("/hooks/standard", content=BODY, headers=headers)).status_code == 200
    again = await http.post("/hooks/standard", content=BODY, headers=headers)
    assert again.status_code == 409
    assert again.json() == {"detail": "Webhook already received"}
    # Re-signed with a fresh timestamp, the same id is still the same message.
    fresh = signed(BODY, message_id="msg_once", at=time.time() + 2)
    assert (await http.post("/hooks/standard", content=BODY, headers=fresh)).status_code == 409
    assert len(app.state.seen) == 1


async def test_an_unsigned_request_cannot_burn_an_id(http: httpx.AsyncClient) -> None:
    forged = signed(BODY, message_id="msg_target", secret="whsec_" + "A" * 43)
    assert (await http.post("/hooks/standard", content=BODY, headers=forged)).status_code == 400
    real = signed(BODY, message_id="msg_target")
    assert (await http.post("/hooks/standard", content=BODY, headers=real)).status_code == 200


async def test_a_failed_route_releases_the_id_so_the_senders_retry_gets_through(
    app: FastAPI,
) -> None:
    headers = signed(BODY, message_id="msg_retry")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        assert (await http.post("/hooks/fail", content=BODY, headers=headers)).status_code == 500
        assert (await http.post("/hooks/fail", content=BODY, headers=headers)).status_code == 200
        assert (await http.post("/hooks/fail", content=BODY, headers=headers)).status_code == 409


async def test_the_plain_hmac_scheme(http: httpx.AsyncClient, app: FastAPI) -> None:
    scheme = HmacScheme((PLAIN.encode(),))
    now = int(time.time())

    def headers(message_id: str, at: int, body: bytes = BODY) -> dict[str, str]:
        return {
            "X-Webhook-Id": message_id,
            "X-Timestamp": str(at),
            "X-Signature": scheme.sign(body, at),
        }

    good = await http.post("/hooks/plain", content=BODY, headers=headers("p1", now))
    assert good.status_code == 200
    assert app.state.seen == [("p1", BODY)]
    assert (
        await http.post("/hooks/plain", content=BODY, headers=headers("p1", now))
    ).status_code == 409
    old = await http.post("/hooks/plain", content=BODY, headers=headers("p2", now - 400))
    assert old.status_code == 400
    tampered = headers("p3", now)
    tampered["X-Signature"] = scheme.sign(b"other", now)
    assert (await http.post("/hooks/plain", content=BODY, headers=tampered)).status_code == 400
    unsigned_time = headers("p4", now)
    unsigned_time["X-Timestamp"] = str(now + 1)  # the signature covers the timestamp
    assert (await http.post("/hooks/plain", content=BODY, headers=unsigned_time)).status_code == 400


async def test_an_oversized_body_is_refused(make_settings: Callable[..., Settings]) -> None:
    app = FastAPI()
    Small = Annotated[IncomingWebhook, Depends(incoming_webhook(SECRET, max_body_bytes=64))]

    @app.post("/in")
    async def receive(hook: Small) -> dict[str, str]:
        return {"ok": hook.id}

    body = b'{"pad": "' + b"x" * 100 + b'"}'
    async with client_for(app) as http:
        answer = await http.post("/in", content=body, headers=signed(body))
    assert answer.status_code == 413


def test_a_malformed_secret_fails_when_the_dependency_is_made() -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 (the library's own error types)
        incoming_webhook("whsec_%%%")
    with pytest.raises(ValueError, match="tolerance"):
        incoming_webhook(SECRET, tolerance_seconds=0)


async def test_ids_are_shared_by_every_worker_through_redis(
    make_settings: Callable[..., Settings], backend: Any
) -> None:
    """Two apps (two workers) on the same Redis: an id accepted by one is a replay for the
    other. Without Redis (the SQLite backend) each worker remembers its own ids: the
    documented limit of a single-process deployment."""
    first, second = create_app(make_settings()), create_app(make_settings())
    build(first)
    build(second)
    headers = signed(BODY, message_id="msg_shared")
    async with running(first), running(second), client_for(first) as one, client_for(second) as two:
        assert (await one.post("/hooks/standard", content=BODY, headers=headers)).status_code == 200
        again = await two.post("/hooks/standard", content=BODY, headers=headers)
    assert again.status_code == (409 if backend.is_postgres else 200)
