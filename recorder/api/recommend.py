"""``GET /api/v1/recommendations``: right-sizing per workload and container name
(``recorder.query.recommend``), as ``recorder recommend`` prints it: JSON (the default), CSV,
or the ``kubectl patch`` patches (``yaml-patch``, ``json-patch``). Every strategy parameter is a
query parameter, bounded; a bad one is a 400 naming it."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from recorder.api import schemas
from recorder.api.deps import AppDeps
from recorder.api.limits import QueryLimiter
from recorder.api.visibility import Visibility, visibility
from recorder.query import params, recommend_output
from recorder.query.recommend import Strategy, recommend
from recorder.query.workloads import WorkloadFilter
from recorder.timeutil import DAY_MS

__all__ = ["recommendations_router"]


class RecommendFormat(StrEnum):
    json = "json"
    csv = "csv"
    yaml_patch = "yaml-patch"
    json_patch = "json-patch"


_MEDIA = {
    RecommendFormat.json: "application/json",
    RecommendFormat.csv: "text/csv; charset=utf-8",
    RecommendFormat.yaml_patch: "application/yaml; charset=utf-8",
    RecommendFormat.json_patch: "text/plain; charset=utf-8",
}

Text = Annotated[str | None, Query(max_length=253, pattern=r"^[^\x00]*$")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON; CSV, YAML patches or kubectl commands with format=",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/yaml": {"schema": {}},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    400: {"description": "A bad parameter: the error names it", "model": schemas.ErrorResponse},
    **schemas.ACCESS_RESPONSES,
    503: {
        "description": "Too many queries at once, the database is unavailable, or the query "
        "timed out",
        "model": schemas.ErrorResponse,
    },
}


def recommendations_router(deps: AppDeps, queries: QueryLimiter) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/recommendations", responses=_RESPONSES)
    async def recommendations(
        access: Annotated[Visibility, Depends(visibility)],
        namespace: Text = None,
        kind: Annotated[
            str | None,
            Query(max_length=63, pattern=r"^[A-Za-z0-9.-]*$", description="Deployment, ..."),
        ] = None,
        name: Text = None,
        container: Text = None,
        selector: Annotated[
            str | None, Query(max_length=1024, description="label selector on pod labels")
        ] = None,
        cluster: Annotated[str | None, Query(max_length=63, pattern=r"^[^\x00]*$")] = None,
        window: Annotated[
            str, Query(max_length=20, description="history to use, ending at end (default 14d)")
        ] = "14d",
        end: Annotated[
            str | None, Query(max_length=40, description="RFC 3339, unix seconds, or -1h")
        ] = None,
        cpu_percentile: Annotated[
            float, Query(gt=0, le=100, description="CPU request = this percentile")
        ] = 95.0,
        memory_buffer: Annotated[
            float, Query(ge=0, le=1000, description="memory = peak plus this percentage")
        ] = 15.0,
        min_points: Annotated[
            int, Query(ge=1, le=10**9, description="no proposal below this many samples")
        ] = 100,
        throttle_ratio: Annotated[
            float, Query(gt=0, le=1, description="throttled at this share of the CPU limit")
        ] = 0.9,
        allow_hpa: Annotated[
            bool, Query(description="propose for a resource an HPA scales on")
        ] = False,
        format: Annotated[RecommendFormat, Query()] = RecommendFormat.json,
    ) -> Response:
        now_ms = deps.now_ms()
        window_ms = params.parse_step_ms(window, name="window", max_ms=deps.max_range_ms)
        end_ms = now_ms if end is None else params.parse_time_ms(end, "end", now_ms)
        strategy = Strategy(
            window_ms=window_ms or 14 * DAY_MS,
            cpu_percentile=cpu_percentile,
            memory_buffer_percent=memory_buffer,
            min_points=min_points,
            throttle_ratio=throttle_ratio,
            allow_hpa=allow_hpa,
        )
        visible = await access.namespaces(namespace)
        if namespace is not None:
            namespaces: tuple[str, ...] = (namespace,)
        else:
            namespaces = tuple(sorted(visible.namespaces or ()))
        where = WorkloadFilter(
            cluster,
            namespaces,
            kind or None,
            name,
            container,
            params.parse_selector(selector),
        )

        def answer() -> Response:
            report = recommend(
                deps.store,
                where,
                strategy,
                end_ms,
                max_rows=deps.max_series,
                max_samples=deps.max_samples,
            )
            if format is RecommendFormat.csv:
                body = recommend_output.recommendations_csv(report)
            elif format is RecommendFormat.yaml_patch:
                body = recommend_output.patches_yaml(recommend_output.patches(report))
            elif format is RecommendFormat.json_patch:
                body = recommend_output.patches_json_lines(recommend_output.patches(report))
            else:
                body = json.dumps(recommend_output.recommendations_json(report))
            return Response(body, media_type=_MEDIA[format], headers=visible.headers())

        return await queries.run(answer)

    return router
