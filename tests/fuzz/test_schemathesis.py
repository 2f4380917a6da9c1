"""API fuzzing with schemathesis against the app's own OpenAPI schema, in the test process.

Every operation, authenticated ones included, gets a bounded number of generated requests
(valid and invalid) sent to a real server on loopback; every default check must pass: no
server error, statuses, content types, headers and bodies as documented. ``make fuzz`` runs
the deeper version (all checks, every generation mode, many more examples).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from authkeep import create_app
from fuzz.conftest import fresh_token, fuzz_settings

# The schema is the app's own, generated without starting it (no database needed).
schema = schemathesis.openapi.from_dict(
    create_app(fuzz_settings("sqlite+aiosqlite:///unused.db")).openapi()
)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, live_server: str) -> None:
    headers = {"Authorization": f"Bearer {fresh_token(live_server)}"}
    case.call_and_validate(base_url=live_server, headers=headers)
