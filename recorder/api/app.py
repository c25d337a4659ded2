"""The HTTP API: ``/metrics``, ``/livez``, ``/readyz`` and ``/api/v1/history``."""

from __future__ import annotations

import csv
import io
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
from recorder.api.exposition import metrics_response
from recorder.api.timeparse import parse_time_ms
from recorder.domain import HistoryQuery, Kind, Resource, SeriesPoints
from recorder.errors import QueryError, RecorderError, StoreError

DEFAULT_RANGE_MS = 3_600_000
DEFAULT_MAX_POINTS = 500_000
_NANOCORES_PER_CORE = 1e9
_UNIT = {Resource.CPU: "cores", Resource.MEMORY: "bytes"}


class HistoryStore(Protocol):
    """What the HTTP API needs of ``store.Store``."""

    def ping(self) -> None: ...

    def schema_is_current(self) -> bool: ...

    def history(self, query: HistoryQuery, *, max_points: int) -> list[SeriesPoints]: ...


@dataclass
class AppDeps:
    store: HistoryStore
    registry: CollectorRegistry
    interval_seconds: float
    last_success: Callable[[], float | None]
    clock: Callable[[], float] = time.time
    max_points: int = DEFAULT_MAX_POINTS
    started_at: float = field(default_factory=time.time)


class HistoryKind(StrEnum):
    node = "node"
    container = "container"


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "errorType": error_type, "error": message}, status_code=status
    )


def create_app(deps: AppDeps) -> FastAPI:
    app = FastAPI(
        title="kube-metrics-recorder",
        version=__version__,
        description="History of Kubernetes CPU and memory usage from metrics.k8s.io.",
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

    @app.exception_handler(StoreError)
    async def _store_down(_request: Request, exc: StoreError) -> JSONResponse:
        return _error(503, "unavailable", str(exc))

    @app.get("/livez", response_class=PlainTextResponse)
    def livez() -> str:
        return "ok\n"

    @app.get("/readyz")
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

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        return metrics_response(deps.registry, request.headers.get("accept", ""))

    @app.get("/api/v1/history")
    def history(
        resource: Annotated[Resource, Query(description="cpu (cores) or memory (bytes)")],
        kind: Annotated[HistoryKind, Query()] = HistoryKind.container,
        node: Annotated[str | None, Query(max_length=253)] = None,
        namespace: Annotated[str | None, Query(max_length=63)] = None,
        pod: Annotated[str | None, Query(max_length=253)] = None,
        container: Annotated[str | None, Query(max_length=253)] = None,
        start: Annotated[str | None, Query(description="RFC 3339 or unix seconds")] = None,
        end: Annotated[str | None, Query(description="RFC 3339 or unix seconds")] = None,
        format: Annotated[OutputFormat, Query()] = OutputFormat.json,
    ) -> Response:
        end_ms = parse_time_ms(end, "end") if end else int(deps.clock() * 1000)
        start_ms = parse_time_ms(start, "start") if start else end_ms - DEFAULT_RANGE_MS
        if start_ms > end_ms:
            raise QueryError("start must not be after end")
        query = HistoryQuery(
            resource=resource,
            kind=Kind(kind.value),
            start_ms=start_ms,
            end_ms=end_ms,
            node=node,
            namespace=namespace,
            pod=pod,
            container=container,
        )
        found = deps.store.history(query, max_points=deps.max_points)
        if format is OutputFormat.csv:
            return _csv(resource, found)
        return JSONResponse(
            {
                "status": "success",
                "data": {
                    "resource": resource.value,
                    "unit": _UNIT[resource],
                    "series": [_series_json(resource, s) for s in found],
                },
            }
        )

    return app


def _value(resource: Resource, amount: int) -> float | int:
    # Division by an exact power of ten gives the double nearest the exact decimal value.
    return amount / _NANOCORES_PER_CORE if resource is Resource.CPU else amount


def _series_json(resource: Resource, series: SeriesPoints) -> dict[str, Any]:
    return {
        "labels": dict(series.labels),
        "points": [[ts / 1000, _value(resource, amount)] for ts, amount in series.points],
    }


def _csv(resource: Resource, found: list[SeriesPoints]) -> Response:
    out = io.StringIO()
    label_names = list(found[0].labels) if found else []
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*label_names, "timestamp", f"{resource.value}_{_UNIT[resource]}"])
    for series in found:
        labels = [series.labels[name] for name in label_names]
        for ts, amount in series.points:
            writer.writerow([*labels, ts / 1000, _value(resource, amount)])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
