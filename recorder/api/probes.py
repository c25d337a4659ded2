"""``/livez``, ``/readyz`` and ``/metrics``: what Kubernetes and Prometheus ask of the service.

``/livez`` answers on the event loop. ``/readyz`` asks the database from one thread at most,
within a deadline, and reuses the answer for a second; the poller's details join its checks
but never change its status code. ``/metrics`` is a sync route in the default thread pool,
outside the query limit.

The probes are unauthenticated: a failed check says its class ("unreachable"), never the
database's user, host, port or name; the full message goes to the log, once per change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from recorder.api import schemas
from recorder.api.deps import AppDeps, HistoryStore
from recorder.api.exposition import metrics_response
from recorder.api.limits import SingleFlight
from recorder.errors import StoreUnavailable

__all__ = ["probes_router"]

log = logging.getLogger(__name__)


def failure_class(exc: BaseException) -> str:
    """What a probe may tell anyone about a failed check: ``unreachable`` (the database cannot
    take requests now) or the exception's class, never its message."""
    if isinstance(exc, StoreUnavailable):
        return "unreachable (details in the log)"
    return f"failed: {type(exc).__name__} (details in the log)"


class _ChangeLog:
    """Logs the readiness checks' failures when they change (the probe runs every few
    seconds; an outage is one line, and its end another)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: str | None = None

    def note(self, failure: str | None) -> None:
        with self._lock:
            if failure == self._last:
                return
            previous, self._last = self._last, failure
        if failure is not None:
            log.warning("readiness: %s", failure)
        elif previous is not None:
            log.info("readiness: the database answers again")


def _database_checks(store: HistoryStore, changes: _ChangeLog) -> dict[str, str]:
    """Readiness as far as the database goes: reachable, and at the schema this code needs."""
    try:
        store.ping()
    except Exception as exc:
        changes.note(f"the database check failed: {exc}")
        return {"database": failure_class(exc)}
    try:
        current = store.schema_is_current()
    except Exception as exc:
        changes.note(f"the schema check failed: {exc}")
        return {"database": "ok", "schema": failure_class(exc)}
    changes.note(None)
    return {"database": "ok", "schema": "ok" if current else "outdated: run recorder migrate"}


def _poller_details(poller_status: Callable[[], Mapping[str, str]]) -> Mapping[str, str]:
    try:
        return {str(name): str(value) for name, value in poller_status().items()}
    except Exception as exc:  # a probe must answer even when the status source is broken
        return {"poller": f"status unavailable: {type(exc).__name__}: {exc}"}


def probes_router(deps: AppDeps) -> APIRouter:
    """The probes and ``/metrics`` of ``deps``' store and registry."""
    router = APIRouter()
    changes = _ChangeLog()
    database = SingleFlight(
        lambda: _database_checks(deps.store, changes),
        deadline_seconds=deps.readiness_timeout_seconds,
        ttl_seconds=deps.readiness_cache_seconds,
        name="recorder-readyz",
    )

    @router.get("/livez", response_class=PlainTextResponse)
    async def livez() -> str:
        return "ok\n"

    @router.get(
        "/readyz",
        responses={
            200: {"model": schemas.ReadyResponse, "description": "Ready to serve reads"},
            503: {
                "model": schemas.ReadyResponse,
                "description": "Not ready: the database is unreachable or its schema outdated",
            },
        },
    )
    async def readyz() -> JSONResponse:
        checks = await database.get()
        if checks is None:
            checks = {"database": f"no answer within {deps.readiness_timeout_seconds:g}s"}
        ready = checks.get("database") == "ok" and checks.get("schema") == "ok"
        details = _poller_details(deps.poller_status)
        return JSONResponse(
            {
                "status": "ok" if ready else "fail",
                "checks": checks | {k: v for k, v in details.items() if k not in checks},
            },
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        return metrics_response(deps.registry, request.headers)

    return router
