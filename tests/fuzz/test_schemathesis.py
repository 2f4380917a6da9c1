"""API fuzzing with schemathesis against the app's own OpenAPI schema, in the test process.

Every operation, authenticated ones included, gets a bounded number of generated requests
(valid and invalid) sent to a real server on loopback, on SQLite and on PostgreSQL; every
default check must pass: no server error, statuses, content types, headers and bodies as
documented. The requests are sent as a platform admin who administers an organization, so
no route stops them at its authorization check.

Generic generation rarely draws the values that break a storage layer or a conversion, so
the generators are pointed at them (:mod:`hostile_inputs`): ``date-time`` values at the ends
of the calendar with offsets, and body, query and form strings holding NUL, control and
bidi characters. A case carrying such a value may be refused (4xx) where the schema allows
it, and a replaced value may have made a negative case valid: such a case is spared "positive
data acceptance" and "negative data rejection"; it must never be a 5xx. ``make fuzz`` runs
the deeper version (all checks, every generation mode, many more examples) with the same
generators.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from authkeep import create_app
from fuzz.conftest import FuzzTarget, fresh_token, fuzz_settings
from hostile_inputs import NEEDS_AN_ISSUED_TOKEN, date_times, hostile_query, is_hostile, sprinkle

# The schema is the app's own, generated without starting it (no database needed).
schema = schemathesis.openapi.from_dict(
    create_app(fuzz_settings("sqlite+aiosqlite:///unused.db")).openapi()
)
schemathesis.openapi.format("date-time", date_times())


@schema.hook("flatmap_body")
def hostile_body_values(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """JSON and form bodies, sometimes with hostile strings."""
    return sprinkle(body)


@schema.hook("flatmap_query")
def hostile_query_values(context: Any, query: Any) -> st.SearchStrategy[Any]:
    """Query strings, sometimes with hostile strings."""
    return hostile_query(query)


@schema.parametrize()
@settings(
    max_examples=15,  # per operation and backend; `make fuzz` goes deep
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, live_server: FuzzTarget) -> None:
    headers = {"Authorization": f"Bearer {fresh_token(live_server.url)}"}
    hostile = any(is_hostile(part) for part in (case.body, case.query, case.path_parameters))
    excluded: list[Any] = []
    if hostile:
        excluded = [positive_data_acceptance, negative_data_rejection]
    elif case.path in NEEDS_AN_ISSUED_TOKEN:
        excluded = [positive_data_acceptance]
    case.call_and_validate(
        base_url=live_server.url, headers=headers, excluded_checks=excluded or None
    )


def test_refusals_the_fuzzers_reach_are_documented() -> None:
    # Reached only as a platform admin: an admin changing their own account (409), a cursor
    # this server never issued (422 with a message, not a list of validation errors).
    paths = schema.raw_schema["paths"]
    for method in ("patch", "delete"):
        assert "409" in paths["/api/v1/admin/users/{user_id}"][method]["responses"]
    refused = paths["/api/v1/audit"]["get"]["responses"]["422"]["content"]["application/json"]
    detail = schema.raw_schema["components"]["schemas"][
        refused["schema"]["$ref"].rsplit("/", 1)[1]
    ]["properties"]["detail"]
    assert {"type": "string"} in detail["anyOf"]
