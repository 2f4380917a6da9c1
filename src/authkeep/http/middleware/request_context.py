"""Request id, client IP, one access-log line per request, and the last-resort 500.

* ``X-Request-ID``: a well-formed incoming id (1–64 of ``A-Za-z0-9._-``) is echoed so a
  request can be followed across services; anything else is replaced by a new UUID4, so a
  client cannot inject text into logs through it.
* The id and the (proxy-aware) client IP are put in ``scope["state"]`` and the id in the log
  context, so every log line of the request carries it.
* One line per request: ``request_id method path status duration_ms`` — the path without the
  query string (tokens sometimes travel there), never a header or a body.
* An exception that escapes the app becomes ``500 {"detail": "Internal server error",
  "request_id": …}``: no stack trace, no message, but the id to find the logged traceback.
* Each request is counted in the Prometheus metrics by method, route *template* (the
  router leaves the matched route in the scope) and status.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authkeep import metrics
from authkeep.http.client_ip import ClientIPResolver
from authkeep.http.routes import route_template
from authkeep.logging import bind_request, unbind_request

log = structlog.get_logger("authkeep.http")
# Asked before building the access-log line: below INFO it costs one cached level check.
_access = logging.getLogger("authkeep.http")
_VALID_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


class RequestContextMiddleware:
    """Outermost authkeep middleware (inside the security headers)."""

    def __init__(self, app: ASGIApp, *, ip_resolver: ClientIPResolver) -> None:
        self.app = app
        self.ip_resolver = ip_resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _VALID_ID.fullmatch(value):
                    request_id = value.decode("ascii")
                break
        if request_id is None:
            request_id = str(uuid.uuid4())
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = self.ip_resolver.from_scope(scope)
        log_context = bind_request(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if not response_started:
                body = json.dumps(
                    {"detail": "Internal server error", "request_id": request_id}
                ).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            metrics.observe_request(scope["method"], route_template(scope), status, elapsed)
            if _access.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            unbind_request(log_context)
