"""HTTP self-metrics: requests by route and status, requests shed, durations.

A pure ASGI middleware (no ``BaseHTTPMiddleware``: it neither buffers bodies nor runs the app
in another task). The ``route`` label is the route's template (``/api/v1/history``) as the
router matched it; a path no route knows is ``other``, so scanners cannot grow the label set.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTHER_ROUTE = "other"
_SHED_KEY = "recorder.shed"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def mark_shed(scope: MutableMapping[str, Any]) -> None:
    """Record in the request's scope that admission control refused it."""
    scope[_SHED_KEY] = True


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else OTHER_ROUTE


class HttpMetrics:
    """The HTTP families, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "recorder_http_requests_total",
            "HTTP requests answered by the recorder, by route template and status code "
            "(route=other for paths no route knows)",
            ["route", "status"],
            registry=registry,
        )
        self.shed = Counter(
            "recorder_http_requests_shed_total",
            "Queries refused with 503 because too many ran or waited already "
            "(raise max_concurrent_queries or add replicas if this grows)",
            ["route"],
            registry=registry,
        )
        self.duration = Histogram(
            "recorder_http_request_duration_seconds",
            "Time from receiving a request to sending the last byte of its response, in seconds",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )


class HttpMetricsMiddleware:
    """Counts and times every HTTP request passing through ``app``."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before responding

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_of(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            if scope.get(_SHED_KEY):
                self.metrics.shed.labels(route).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
