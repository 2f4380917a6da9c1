"""Interactive API docs outside production, with a CSP that allows only what Swagger UI needs.

The page loads Swagger UI from its CDN and runs one inline script; the CSP names the CDN and
the inline script's SHA-256 (no ``'unsafe-inline'`` for scripts), and lets the page call only
this origin — which is what the Authorize button's password flow needs.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

DOCS_URL = "/api/docs"
OPENAPI_URL = "/openapi.json"
_CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _page(title: str) -> tuple[str, str]:
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=title,
        swagger_ui_parameters={"persistAuthorization": False},
    ).body
    html = bytes(page).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    csp = (
        f"default-src 'none'; script-src {_CDN} {hashes}; style-src {_CDN}; "
        f"img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        f"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return html, csp


def install_docs(app: FastAPI) -> None:
    """Serve ``/openapi.json`` and ``/api/docs`` on ``app``."""
    html, csp = _page(f"{app.title} — API docs")

    async def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    async def docs(_request: Request) -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": csp})

    app.add_route(OPENAPI_URL, openapi, include_in_schema=False)
    app.add_route(DOCS_URL, docs, include_in_schema=False)
