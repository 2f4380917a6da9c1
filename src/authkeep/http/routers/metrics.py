"""``GET /metrics``: Prometheus text format, for allowed client IPs only.

Anyone else gets the same 404 as an unknown path: the endpoint's existence is not
advertised, and metrics (login failure rates, route names, session counts) tell an attacker
how an attack is going. Allowed: ``AUTHKEEP_METRICS_ALLOWED_IPS`` (loopback by default),
checked against the proxy-aware client IP.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from authkeep import metrics
from authkeep.http.deps import get_authkeep

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    """Every metric, summed over the worker processes."""
    authkeep = get_authkeep(request)
    client_ip = request.scope.get("state", {}).get("client_ip")
    if not authkeep.metrics_allow_list.allows(client_ip):
        raise HTTPException(status_code=404)
    active = await authkeep.services.stats.active_sessions()
    body = metrics.render([metrics.active_sessions_metric(active)])
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
