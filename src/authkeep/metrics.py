"""Prometheus metrics: what a running authkeep counts, and how ``/metrics`` renders it.

Metrics are module-level, as prometheus-client expects, so that they also work in its
multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set *before this module is first
imported* (``authkeep serve --workers N`` does it), every worker writes its samples to files
in that directory and any worker's ``/metrics`` sums them all.

Label values are bounded on purpose — a route *template*, never a raw path; a known HTTP
method or ``OTHER`` — so a client cannot create unbounded time series (memory exhaustion of
the server and of Prometheus) by requesting random URLs.

Other modules add their own metrics here (e.g. rate limiting); keep names prefixed
``authkeep_``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "AUDIT_WRITE_FAILURES",
    "CONTENT_TYPE_LATEST",
    "HTTP_DENIED",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "LOGINS",
    "MFA_VERIFICATIONS",
    "OUTBOX_MESSAGES",
    "PASSKEY_CEREMONIES",
    "RATE_LIMITED",
    "RATE_LIMIT_STORAGE_ERRORS",
    "REFRESH_REUSE",
    "STEP_UPS",
    "STEP_UP_REQUIRED",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_EVENT_GAPS",
    "observe_request",
    "render",
]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DENIED = frozenset({401, 403, 429})
UNMATCHED_ROUTE = "<unmatched>"

HTTP_REQUESTS = Counter(
    "authkeep_http_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "authkeep_http_request_duration_seconds",
    "Time from the first byte received to the response finished, by method, route template "
    "and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_DENIED = Counter(
    "authkeep_http_denied_total",
    "Responses that refused the caller: 401 (who are you), 403 (not allowed), 429 (too many).",
    ["status"],
)
LOGINS = Counter(
    "authkeep_logins_total",
    "Password logins by outcome (success or failure).",
    ["outcome"],
)
MFA_VERIFICATIONS = Counter(
    "authkeep_mfa_verifications_total",
    "Second-factor checks by method (totp, recovery_code, webauthn) and outcome (success, "
    "failure): login, enrolment and step-up alike.",
    ["method", "outcome"],
)
REFRESH_REUSE = Counter(
    "authkeep_refresh_reuse_detected_total",
    "Spent refresh tokens presented again (possible theft); each revoked its session.",
)
RATE_LIMITED = Counter(
    "authkeep_rate_limited_total",
    "Requests refused by a rate limit, by rule (global, login_email, login_ip_failures, ...).",
    ["rule"],
)
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "authkeep_rate_limit_storage_errors_total",
    "Rate-limit decisions taken without the storage (Redis unreachable), by rule and outcome: "
    "allowed (the rule fails open) or refused (it fails closed, 503).",
    ["rule", "outcome"],
)
AUDIT_WRITE_FAILURES = Counter(
    "authkeep_audit_write_failures_total",
    "Audit events that could not be written (events without a change, e.g. a 403).",
)
OUTBOX_MESSAGES = Counter(
    "authkeep_outbox_messages_total",
    "Outbox messages by kind (email, webhook) and event: queued (committed), sent, failed "
    "(an attempt failed; it will be retried) and dead (given up after the last attempt).",
    ["kind", "event"],
)
WEBHOOK_DELIVERIES = Counter(
    "authkeep_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: success (2xx), http_error (another status), gone "
    "(410: the endpoint is disabled), timeout, refused (the address is not allowed), "
    "connection_error, cancelled (the endpoint was disabled meanwhile).",
    ["outcome"],
)
WEBHOOK_EVENT_GAPS = Counter(
    "authkeep_webhook_event_gaps_total",
    "Audit ids the webhook event reader passed after waiting the grace for them (an id drawn "
    "by a commit that then failed). Anything else here is worth a look: a row committed after "
    "the grace would have no event.",
)
PASSKEY_CEREMONIES = Counter(
    "authkeep_passkey_ceremonies_total",
    "Passkey (WebAuthn) ceremonies by ceremony (register, login: usernameless sign-in, mfa: "
    "the second step of a password login) and outcome (success, failure, counter_regression: "
    "a device-bound key's counter did not increase, a sign of a cloned authenticator).",
    ["ceremony", "outcome"],
)

STEP_UP_REQUIRED = Counter(
    "authkeep_step_up_required_total",
    "Requests to a sensitive route refused with 401 insufficient_user_authentication (RFC "
    "9470), by what the sign-in lacked: max_age (too old) or acr (no second factor).",
    ["reason"],
)
STEP_UPS = Counter(
    "authkeep_step_ups_total",
    "Step-ups (POST /api/v1/auth/step-up) by method (pwd, otp) and outcome (success, failure).",
    ["method", "outcome"],
)

# (method, route, status) -> (counter child, histogram child): labels() takes a lock and
# builds a key on every call; the children never change, so look them up once.
_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """Count one finished HTTP request (a few microseconds)."""
    if method not in _METHODS:
        method = "OTHER"
    key = (method, route or UNMATCHED_ROUTE, status)
    children = _children.get(key)
    if children is None:
        labels = (key[0], key[1], str(status))
        children = (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)
    if status in _DENIED:
        HTTP_DENIED.labels(str(status)).inc()


def multiprocess_dir() -> str | None:
    """The multiprocess directory, when several processes share the metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Snapshot(Collector):
    """Metrics computed by the caller just before rendering (e.g. from the database)."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def active_sessions_metric(count: int) -> Metric:
    """The ``authkeep_active_sessions`` gauge for a count read from the database."""
    gauge = GaugeMetricFamily(
        "authkeep_active_sessions",
        "Sessions neither revoked nor expired (read from the database at scrape time).",
    )
    gauge.add_metric([], count)
    return gauge


def render(extra: Iterable[Metric] = ()) -> bytes:
    """Every metric in the Prometheus text format, summed over worker processes when
    ``PROMETHEUS_MULTIPROC_DIR`` is set, plus ``extra`` (computed at scrape time)."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    output = generate_latest(registry)
    extras = list(extra)
    if extras:
        snapshot = CollectorRegistry(auto_describe=False)
        snapshot.register(_Snapshot(extras))
        output += generate_latest(snapshot)
    return output
