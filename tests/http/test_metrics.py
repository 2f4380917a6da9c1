"""Prometheus metrics: counters that match what happened, bounded labels, a restricted
``/metrics``, and sums across workers in multiprocess mode."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from audit_helpers import services
from authkeep import PermissionDenied, RateLimited, Settings, create_app
from authkeep.services.stats import SessionStats
from helpers import PASSWORD, bearer, client_for, login, register, running
from servers import Server, free_port, server_env, wait_healthy

LOOPBACK = ("127.0.0.1", 50000)
LOGIN_ROUTE = "/api/v1/auth/login"


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(rate_limit_enabled=False))

    @application.get("/test/forbidden")
    async def forbidden() -> None:
        raise PermissionDenied()

    @application.get("/test/limited")
    async def limited() -> None:
        raise RateLimited(5, limit="test")

    async with running(application):
        # No caching between the scrapes of a test.
        services(application).stats = SessionStats(services(application).db, ttl_seconds=0)
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.fixture
async def scraper(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, peer=LOOPBACK) as http:
        yield http


async def scrape(scraper: httpx.AsyncClient) -> dict[Any, float]:
    response = await scraper.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_metrics_are_not_public(client: httpx.AsyncClient) -> None:
    hidden = await client.get("/metrics")
    unknown = await client.get("/no-such-page")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json() == unknown.json()


async def test_loopback_may_scrape(scraper: httpx.AsyncClient) -> None:
    samples = await scrape(scraper)
    assert any(name == "authkeep_active_sessions" for name, _ in samples)


async def test_the_allow_list_uses_the_proxy_aware_client_ip(
    make_settings: Callable[..., Settings],
) -> None:
    proxy = ("10.0.0.2", 443)
    settings = make_settings(metrics_allowed_ips=["192.0.2.0/24"], trusted_proxies=["10.0.0.2"])
    application = create_app(settings)
    async with running(application):
        async with client_for(application, peer=proxy) as via_proxy:
            allowed = await via_proxy.get("/metrics", headers={"X-Forwarded-For": "192.0.2.9"})
            refused = await via_proxy.get("/metrics", headers={"X-Forwarded-For": "198.51.100.1"})
        async with client_for(application, peer=("198.51.100.1", 1)) as direct:
            spoofed = await direct.get("/metrics", headers={"X-Forwarded-For": "192.0.2.9"})
    assert (allowed.status_code, refused.status_code, spoofed.status_code) == (200, 404, 404)


@pytest.mark.parametrize("forwarded", ["garbage", "", "unknown", "192.0.2.9, _hidden"])
async def test_an_unparsable_forwarded_chain_is_an_unknown_client_and_refused(
    make_settings: Callable[..., Settings], forwarded: str
) -> None:
    # The default allow-list is loopback, and the proxy is on loopback: falling back to the
    # proxy's own address when the chain does not parse served the metrics to anyone.
    application = create_app(make_settings(trusted_proxies=["127.0.0.1"]))
    async with running(application), client_for(application, ("127.0.0.1", 443)) as proxy:
        garbage = await proxy.get("/metrics", headers={"X-Forwarded-For": forwarded})
        outside = await proxy.get("/metrics", headers={"X-Forwarded-For": "1.2.3.4"})
        own = await proxy.get("/metrics")  # the proxy host's own scraper, no header
    assert (garbage.status_code, outside.status_code, own.status_code) == (404, 404, 200)


async def test_login_storm_counters_equal_the_requests(
    client: httpx.AsyncClient, scraper: httpx.AsyncClient
) -> None:
    emails = [f"user{i}@example.com" for i in range(3)]
    for email in emails:
        await register(client, email)
    attempts: list[tuple[str, str]] = []
    for i in range(30):
        if i % 5 in (1, 3):
            attempts.append((emails[i % 3], "a wrong password entirely"))
        elif i % 5 == 4:
            attempts.append((f"nobody{i}@example.com", PASSWORD))
        else:
            attempts.append((emails[i % 3], PASSWORD))
    expected_ok = sum(1 for email, pw in attempts if pw == PASSWORD and email in emails)
    expected_failed = len(attempts) - expected_ok
    before = await scrape(scraper)

    async def attempt(email: str, password: str) -> int:
        response = await client.post(LOGIN_ROUTE, json={"email": email, "password": password})
        return response.status_code

    statuses = await asyncio.gather(*(attempt(e, p) for e, p in attempts))
    assert statuses.count(200) == expected_ok == 12
    assert statuses.count(401) == expected_failed == 18
    after = await scrape(scraper)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("authkeep_logins_total", outcome="success") == expected_ok
    assert delta("authkeep_logins_total", outcome="failure") == expected_failed
    route = {"method": "POST", "route": LOGIN_ROUTE}
    assert delta("authkeep_http_requests_total", **route, status="200") == expected_ok
    assert delta("authkeep_http_requests_total", **route, status="401") == expected_failed
    assert delta("authkeep_http_request_duration_seconds_count", **route, status="200") == 12
    assert delta("authkeep_http_request_duration_seconds_count", **route, status="401") == 18
    assert delta("authkeep_http_denied_total", status="401") == expected_failed
    assert value(after, "authkeep_active_sessions") == expected_ok


async def test_routes_are_labelled_by_template(
    client: httpx.AsyncClient, scraper: httpx.AsyncClient
) -> None:
    await register(client)
    token = bearer((await login(client))["access_token"])
    before = await scrape(scraper)
    for _ in range(2):
        missing = await client.delete(
            "/api/v1/auth/sessions/2b4f6a52-5f8e-4a47-9a3e-1a7c3e9b0d11", headers=token
        )
        assert missing.status_code == 404
    await client.get("/random/path/12345")
    after = await scrape(scraper)
    template = {"method": "DELETE", "route": "/api/v1/auth/sessions/{session_id}", "status": "404"}
    assert (
        value(after, "authkeep_http_requests_total", **template)
        - value(before, "authkeep_http_requests_total", **template)
        == 2
    )
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, "authkeep_http_requests_total", **unmatched) >= 1
    assert not any("12345" in str(labels) or "2b4f6a52" in str(labels) for _, labels in after)


async def test_403_429_and_refresh_reuse_are_counted(
    app: FastAPI, client: httpx.AsyncClient, scraper: httpx.AsyncClient
) -> None:
    await register(client)
    pair = await login(client)
    before = await scrape(scraper)
    assert (await client.get("/test/forbidden")).status_code == 403
    assert (await client.get("/test/limited")).status_code == 429
    await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    services(app).sessions._reuse_interval = type(services(app).sessions._reuse_interval)(0)
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert replay.status_code == 401
    after = await scrape(scraper)
    for name, labels, expected in (
        ("authkeep_http_denied_total", {"status": "403"}, 1),
        ("authkeep_http_denied_total", {"status": "429"}, 1),
        ("authkeep_http_denied_total", {"status": "401"}, 1),
        ("authkeep_refresh_reuse_detected_total", {}, 1),
    ):
        assert value(after, name, **labels) - value(before, name, **labels) == expected, name


@pytest.mark.slow
def test_several_workers_share_one_view(tmp_path: Path) -> None:
    """``authkeep serve --workers 2``: whichever worker answers /metrics reports the sum."""
    port = free_port()
    env = server_env(
        {
            "AUTHKEEP_ENV": "test",
            "AUTHKEEP_SECRET_KEY": "metrics-test-secret-0123456789-abcdefghijklmnop",
            "AUTHKEEP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/authkeep.db",
            "AUTHKEEP_RATE_LIMIT_ENABLED": "false",
            "AUTHKEEP_HASH_WORKERS": "1",
            "AUTHKEEP_ARGON2_MEMORY_KIB": "8192",
            "AUTHKEEP_ARGON2_TIME_COST": "1",
        }
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "authkeep", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_healthy(server)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(20):
                assert http.get("/health").status_code == 200
            for _ in range(6):
                http.post(LOGIN_ROUTE, json={"email": "x@example.com", "password": "whatever pw"})
            # Several scrapes: whichever worker answers must report the same totals.
            totals = set()
            for _ in range(6):
                samples = parse(http.get("/metrics").text)
                totals.add(
                    (
                        value(
                            samples,
                            "authkeep_http_requests_total",
                            method="POST",
                            route=LOGIN_ROUTE,
                            status="401",
                        ),
                        value(samples, "authkeep_logins_total", outcome="failure"),
                    )
                )
        assert totals == {(6.0, 6.0)}
    finally:
        server.stop()
