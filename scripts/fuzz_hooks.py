"""schemathesis hooks for ``make fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``): auth, and the
hostile value generators of the in-suite run.

Every generated case is sent with the access token of a login made for it alone: the fuzzer
also calls logout, logout-all and session deletion, which end a shared token's session, and
every authenticated operation after them would then be a 401 instead of being exercised.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.auths import AuthContext
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.hooks import HookContext
from schemathesis.openapi.checks import RejectedPositiveData

from hostile_inputs import NEEDS_AN_ISSUED_TOKEN, date_times, hostile_query, is_hostile, sprinkle


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


# Hostile values (tests/hostile_inputs.py, on PYTHONPATH through scripts/fuzz.py), as in the
# in-suite run (tests/fuzz/test_schemathesis.py): generic generation rarely draws them.
schemathesis.openapi.format("date-time", date_times())


@schemathesis.hook("flatmap_body")
def hostile_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    """JSON and form bodies, sometimes with hostile strings."""
    return sprinkle(body)


@schemathesis.hook("flatmap_query")
def hostile_query_values(context: HookContext, query: Any) -> st.SearchStrategy[Any]:
    """Query strings, sometimes with hostile strings or a forged cursor."""
    return hostile_query(query)


@schemathesis.hook
def filter_failure(context: HookContext, failure: Failure, case: Case, response: Any) -> bool:
    """A case carrying a hostile value may be refused where the schema allows it, and the
    replaced value may have made a negative case valid: keep every failure of it but those
    two (a 5xx is still one)."""
    hostile = any(is_hostile(part) for part in (case.body, case.query, case.path_parameters))
    if isinstance(failure, RejectedPositiveData) and case.path in NEEDS_AN_ISSUED_TOKEN:
        return False  # a generated email-link token is never one the server issued
    return not (hostile and isinstance(failure, RejectedPositiveData | AcceptedNegativeData))
