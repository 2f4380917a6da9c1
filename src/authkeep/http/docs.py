"""Interactive API docs that work offline, with a CSP that allows exactly what they load.

Swagger UI's JavaScript and CSS come from the ``fastapi-offline`` package's static files
(a maintained package that vendors them), mounted under :data:`STATIC_URL`: the page works on
an air-gapped host, and no third party learns who reads the docs or can swap the script the
page runs with the user's token in it (a compromised or spoofed CDN). The CSP allows scripts
and styles from this origin only, plus the page's one inline script by its SHA-256 (no
``'unsafe-inline'``), and lets the page call only this origin — which is what the Authorize
button's password flow needs.

One line serves them for any FastAPI app, authkeep's own or one that embeds it::

    install_docs(app)  # at app.docs_url, else /api/docs; skip it in production
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

DOCS_URL = "/api/docs"
OPENAPI_URL = "/openapi.json"
STATIC_URL = "/api/docs/static"
"""Where the vendored Swagger UI files are served (``swagger-ui-bundle.js``, ...)."""
STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _page(title: str, openapi_url: str) -> tuple[str, str]:
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_URL}/favicon.png",
        # No validator badge: Swagger UI would send the schema's URL to validator.swagger.io
        # from every page view (a leak off an internal host, and a request off an air gap).
        swagger_ui_parameters={"persistAuthorization": False, "validatorUrl": None},
    ).body
    html = bytes(page).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    csp = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return html, csp


def _drop_fastapi_docs(app: FastAPI) -> str | None:
    """Remove FastAPI's own CDN-based docs pages from ``app``; return where Swagger UI was."""
    # They load Swagger UI and ReDoc from a CDN: blank offline, and blank under the strict
    # API CSP that authkeep's security headers give every page without its own.
    docs_url = app.docs_url
    gone = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}

    def kept(route: BaseRoute) -> bool:
        return not (isinstance(route, Route) and route.path in gone)

    app.router.routes[:] = [route for route in app.router.routes if kept(route)]
    app.docs_url = None
    app.redoc_url = None
    return docs_url


def install_docs(app: FastAPI, docs_url: str | None = None) -> str:
    """Serve ``app``'s interactive docs (Swagger UI) from the package's own files.

    The page goes at ``docs_url``, else where ``app`` had FastAPI's own page (``/docs`` by
    default), else at ``/api/docs``; FastAPI's CDN-based ``/docs`` and ``/redoc`` pages are
    removed. The schema is ``app.openapi_url`` when the app serves one, else ``/openapi.json``
    is added. Call it outside production only. Returns the docs page's path.
    """
    previous = _drop_fastapi_docs(app)
    url = docs_url or previous or DOCS_URL
    openapi_url = app.openapi_url
    if openapi_url is None:
        openapi_url = OPENAPI_URL

        async def openapi(_request: Request) -> JSONResponse:
            return JSONResponse(app.openapi())

        app.add_route(openapi_url, openapi, include_in_schema=False)
    html, csp = _page(f"{app.title} — API docs", openapi_url)

    async def docs(_request: Request) -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": csp})

    app.add_route(url, docs, include_in_schema=False)
    app.router.routes.append(
        Mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="authkeep-docs-static")
    )
    return url
