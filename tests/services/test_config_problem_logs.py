"""Start-up ``config_problem`` log lines carry each problem's reason and fix, whether or not
the audit log is on (an operator reads the start-up log, not the audit table)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from authkeep import Settings, create_app
from helpers import running


def problem_lines(log: io.StringIO) -> dict[str, dict[str, Any]]:
    """setting -> its config_problem log line."""
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    return {line["setting"]: line for line in lines if line.get("event") == "config_problem"}


@pytest.mark.parametrize("audit_enabled", [True, False])
async def test_each_problem_is_logged_with_its_reason(
    make_settings: Callable[..., Settings], log_output: io.StringIO, audit_enabled: bool
) -> None:
    # Rate limiting off and audit maybe off: two problems that test settings do not have.
    settings = make_settings(audit_enabled=audit_enabled, rate_limit_enabled=False)
    async with running(create_app(settings)):
        pass
    found = problem_lines(log_output)
    rate = found["AUTHKEEP_RATE_LIMIT_ENABLED"]
    assert rate["level"] == "warning"  # the log level, untouched
    assert rate["severity"] == "warning"  # the problem's own level, under its own key
    assert "brute force" in rate["reason"]
    assert "set it to true" in rate["reason"]  # the fix, too
    if not audit_enabled:
        audit = found["AUTHKEEP_AUDIT_ENABLED"]
        assert audit["severity"] == "production"
        assert "nothing is written to the audit log" in audit["reason"]
