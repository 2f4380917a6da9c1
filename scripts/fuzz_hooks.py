"""schemathesis hooks for ``make fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``).

Every generated case is sent with the access token of a login made for it alone: the fuzzer
also calls logout, logout-all and session deletion, which end a shared token's session, and
every authenticated operation after them would then be a 401 instead of being exercised.
"""

from __future__ import annotations

import os

import httpx
import schemathesis
from schemathesis import Case
from schemathesis.auths import AuthContext


# refresh_interval=None: no caching, a fresh login per case (see above).
@schemathesis.auth(refresh_interval=None)
class FreshLogin:
    """Bearer auth from ``POST /api/v1/auth/login`` as the fuzz user."""

    def get(self, case: Case, context: AuthContext) -> str:
        response = httpx.post(
            os.environ["AUTHKEEP_FUZZ_URL"] + "/api/v1/auth/login",
            json={
                "email": os.environ["AUTHKEEP_FUZZ_EMAIL"],
                "password": os.environ["AUTHKEEP_FUZZ_PASSWORD"],
            },
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def set(self, case: Case, data: str, context: AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
