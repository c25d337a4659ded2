"""The history API: ``/api/v1/history``, ``/api/v1/series`` and ``/api/v1/summary``.

Each route declares its parameters, parses them with ``recorder.query.params`` on the event
loop, builds the domain query, and hands one blocking function (``engine`` call and
``formats`` rendering) to the ``QueryLimiter``, which runs it in a thread of its own pool or
refuses it with 503 and ``Retry-After``. The CLI's ``recorder query`` and ``recorder top`` go
through the same ``engine`` and ``formats``.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from recorder.api import schemas
from recorder.api.deps import AppDeps
from recorder.api.limits import QueryLimiter
from recorder.api.visibility import Visibility, Visible, visibility
from recorder.domain import (
    Agg,
    HistoryQuery,
    HistoryResult,
    QueryKind,
    Resource,
    SeriesFilter,
    Tier,
)
from recorder.query import engine, formats, params
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.timeutil import HOUR_MS

__all__ = ["history_router"]


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"


class TimeFormat(StrEnum):
    rfc3339 = "rfc3339"
    unix = "unix"


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (when too many queries ran)",
        "schema": {"type": "integer"},
    }
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A bad parameter: the error names it", "model": schemas.ErrorResponse},
    **schemas.ACCESS_RESPONSES,
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
Cluster = Annotated[
    str | None,
    Query(max_length=63, pattern=r"^[^\x00]*$", description="only series of this cluster"),
]
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


def series_filter(
    kind: Annotated[
        QueryKind,
        Query(
            description="pod = sum of its containers; workload = sum of its pods, each pod's "
            "newest sample within two poll intervals of each instant"
        ),
    ] = QueryKind.CONTAINER,
    node: Text = None,
    namespace: Text = None,
    pod: Text = None,
    container: Text = None,
    selector: Selector = None,
    cluster: Cluster = None,
    workload_kind: Annotated[
        str | None,
        Query(
            max_length=63,
            pattern=r"^[^\x00]*$",
            description="pods whose top-level owner is of this kind (Deployment, StatefulSet, "
            "DaemonSet, CronJob, Job, Pod for a bare pod; any case)",
        ),
    ] = None,
    workload: Annotated[
        str | None,
        Query(
            max_length=253,
            pattern=r"^[^\x00]*$",
            description="pods whose top-level owner has this name",
        ),
    ] = None,
) -> SeriesFilter:
    """The parameters every history route shares: which series."""
    return SeriesFilter(
        kind,
        node,
        namespace,
        pod,
        container,
        params.parse_selector(selector),
        cluster,
        workload_kind,
        workload,
    )


Filters = Annotated[SeriesFilter, Depends(series_filter)]
Access = Annotated[Visibility, Depends(visibility)]


async def visible_part(access: Visibility, where: SeriesFilter) -> tuple[SeriesFilter, Visible]:
    """``where`` narrowed to what the caller may read: node data needs cluster-wide access,
    a named namespace that namespace, and a query over namespaces is filtered to the readable
    ones (``Forbidden`` otherwise)."""
    if where.kind is QueryKind.NODE:
        await access.cluster()
        return where, Visible()
    visible = await access.namespaces(where.namespace)
    return replace(where, namespaces=visible.namespaces), visible


def _marked(response: Response, visible: Visible) -> Response:
    response.headers.update(visible.headers())
    return response


def history_router(deps: AppDeps, queries: QueryLimiter) -> APIRouter:
    """The history routes over ``deps.store``, their queries run by ``queries``."""
    router = APIRouter()

    @router.get(
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
        where: Filters,
        access: Access,
        start: TimeParam = None,
        end: TimeParam = None,
        step: Annotated[
            str | None, Query(max_length=20, description="bucket size: 30s, 5m, 1h, 1d")
        ] = None,
        agg: Annotated[Agg, Query(description="aggregation within each step")] = Agg.AVG,
        format: Annotated[OutputFormat, Query()] = OutputFormat.json,
        time_format: Annotated[
            TimeFormat,
            Query(description="times in CSV: RFC 3339 (2026-11-28T16:00:00Z) or unix seconds"),
        ] = TimeFormat.rfc3339,
        with_requests: Annotated[
            bool,
            Query(
                description="each series also carries `request` and `limit`: the resource's "
                "request and limit in effect at each point (null: unknown, or no limit), "
                "summed over a pod's containers and over the pods a workload's value counts"
            ),
        ] = False,
        with_allocatable: Annotated[
            bool,
            Query(
                description="kind=node: each series also carries `allocatable`, the node's "
                "allocatable CPU or memory in effect at each point (null: not recorded), what "
                "kubectl top node's percentages divide by"
            ),
        ] = False,
    ) -> Response:
        start_ms, end_ms = params.parse_range(
            start, end, now_ms=deps.now_ms(), default_ms=HOUR_MS, max_range_ms=deps.max_range_ms
        )
        step_ms = params.parse_step_ms(step, max_ms=deps.max_range_ms)
        where, visible = await visible_part(access, where)
        query = HistoryQuery(resource, where, start_ms, end_ms, step_ms, agg)
        shown_agg = agg if step_ms is not None else None

        def answer() -> Response:
            if (
                format is OutputFormat.json
                and step_ms is None
                and where.kind is not QueryKind.WORKLOAD
                and not with_requests
                and not with_allocatable
            ):
                # Raw points, a slice of series at a time: the largest answers (a namespace's
                # raw minutes) never hold every point as Python objects at once.
                parts = engine.raw_history(
                    deps.store, query, max_points=deps.max_points, max_samples=deps.max_samples
                )
                return Response(
                    formats.history_json_parts(
                        (series for series, _outputs in parts),
                        HistoryResult([], Tier.RAW),
                        resource,
                        where.kind.value,
                        None,
                        None,
                    ),
                    media_type="application/json",
                )
            result = engine.history(
                deps.store,
                query,
                max_points=deps.max_points,
                max_samples=deps.max_samples,
                interval_ms=deps.interval_ms,
                with_requests=with_requests,
                with_allocatable=with_allocatable,
            )
            if format is OutputFormat.csv:
                return Response(
                    formats.history_csv(result, resource, shown_agg, time_format.value),
                    media_type="text/csv; charset=utf-8",
                )
            return Response(
                formats.history_json_bytes(result, resource, where.kind.value, step_ms, shown_agg),
                media_type="application/json",
            )

        return _marked(await queries.run(answer), visible)

    @router.get("/api/v1/series", responses=_ok(schemas.SeriesResponse))
    async def series(
        where: Filters,
        access: Access,
        start: TimeParam = None,
        end: TimeParam = None,
    ) -> Response:
        now_ms = deps.now_ms()
        start_ms = params.parse_time_ms(start, "start", now_ms) if start else None
        end_ms = params.parse_time_ms(end, "end", now_ms) if end else None
        where, visible = await visible_part(access, where)

        def answer() -> Response:
            found = engine.list_series(
                deps.store, where, limit=deps.max_series, start_ms=start_ms, end_ms=end_ms
            )
            return JSONResponse(formats.series_json(found))

        return _marked(await queries.run(answer), visible)

    @router.get("/api/v1/summary", responses=_ok(schemas.SummaryResponse))
    async def summary(
        group_by: Annotated[
            str,
            Query(
                max_length=300,
                pattern=r"^(cluster|namespace|pod|container|node|workload|label:.+)$",
                description="cluster, namespace, pod, container, node, workload "
                "(namespace/Kind/name: a pod's top-level owner) or label:<key>",
            ),
        ],
        where: Filters,
        access: Access,
        start: TimeParam = None,
        end: TimeParam = None,
    ) -> Response:
        grouping = params.parse_group_by(group_by, where.kind)
        start_ms, end_ms = params.parse_range(
            start,
            end,
            now_ms=deps.now_ms(),
            default_ms=24 * HOUR_MS,
            max_range_ms=deps.max_range_ms,
        )

        window = params.day_window(start_ms, end_ms)
        where, visible = await visible_part(access, where)

        def answer() -> Response:
            groups = engine.summarize(
                deps.store,
                where,
                grouping,
                window.start_ms,
                window.end_ms,
                max_groups=deps.max_series,
                max_samples=deps.max_samples,
            )
            return JSONResponse(formats.summary_json(groups, grouping, window, RELATIVE_ACCURACY))

        return _marked(await queries.run(answer), visible)

    return router
