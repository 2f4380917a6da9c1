"""The interactive docs in a real browser, offline: headless Chromium (Debian's ``chromium``
package, driven by Playwright; no browser download) opens ``/api/docs`` of a live
``authkeep serve`` with every request off loopback blocked, finds the operations, signs in
through the Authorize button and calls ``GET /api/v1/auth/me`` from the page.

Skipped with a reason when Chromium is not installed; a failure when ``CI`` is set
(``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from helpers import PASSWORD
from servers import LOAD_TEST_ENV, Server, serving

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EMAIL = "docs-reader@example.com"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
WAIT_MS = 30_000  # an upper bound for a loaded CI machine, not a timing assertion

pytestmark = pytest.mark.slow


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).is_file():
        reason = "Chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = {
        **LOAD_TEST_ENV,
        "AUTHKEEP_SECRET_KEY": "docs-browser-secret-0123456789-abcdefghijklmn",
        "AUTHKEEP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}",
    }
    with serving(env, tmp_path, "docs") as running:
        registered = httpx.post(
            running.url + "/api/v1/auth/register",
            json={"email": EMAIL, "password": PASSWORD},
            timeout=30,
        )
        # Verification is optional outside production: the account signs in at once.
        assert registered.status_code in (201, 202), registered.text
        yield running


def test_the_docs_work_offline_and_the_authorize_button_signs_in(
    chromium: str, server: Server
) -> None:
    from playwright.sync_api import Route, sync_playwright

    off_loopback: list[str] = []
    page_errors: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            off_loopback.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.route("**/*", only_loopback)
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            page.goto(server.url + "/api/docs")
            # Swagger UI ran (its bundle loaded from this server) and listed the operations.
            me_operation = page.locator(".opblock-get").filter(
                has=page.locator('.opblock-summary-path[data-path="/api/v1/auth/me"]')
            )
            me_operation.wait_for()
            assert page.locator('.opblock-summary-path[data-path="/api/v1/auth/login"]').count()

            # Authorize: the OAuth2 password flow against /api/v1/auth/token.
            page.locator(".auth-wrapper button.authorize").click()
            page.locator("#oauth_username").fill(EMAIL)
            page.locator("#oauth_password").fill(PASSWORD)
            page.locator(".auth-btn-wrapper button.authorize").first.click()
            page.locator(".auth-btn-wrapper button", has_text="Logout").first.wait_for()
            page.locator(".auth-btn-wrapper button.btn-done").first.click()

            # Try it out -> Execute on GET /api/v1/auth/me, from the page.
            me_operation.locator(".opblock-summary").click()
            me_operation.locator("button.try-out__btn").click()
            me_operation.locator("button.execute").click()
            status = me_operation.locator(
                ".live-responses-table tr.response .response-col_status"
            ).first
            status.wait_for()
            assert status.inner_text().strip().startswith("200")
            body = me_operation.locator(
                ".live-responses-table tr.response .response-col_description"
            ).first
            assert EMAIL in body.inner_text()
        finally:
            browser.close()

    assert page_errors == []
    # Nothing was even attempted off loopback: no CDN, no validator, no fonts.
    assert off_loopback == []
