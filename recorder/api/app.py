"""The HTTP API: ``/metrics``, ``/livez``, ``/readyz`` and the history API under ``/api/v1``.

Routes are thin: a query route parses its parameters on the event loop, then hands one
blocking function (store call and rendering) to the ``QueryLimiter``, which runs it in a
thread of its own pool or refuses it with 503 and ``Retry-After``. ``/livez`` answers on the
event loop; ``/readyz`` asks the database from one thread at most, within a deadline, and
reuses the answer for a second. ``/metrics`` stays a sync route in the default thread pool,
outside the query limit. Client input gets 4xx with the error envelope; anything else that
escapes a handler is a bug, logged (a few times a minute at most) and answered 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recorder import __version__, timeutil
from recorder.api import schemas
from recorder.api.exposition import Exposer, metrics_response
from recorder.api.httpmetrics import HttpMetrics, HttpMetricsMiddleware, mark_shed
from recorder.api.limits import (
    LogLimiter,
    Overloaded,
    QueryLimiter,
    SingleFlight,
    default_max_concurrent_queries,
)
from recorder.domain import (
    Agg,
    HistoryQuery,
    QueryKind,
    Resource,
    SeriesFilter,
)
from recorder.errors import QueryError, QueryTimeout, StoreError
from recorder.query import engine, formats, params
from recorder.query.engine import HistoryReader
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.timeutil import DAY_MS, HOUR_MS

log = logging.getLogger(__name__)


class HistoryStore(HistoryReader, Protocol):
    """What the HTTP API needs of ``store.Store``."""

    def ping(self) -> None: ...

    def schema_is_current(self) -> bool: ...


def _no_poller_status() -> Mapping[str, str]:
    return {}


@dataclass
class AppDeps:
    """What the HTTP app needs. ``poller_status`` is called on the event loop for every
    ``/readyz``: it must return at once (e.g. read a few attributes), never wait."""

    store: HistoryStore
    registry: CollectorRegistry | Exposer
    """What ``/metrics`` serves: a registry, or one that renders its own body (the service's
    ``RelayRegistry``)."""
    _: KW_ONLY
    poller_status: Callable[[], Mapping[str, str]] = _no_poller_status
    """Details of polling and writing for ``/readyz``'s ``checks`` (``{"poll": "ok",
    "write": "failing for 40s: disk full"}``); they never change its status code."""
    http_registry: CollectorRegistry | None = None
    """Where the HTTP self-metrics go; ``None`` for none."""
    clock: Callable[[], float] = time.time
    max_points: int = 500_000
    max_samples: int = 5_000_000
    max_series: int = 50_000
    max_range_ms: int = 400 * DAY_MS
    max_concurrent_queries: int = field(default_factory=default_max_concurrent_queries)
    max_queued_queries: int = 64
    queue_timeout_seconds: float = 10.0
    readiness_timeout_seconds: float = 2.0
    readiness_cache_seconds: float = 1.0


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"


def _error(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "errorType": error_type, "error": message},
        status_code=status,
        headers=headers,
    )


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (when too many queries ran)",
        "schema": {"type": "integer"},
    }
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A bad parameter: the error names it", "model": schemas.ErrorResponse},
    503: {
        "description": "Too many queries at once (try again after Retry-After), the database "
        "is unavailable, or the query timed out",
        "model": schemas.ErrorResponse,
        "headers": _RETRY_AFTER,
    },
}


def _ok(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": "Success"}, **_ERROR_RESPONSES}


Text = Annotated[str | None, Query(max_length=253, pattern=r"^[^\x00]*$")]
TimeParam = Annotated[
    str | None,
    Query(
        max_length=40,
        description="RFC 3339, unix seconds, `now`, or relative to now (`-24h`, `-7d`)",
    ),
]
Selector = Annotated[
    str | None,
    Query(max_length=1024, description="Kubernetes label selector on pod labels"),
]


class _CatchAll:
    """Turns an exception that escaped every handler into a logged 500 with the error
    envelope. Client input never gets here (tests/integration/test_api_fuzz.py): what does is
    a bug, logged with its traceback a few times a minute at most."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logs = LogLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            dropped = self.logs.allow(type(exc).__name__)
            if dropped is not None:
                log.error(
                    "bug: %s %s failed with %s%s",
                    scope.get("method"),
                    scope.get("path"),
                    type(exc).__name__,
                    f" ({dropped} more not logged)" if dropped else "",
                    exc_info=exc,
                )
            if started:
                raise  # half a response is out: the server closes the connection
            response = _error(
                500,
                "internal",
                "the recorder failed on this request (a bug, logged with its details): "
                "please report it with the request and the log line",
            )
            await response(scope, receive, send)


def _database_checks(store: HistoryStore) -> dict[str, str]:
    """Readiness as far as the database goes: reachable, and at the schema this code needs."""
    try:
        store.ping()
    except Exception as exc:
        return {"database": f"failed: {exc}"}
    try:
        current = store.schema_is_current()
    except Exception as exc:
        return {"database": "ok", "schema": f"failed: {exc}"}
    return {"database": "ok", "schema": "ok" if current else "outdated: run recorder migrate"}


def _poller_details(poller_status: Callable[[], Mapping[str, str]]) -> Mapping[str, str]:
    try:
        return {str(name): str(value) for name, value in poller_status().items()}
    except Exception as exc:  # a probe must answer even when the status source is broken
        return {"poller": f"status unavailable: {type(exc).__name__}: {exc}"}


def create_app(deps: AppDeps) -> FastAPI:
    app = FastAPI(
        title="kube-metrics-recorder",
        version=__version__,
        description="History of Kubernetes CPU and memory usage from metrics.k8s.io. CPU in "
        "cores, memory in bytes.",
    )
    queries = QueryLimiter(
        deps.max_concurrent_queries, deps.max_queued_queries, deps.queue_timeout_seconds
    )
    database = SingleFlight(
        lambda: _database_checks(deps.store),
        deadline_seconds=deps.readiness_timeout_seconds,
        ttl_seconds=deps.readiness_cache_seconds,
        name="recorder-readyz",
    )
    app.add_middleware(_CatchAll)
    if deps.http_registry is not None:
        app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(deps.http_registry))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
            for err in exc.errors()
        )
        return _error(400, "bad_data", problems)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        error_type = "not_found" if exc.status_code == 404 else "bad_data"
        return _error(exc.status_code, error_type, str(exc.detail), exc.headers)

    @app.exception_handler(QueryError)
    async def _bad_query(_request: Request, exc: QueryError) -> JSONResponse:
        return _error(400, "bad_data", str(exc))

    @app.exception_handler(QueryTimeout)
    async def _timeout(_request: Request, exc: QueryTimeout) -> JSONResponse:
        return _error(503, "timeout", str(exc))

    @app.exception_handler(StoreError)
    async def _store_down(_request: Request, exc: StoreError) -> JSONResponse:
        return _error(503, "unavailable", str(exc))

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        mark_shed(request.scope)
        return _error(503, "unavailable", str(exc), {"Retry-After": str(exc.retry_after_seconds)})

    def now_ms() -> int:
        return timeutil.now_ms(deps.clock)

    def where(
        kind: QueryKind,
        node: str | None,
        namespace: str | None,
        pod: str | None,
        container: str | None,
        selector: str | None,
    ) -> SeriesFilter:
        return SeriesFilter(kind, node, namespace, pod, container, params.parse_selector(selector))

    @app.get("/livez", response_class=PlainTextResponse)
    async def livez() -> str:
        return "ok\n"

    @app.get(
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

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        return metrics_response(deps.registry, request.headers)

    @app.get(
        "/api/v1/history",
        responses={
            **_ok(schemas.HistoryResponse),
            200: {
                "model": schemas.HistoryResponse,
                "description": "JSON, or CSV with format=csv",
                "content": {"text/csv": {"schema": {"type": "string"}}},
            },
        },
    )
    async def history(
        resource: Annotated[Resource, Query(description="cpu (cores) or memory (bytes)")],
        kind: Annotated[QueryKind, Query(description="pod = sum of its containers")] = (
            QueryKind.CONTAINER
        ),
        node: Text = None,
        namespace: Text = None,
        pod: Text = None,
        container: Text = None,
        selector: Selector = None,
        start: TimeParam = None,
        end: TimeParam = None,
        step: Annotated[
            str | None, Query(max_length=20, description="bucket size: 30s, 5m, 1h, 1d")
        ] = None,
        agg: Annotated[Agg, Query(description="aggregation within each step")] = Agg.AVG,
        format: Annotated[OutputFormat, Query()] = OutputFormat.json,
    ) -> Response:
        start_ms, end_ms = params.parse_range(
            start, end, now_ms=now_ms(), default_ms=HOUR_MS, max_range_ms=deps.max_range_ms
        )
        step_ms = params.parse_step_ms(step, max_ms=deps.max_range_ms)
        query = HistoryQuery(
            resource=resource,
            where=where(kind, node, namespace, pod, container, selector),
            start_ms=start_ms,
            end_ms=end_ms,
            step_ms=step_ms,
            agg=agg,
        )
        shown_agg = agg if step_ms is not None else None

        def answer() -> Response:
            result = engine.history(
                deps.store, query, max_points=deps.max_points, max_samples=deps.max_samples
            )
            if format is OutputFormat.csv:
                return Response(
                    formats.history_csv(result, resource, shown_agg),
                    media_type="text/csv; charset=utf-8",
                )
            return JSONResponse(
                formats.history_json(result, resource, kind.value, step_ms, shown_agg)
            )

        return await queries.run(answer)

    @app.get("/api/v1/series", responses=_ok(schemas.SeriesResponse))
    async def series(
        kind: Annotated[QueryKind, Query()] = QueryKind.CONTAINER,
        node: Text = None,
        namespace: Text = None,
        pod: Text = None,
        container: Text = None,
        selector: Selector = None,
        start: TimeParam = None,
        end: TimeParam = None,
    ) -> Response:
        now = now_ms()
        start_ms = params.parse_time_ms(start, "start", now) if start else None
        end_ms = params.parse_time_ms(end, "end", now) if end else None
        filters = where(kind, node, namespace, pod, container, selector)

        def answer() -> Response:
            found = engine.list_series(
                deps.store, filters, limit=deps.max_series, start_ms=start_ms, end_ms=end_ms
            )
            return JSONResponse(formats.series_json(found))

        return await queries.run(answer)

    @app.get("/api/v1/summary", responses=_ok(schemas.SummaryResponse))
    async def summary(
        group_by: Annotated[
            str,
            Query(
                max_length=300,
                pattern=r"^(namespace|pod|container|node|label:.+)$",
                description="namespace, pod, container, node or label:<key>",
            ),
        ],
        kind: Annotated[QueryKind, Query()] = QueryKind.CONTAINER,
        node: Text = None,
        namespace: Text = None,
        pod: Text = None,
        container: Text = None,
        selector: Selector = None,
        start: TimeParam = None,
        end: TimeParam = None,
    ) -> Response:
        grouping = params.parse_group_by(group_by)
        if (grouping == "node") != (kind is QueryKind.NODE):
            raise QueryError("group_by=node goes with kind=node, and only with it")
        start_ms, end_ms = params.parse_range(
            start, end, now_ms=now_ms(), default_ms=24 * HOUR_MS, max_range_ms=deps.max_range_ms
        )
        filters = where(kind, node, namespace, pod, container, selector)

        def answer() -> Response:
            groups = engine.summarize(
                deps.store,
                filters,
                grouping,
                start_ms,
                end_ms,
                max_groups=deps.max_series,
                max_samples=deps.max_samples,
            )
            return JSONResponse(
                formats.summary_json(groups, grouping, start_ms, end_ms, RELATIVE_ACCURACY)
            )

        return await queries.run(answer)

    return app
