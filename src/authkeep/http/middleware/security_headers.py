"""Security headers on every response, set only where the route did not set its own.

``X-XSS-Protection`` is ``0``: the browsers' XSS auditor it controlled is gone, and where it
survived, ``1; mode=block`` could be abused to blank pages or leak data (XS-Leaks); OWASP's
secure-headers project recommends ``0`` with a Content-Security-Policy doing the real work.
``Cache-Control: no-store`` is added to every response: an API response may hold a token or
user data, and a shared cache must never keep one.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Nothing of an API response is ever rendered as a page: forbid everything.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("X-XSS-Protection", "0"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Permissions-Policy", "geolocation=(), microphone=(), camera=()"),
    ("Content-Security-Policy", API_CSP),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


class SecurityHeadersMiddleware:
    """Add :data:`DEFAULT_HEADERS` to every HTTP response (``setdefault`` semantics)."""

    def __init__(self, app: ASGIApp, headers: tuple[tuple[str, str], ...] = DEFAULT_HEADERS):
        self.app = app
        self.headers = headers
        # Encoded once: this runs on every response.
        self._raw = tuple((name.lower().encode(), value.encode()) for name, value in headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in self._raw if item[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
