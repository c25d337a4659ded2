"""The HTTP API: ``/metrics``, ``/livez``, ``/readyz`` and the history API under ``/api/v1``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry

from recorder import __version__
from recorder.api import params, render, schemas
from recorder.api.exposition import metrics_response
from recorder.domain import (
    Agg,
    GroupSummary,
    HistoryQuery,
    HistoryResult,
    QueryKind,
    Resource,
    SeriesFilter,
    SeriesInfo,
)
from recorder.errors import QueryError, QueryTimeout, RecorderError, StoreError
from recorder.store.sketch import RELATIVE_ACCURACY

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class HistoryStore(Protocol):
    """What the HTTP API needs of ``store.Store``."""

    def ping(self) -> None: ...

    def schema_is_current(self) -> bool: ...

    def history(
        self, query: HistoryQuery, *, max_points: int, max_samples: int = ...
    ) -> HistoryResult: ...

    def series(
        self,
        where: SeriesFilter,
        *,
        limit: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[SeriesInfo]: ...

    def summary(
        self,
        where: SeriesFilter,
        group_by: str,
        start_ms: int,
        end_ms: int,
        *,
        max_groups: int,
        max_samples: int = ...,
    ) -> list[GroupSummary]: ...


@dataclass
class AppDeps:
    store: HistoryStore
    registry: CollectorRegistry
    interval_seconds: float
    last_success: Callable[[], float | None]
    clock: Callable[[], float] = time.time
    max_points: int = 500_000
    max_samples: int = 5_000_000
    max_series: int = 50_000
    max_range_ms: int = 400 * DAY_MS
    started_at: float = field(default_factory=time.time)


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "errorType": error_type, "error": message}, status_code=status
    )


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A bad parameter: the error names it", "model": schemas.ErrorResponse},
    503: {
        "description": "The database is unavailable or the query timed out",
        "model": schemas.ErrorResponse,
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


def create_app(deps: AppDeps) -> FastAPI:
    app = FastAPI(
        title="kube-metrics-recorder",
        version=__version__,
        description="History of Kubernetes CPU and memory usage from metrics.k8s.io. CPU in "
        "cores, memory in bytes.",
    )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
            for err in exc.errors()
        )
        return _error(400, "bad_data", problems)

    @app.exception_handler(QueryError)
    async def _bad_query(_request: Request, exc: QueryError) -> JSONResponse:
        return _error(400, "bad_data", str(exc))

    @app.exception_handler(QueryTimeout)
    async def _timeout(_request: Request, exc: QueryTimeout) -> JSONResponse:
        return _error(503, "timeout", str(exc))

    @app.exception_handler(StoreError)
    async def _store_down(_request: Request, exc: StoreError) -> JSONResponse:
        return _error(503, "unavailable", str(exc))

    def now_ms() -> int:
        return int(deps.clock() * 1000)

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
    def livez() -> str:
        return "ok\n"

    @app.get(
        "/readyz",
        responses={
            200: {"model": schemas.ReadyResponse, "description": "Ready"},
            503: {"model": schemas.ReadyResponse, "description": "Not ready: a check failed"},
        },
    )
    def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            deps.store.ping()
            checks["database"] = "ok"
            checks["schema"] = "ok" if deps.store.schema_is_current() else "outdated: run migrate"
        except RecorderError as exc:
            checks["database"] = f"failed: {exc}"
        now = deps.clock()
        allowed = max(3 * deps.interval_seconds, 60.0)
        last = deps.last_success()
        if last is not None and now - last <= allowed:
            checks["poll"] = "ok"
        elif last is None and now - deps.started_at <= allowed:
            checks["poll"] = "ok (starting)"
        else:
            checks["poll"] = f"no successful poll in the last {allowed:.0f}s"
        ready = all(value.startswith("ok") for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "fail", "checks": checks},
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
    def history(
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
        step_ms = params.parse_step_ms(step)
        query = HistoryQuery(
            resource=resource,
            where=where(kind, node, namespace, pod, container, selector),
            start_ms=start_ms,
            end_ms=end_ms,
            step_ms=step_ms,
            agg=agg,
        )
        result = deps.store.history(query, max_points=deps.max_points, max_samples=deps.max_samples)
        shown_agg = agg if step_ms is not None else None
        if format is OutputFormat.csv:
            return Response(
                render.history_csv(result, resource, shown_agg),
                media_type="text/csv; charset=utf-8",
            )
        return JSONResponse(render.history_json(result, resource, kind.value, step_ms, shown_agg))

    @app.get("/api/v1/series", responses=_ok(schemas.SeriesResponse))
    def series(
        kind: Annotated[QueryKind, Query()] = QueryKind.CONTAINER,
        node: Text = None,
        namespace: Text = None,
        pod: Text = None,
        container: Text = None,
        selector: Selector = None,
        start: TimeParam = None,
        end: TimeParam = None,
    ) -> JSONResponse:
        now = now_ms()
        start_ms = params.parse_time_ms(start, "start", now) if start else None
        end_ms = params.parse_time_ms(end, "end", now) if end else None
        stored_kind = QueryKind.NODE if kind is QueryKind.NODE else QueryKind.CONTAINER
        found = deps.store.series(
            where(stored_kind, node, namespace, pod, container, selector),
            limit=deps.max_series,
            start_ms=start_ms,
            end_ms=end_ms,
        )
        if kind is QueryKind.POD:
            found = _pods_of(found)
        return JSONResponse(render.series_json(found))

    @app.get("/api/v1/summary", responses=_ok(schemas.SummaryResponse))
    def summary(
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
    ) -> JSONResponse:
        grouping = params.parse_group_by(group_by)
        if (grouping == "node") != (kind is QueryKind.NODE):
            raise QueryError("group_by=node goes with kind=node, and only with it")
        start_ms, end_ms = params.parse_range(
            start, end, now_ms=now_ms(), default_ms=24 * HOUR_MS, max_range_ms=deps.max_range_ms
        )
        stored_kind = QueryKind.NODE if kind is QueryKind.NODE else QueryKind.CONTAINER
        groups = deps.store.summary(
            where(stored_kind, node, namespace, pod, container, selector),
            grouping,
            start_ms,
            end_ms,
            max_groups=deps.max_series,
            max_samples=deps.max_samples,
        )
        return JSONResponse(
            render.summary_json(groups, grouping, start_ms, end_ms, RELATIVE_ACCURACY)
        )

    return app


def _pods_of(found: list[SeriesInfo]) -> list[SeriesInfo]:
    pods: dict[tuple[str, str], SeriesInfo] = {}
    for info in found:
        key = (info.labels["namespace"], info.labels["pod"])
        seen = pods.get(key)
        if seen is None:
            pods[key] = SeriesInfo(
                {"namespace": key[0], "pod": key[1]},
                info.first_seen_ms,
                info.last_seen_ms,
                info.pod_labels,
            )
        else:
            pods[key] = SeriesInfo(
                seen.labels,
                min(seen.first_seen_ms, info.first_seen_ms),
                max(seen.last_seen_ms, info.last_seen_ms),
                seen.pod_labels,
            )
    return list(pods.values())
