"""Helpers for the MFA tests (importable as ``mfa_helpers``): enrol an authenticator app,
compute its codes, run a login's two steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import time_machine

from authkeep.security.totp import STEP_SECONDS, code_at, step_of
from helpers import PASSWORD, bearer

MFA = "/api/v1/auth/mfa"
SETUP = f"{MFA}/totp/setup"
CONFIRM = f"{MFA}/totp/confirm"
TOTP = f"{MFA}/totp"
RECOVERY = f"{MFA}/recovery-codes"
VERIFY = f"{MFA}/verify"
LOGIN = "/api/v1/auth/login"


@contextmanager
def mid_step() -> Iterator[time_machine.Coordinates]:
    """Time (ticking) moved forward to the middle of the next 30-second step: codes computed
    now stay in their step for 15 seconds, so a test about steps never straddles a boundary.
    Only forward, so tokens issued before stay valid; keep every request inside."""
    now = datetime.now(UTC).timestamp()
    target = (int(now) // STEP_SECONDS + 1) * STEP_SECONDS + STEP_SECONDS / 2
    with time_machine.travel(datetime.fromtimestamp(target, UTC), tick=True) as traveller:
        yield traveller


def code(secret: str, offset: int = 0) -> str:
    """The code of ``secret`` for the current step plus ``offset`` steps."""
    return code_at(secret, step_of(datetime.now(UTC)) + offset)


async def setup_totp(http: httpx.AsyncClient, access: str) -> str:
    """Start setting up an authenticator app; its secret."""
    response = await http.post(SETUP, headers=bearer(access))
    assert response.status_code == 200, response.text
    return str(response.json()["secret"])


async def enrol(http: httpx.AsyncClient, access: str) -> tuple[str, list[str]]:
    """Set up and confirm an authenticator app (with the current step's code): its secret
    and the recovery codes."""
    secret = await setup_totp(http, access)
    response = await http.post(CONFIRM, json={"code": code(secret)}, headers=bearer(access))
    assert response.status_code == 200, response.text
    return secret, list(response.json()["recovery_codes"])


async def first_step(
    http: httpx.AsyncClient, email: str = "alice@example.com", password: str = PASSWORD
) -> dict[str, Any]:
    """A login of a user with MFA: its ``mfa_required`` answer."""
    response = await http.post(LOGIN, json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["mfa_required"] is True, body
    return body


async def second_step(http: httpx.AsyncClient, mfa_token: str, **factor: str) -> httpx.Response:
    """``POST /mfa/verify`` with ``code=`` or ``recovery_code=``."""
    return await http.post(VERIFY, json={"mfa_token": mfa_token, **factor})


async def mfa_login(
    http: httpx.AsyncClient, email: str = "alice@example.com", **factor: str
) -> dict[str, Any]:
    """Both steps of a login; the token pair."""
    pending = await first_step(http, email)
    response = await second_step(http, pending["mfa_token"], **factor)
    assert response.status_code == 200, response.text
    return dict(response.json())
