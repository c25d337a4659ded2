"""The HTTP API: ``/metrics``, ``/livez``, ``/readyz`` (``probes``), the history API under
``/api/v1`` (``history``, ``recommend``) and the Prometheus query API under
``/prometheus/api/v1`` (``prometheus_api``), answering errors with one envelope (``errors``).

``create_app`` builds the FastAPI app from ``AppDeps``: the catch-all for bugs and the HTTP
self-metrics as middleware, the error handlers, and the routers, each given what it needs.
Query routes share one ``QueryLimiter``; the probes and ``/metrics`` stay outside it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from recorder import __version__
from recorder.api.deps import AppDeps, HistoryStore
from recorder.api.errors import CatchAll, install_error_handlers
from recorder.api.history import history_router
from recorder.api.httpmetrics import HttpMetrics, HttpMetricsMiddleware
from recorder.api.limits import QueryLimiter
from recorder.api.probes import probes_router
from recorder.api.prometheus_api import prometheus_router
from recorder.api.recommend import recommendations_router

__all__ = ["AppDeps", "HistoryStore", "create_app"]

log = logging.getLogger(__name__)
"""Where a bug that escaped a handler is logged (``CatchAll``)."""


def create_app(deps: AppDeps) -> FastAPI:
    app = FastAPI(
        title="kube-metrics-recorder",
        version=__version__,
        description="History of Kubernetes CPU and memory usage from metrics.k8s.io. CPU in "
        "cores, memory in bytes.",
    )
    app.add_middleware(CatchAll, log=log)
    if deps.http_registry is not None:
        app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(deps.http_registry))
    install_error_handlers(app)
    queries = QueryLimiter(
        deps.max_concurrent_queries, deps.max_queued_queries, deps.queue_timeout_seconds
    )
    app.include_router(probes_router(deps))
    app.include_router(history_router(deps, queries))
    app.include_router(recommendations_router(deps, queries))
    app.include_router(prometheus_router(deps, queries))
    return app
