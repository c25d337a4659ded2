"""The HTTP API: ``/metrics``, ``/livez``, ``/readyz`` (``probes``), the history API under
``/api/v1`` (``history``, ``recommend``) and the Prometheus query API under
``/prometheus/api/v1`` (``prometheus_api``), the history page at ``/`` and the docs pages
(``pages``), answering errors with one envelope (``errors``).

``create_app`` builds the FastAPI app from ``AppDeps``: as middleware, outermost first, the
HTTP self-metrics, the catch-all for bugs, the body limit and the access guard (``guard``:
authentication, rate limit, authorization of every route but the probes and the API's
description); the error handlers; and the routers, each given what it needs. Query routes
share one ``QueryLimiter``; the probes and ``/metrics`` stay outside it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import Depends, FastAPI

from recorder import __version__
from recorder.api.access import AuthMode
from recorder.api.bodylimit import BodyLimit
from recorder.api.deps import AppDeps, HistoryStore
from recorder.api.errors import CatchAll, install_error_handlers
from recorder.api.guard import OPEN_PATHS, AccessGuard, Denials, authorize
from recorder.api.history import history_router
from recorder.api.httpmetrics import HttpMetrics, HttpMetricsMiddleware
from recorder.api.limits import QueryLimiter, SingleFlight
from recorder.api.pages import STATIC_PREFIX, Assets, pages_router
from recorder.api.probes import probes_router
from recorder.api.prometheus_api import prometheus_router
from recorder.api.ratelimit import RateLimiter
from recorder.api.recommend import recommendations_router
from recorder.errors import StoreUnavailable
from recorder.query import engine

__all__ = ["AppDeps", "HistoryStore", "create_app"]

log = logging.getLogger(__name__)
"""Where a bug that escaped a handler is logged (``CatchAll``)."""
NAMESPACES_TTL_SECONDS = 10.0
"""How long the list of the history's namespaces (asked when a query over namespaces is
filtered in Kubernetes mode) is reused: a new namespace's history shows within seconds."""


def create_app(deps: AppDeps) -> FastAPI:
    app = FastAPI(
        title="kube-metrics-recorder",
        version=__version__,
        description="History of Kubernetes CPU and memory usage from metrics.k8s.io. CPU in "
        "cores, memory in bytes.",
        dependencies=[Depends(authorize)],
        # The docs pages are ``pages``' own, over assets served here rather than from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    denials = Denials(deps.http_registry)

    listing = SingleFlight(
        lambda: engine.namespaces(deps.store),
        deadline_seconds=deps.readiness_timeout_seconds * 5,
        ttl_seconds=NAMESPACES_TTL_SECONDS,
        name="recorder-namespaces",
    )

    async def known_namespaces() -> Sequence[str]:
        found = await listing.get()
        if found is None:
            raise StoreUnavailable("the database did not list the history's namespaces in time")
        return found

    app.add_middleware(
        AccessGuard,
        authorizer=deps.authorizer,
        known=known_namespaces,
        limiter=(
            RateLimiter(deps.rate_limit, deps.rate_limit_burst) if deps.rate_limit > 0 else None
        ),
        denials=denials,
    )
    app.add_middleware(BodyLimit, max_bytes=deps.max_request_body_bytes)
    app.add_middleware(CatchAll, log=log)
    if deps.http_registry is not None:
        app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(deps.http_registry))
    install_error_handlers(app, on_denial=denials.count)
    queries = QueryLimiter(
        deps.max_concurrent_queries, deps.max_queued_queries, deps.queue_timeout_seconds
    )
    app.include_router(probes_router(deps))
    app.include_router(history_router(deps, queries))
    app.include_router(recommendations_router(deps, queries))
    app.include_router(prometheus_router(deps, queries))
    app.include_router(pages_router())
    app.mount(STATIC_PREFIX, Assets(), name="static")
    if deps.authorizer.mode is not AuthMode.NONE:
        _declare_bearer(app)
    return app


def _declare_bearer(app: FastAPI) -> None:
    """Say in the OpenAPI document that every route but the open ones takes a bearer token
    (so the docs page offers to send one)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            for path, operations in schema.get("paths", {}).items():
                if path not in OPEN_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
