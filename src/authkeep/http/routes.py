"""The route *template* of a request (``/api/v1/auth/sessions/{session_id}``), for metrics
labels and audit details.

Rebuilt from what every Starlette router leaves in the scope — the matched ``route``, the
``path`` and the ``path_params`` — rather than from the route object's own path, which (in
recent FastAPI versions) lacks the prefix of the router it was included with. A request that
matched no route has no template: labelling it with its raw path would let a client create
any number of metric series.
"""

from __future__ import annotations

from starlette.types import Scope


def _replace_last_segment(path: str, value: str, name: str) -> str | None:
    end = len(path)
    while True:
        start = path.rfind("/" + value, 0, end)
        if start < 0:
            return None
        stop = start + 1 + len(value)
        if stop == len(path) or path[stop] == "/":
            return path[: start + 1] + "{" + name + "}" + path[stop:]
        end = start


def route_template(scope: Scope) -> str | None:
    """The template of the route this request matched, or None if it matched none."""
    route = scope.get("route")
    if route is None:
        return None
    path: str = scope.get("path", "")
    params = scope.get("path_params") or {}
    template: str | None = path
    for name, value in reversed(list(params.items())):
        text = str(value)
        if not text or template is None:
            continue
        template = _replace_last_segment(template, text, name)
    if template is None:
        # Could not line the values up with the path: the route's own (unprefixed) template
        # is still bounded.
        return str(getattr(route, "path_format", None) or getattr(route, "path", "?"))
    return template
