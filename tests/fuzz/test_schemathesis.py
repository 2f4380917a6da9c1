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

import re
import tomllib
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from authkeep import create_app
from fuzz.conftest import FuzzTarget, fuzz_settings
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
    url = live_server.url
    headers = {"Authorization": f"Bearer {live_server.login.token()}"}
    response = case.call(base_url=url, headers=headers)
    if response.status_code == 401:
        # An earlier case may have ended the session (a fuzzed logout), or the route wants a
        # more recent sign-in: once more with a fresh login, so that every case reaches the
        # route past authentication, as with a login per case (which costs more than the case).
        headers = {"Authorization": f"Bearer {live_server.login.renew()}"}
        response = case.call(base_url=url, headers=headers)
    hostile = any(is_hostile(part) for part in (case.body, case.query, case.path_parameters))
    excluded: list[Any] = []
    if hostile:
        excluded = [positive_data_acceptance, negative_data_rejection]
    elif case.path in NEEDS_AN_ISSUED_TOKEN:
        excluded = [positive_data_acceptance]
    case.validate_response(
        response,
        headers=headers,
        excluded_checks=excluded or None,
        transport_kwargs={"base_url": url, "headers": headers},
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


def test_every_operations_entry_selects_what_it_names() -> None:
    # schemathesis ORs an entry's separate include filters: `include-path` with
    # `include-method` matched every operation of that method (every POST took register's
    # statuses). An entry names operations exactly or selects paths by regex; a name that
    # is no operation (renamed, mistyped) would configure nothing, silently.
    with (Path(__file__).resolve().parents[2] / "schemathesis.toml").open("rb") as file:
        entries = tomllib.load(file)["operations"]
    operations = {result.ok().label: result.ok() for result in schema.get_all_operations()}
    for entry in entries:
        selectors = {key for key in entry if key.startswith("include-")}
        assert selectors in ({"include-name"}, {"include-path-regex"}), entry
        names = entry.get("include-name", [])
        for name in [names] if isinstance(names, str) else names:
            assert name in operations, f"{name!r} is no operation"
        if "include-path-regex" in entry:
            pattern = re.compile(entry["include-path-regex"])
            assert any(pattern.search(op.path) for op in operations.values()), entry

    # What the entries give, on operations they name and on some they do not.
    def checks(label: str) -> Any:
        return schema.config.operations.get_for_operation(operations[label]).checks

    def statuses(label: str) -> list[str]:
        return list(checks(label).positive_data_acceptance.expected_statuses)

    assert "422" in statuses("POST /api/v1/auth/register")
    assert "400" in statuses("POST /api/v1/auth/token")
    assert "422" not in statuses("POST /api/v1/auth/token")
    assert "422" not in statuses("POST /api/v1/auth/login")
    assert "422" not in statuses("GET /api/v1/auth/me")
    assert {
        label for label in operations if not checks(label).ensure_resource_availability.enabled
    } == {
        "DELETE /api/v1/api-keys/{key_id}",
        "DELETE /api/v1/webhooks/{endpoint_id}",
        "DELETE /api/v1/admin/webhooks/{endpoint_id}",
    }
