"""``authkeep serve`` writes one access-log line per request — its own, without the query
string — and not uvicorn's as well (which would carry the query string, where tokens and
codes sometimes travel)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from servers import serving

SECRET = "access-log-test-secret-0123456789-abcdefghijklmnop"


def test_one_line_per_request_and_no_query_string(tmp_path: Path) -> None:
    env = {
        "AUTHKEEP_ENV": "test",
        "AUTHKEEP_SECRET_KEY": SECRET,
        "AUTHKEEP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db",
        "AUTHKEEP_LOG_LEVEL": "INFO",
    }
    with serving(env, tmp_path) as server:
        response = httpx.get(server.url + "/health?code=query-secret-42")
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        server.stop()
        output = server.log.read_text(errors="replace")

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    about_it = [line for line in lines if line.get("request_id") == request_id]
    assert [(line["logger"], line["event"]) for line in about_it] == [("authkeep.http", "request")]
    assert about_it[0]["path"] == "/health"
    assert "query-secret-42" not in output
