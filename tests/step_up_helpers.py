"""Helpers for the step-up, organization MFA policy and MFA reset tests (importable as
``step_up_helpers``): the exact RFC 9470 challenge, stepping up, enrolling an authenticator
app through the MFA routes, a platform admin."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pyotp
from fastapi import FastAPI

from authkeep.db import users as user_rows
from authkeep.security.emails import email_key, normalize_email
from helpers import PASSWORD, authkeep_of, bearer, login

STEP_UP = "/api/v1/auth/step-up"
TOTP_SETUP = "/api/v1/auth/mfa/totp/setup"
TOTP_CONFIRM = "/api/v1/auth/mfa/totp/confirm"
MAX_AGE = 600
START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
"""A fixed clock for time-machine (tick=False): TOTP codes and ages are exact."""

TOO_OLD = "A more recent or stronger sign-in is required: step up and retry"
NO_SECOND_FACTOR = "This action needs a sign-in with your second factor: step up and retry"


def challenge(max_age: int = MAX_AGE, *, aal2: bool = False, too_old: bool = True) -> str:
    """The exact ``WWW-Authenticate`` of a step-up refusal (RFC 9470 §3)."""
    parts = [
        'Bearer error="insufficient_user_authentication"',
        f'error_description="{TOO_OLD if too_old else NO_SECOND_FACTOR}"',
    ]
    if aal2:
        parts.append('acr_values="aal2"')
    parts.append(f'max_age="{max_age}"')
    return ", ".join(parts)


async def step_up(http: httpx.AsyncClient, access: str, **body: Any) -> httpx.Response:
    """``POST /auth/step-up`` with ``body`` (``password=`` or ``code=``)."""
    return await http.post(STEP_UP, json=body, headers=bearer(access))


async def user_id_of(app: FastAPI, email: str) -> uuid.UUID:
    """The id of the account with ``email``."""
    async with authkeep_of(app).services.db.reading() as conn:
        user = await user_rows.get_by_email_key(
            conn, authkeep_of(app).services.envelope, email_key(normalize_email(email))
        )
    assert user is not None, email
    return user.id


async def enrol_totp(http: httpx.AsyncClient, access: str, moment: datetime) -> str:
    """Set up and confirm an authenticator app through the MFA routes, the clock standing at
    ``moment``; returns its secret (what the user's app keeps). The confirming code's time
    step is spent: a step-up needs the code of a later step."""
    setup = await http.post(TOTP_SETUP, headers=bearer(access))
    assert setup.status_code == 200, setup.text
    secret = str(setup.json()["secret"])
    confirmed = await http.post(
        TOTP_CONFIRM, json={"code": code_at(secret, moment)}, headers=bearer(access)
    )
    assert confirmed.status_code == 200, confirmed.text
    return secret


def code_at(secret: str, moment: datetime) -> str:
    """The TOTP code the user's app shows at ``moment``."""
    return str(pyotp.TOTP(secret).at(moment))


async def make_superuser(
    app: FastAPI, http: httpx.AsyncClient, email: str = "root@example.com"
) -> dict[str, Any]:
    """A platform admin, signed in: the login pair."""
    await authkeep_of(app).services.accounts.register(
        email=email, password=PASSWORD, is_superuser=True, email_verified=True
    )
    return await login(http, email)
