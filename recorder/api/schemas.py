"""Response shapes, for the OpenAPI document (responses are built by ``render``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """``bad_data`` (400: the message names the parameter), ``not_found`` (404),
    ``unavailable`` (503: too many queries at once, with ``Retry-After``, or the database is
    down, or access control cannot decide), ``timeout`` (503: the query ran past the statement
    timeout), ``internal`` (500: a bug, never caused by client input), ``unauthorized`` (401:
    no or an unknown bearer token), ``forbidden`` (403), ``rate_limited`` (429, with
    ``Retry-After``), ``too_large`` (413: the request body)."""

    status: Literal["error"]
    errorType: Literal[
        "bad_data",
        "not_found",
        "timeout",
        "unavailable",
        "internal",
        "unauthorized",
        "forbidden",
        "rate_limited",
        "too_large",
    ]
    error: str


ACCESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or an unknown bearer token", "model": ErrorResponse},
    403: {
        "description": "The caller may not read the namespace, node or cluster-wide data asked "
        "for (a query over namespaces is filtered instead: see the "
        "X-Recorder-Filtered-Namespaces header)",
        "model": ErrorResponse,
    },
    413: {"description": "The request body is too large", "model": ErrorResponse},
    429: {
        "description": "Too many requests from this client (try again after Retry-After)",
        "model": ErrorResponse,
    },
}
"""What access control and the request limits may answer on any guarded route."""


class Series(BaseModel):
    labels: dict[str, str]
    points: list[tuple[float, float]] = Field(description="[unix seconds, value] pairs")
    request: list[tuple[float, float | None]] | None = Field(
        None, description="with_requests: the request in effect at each point (null: unknown)"
    )
    limit: list[tuple[float, float | None]] | None = Field(
        None, description="with_requests: the limit at each point (null: unknown or none)"
    )
    allocatable: list[tuple[float, float | None]] | None = Field(
        None, description="with_allocatable: the node's allocatable at each point (null: unknown)"
    )


class HistoryData(BaseModel):
    resource: Literal["cpu", "memory"]
    unit: Literal["cores", "bytes", "samples"]
    kind: Literal["node", "container", "pod", "workload"]
    tier: Literal["raw", "chunk_statistics"]
    step: float | None = None
    agg: str | None = None
    relativeError: float | None = None
    series: list[Series]


class HistoryResponse(BaseModel):
    status: Literal["success"]
    data: HistoryData


class SeriesEntry(BaseModel):
    labels: dict[str, str]
    firstSeen: float
    lastSeen: float
    podLabels: dict[str, str] | None = None


class SeriesResponse(BaseModel):
    status: Literal["success"]
    data: list[SeriesEntry]


class ResourceSummary(BaseModel):
    avg: float = Field(description="the average over the time the group had samples (covered)")
    avgOverWindow: float = Field(description="the usage integral divided by the whole window")
    max: float
    p95: float
    coreHours: float | None = None
    gibHours: float | None = None
    samples: int
    coverage: float = Field(description="the share of the window the group had samples (0..1)")


class GroupEntry(BaseModel):
    group: str
    series: int
    cpu: ResourceSummary | None
    memory: ResourceSummary | None


class SummaryData(BaseModel):
    groupBy: str
    start: float
    end: float
    relativeError: float
    groups: list[GroupEntry]


class SummaryResponse(BaseModel):
    status: Literal["success"]
    data: SummaryData


class ReadyResponse(BaseModel):
    """``status`` is ``ok`` (HTTP 200) when the history can be read: the database answers and
    its schema is current. ``checks`` also holds the poller's and writer's health, which
    never changes the status: a replica that cannot poll still serves history."""

    status: Literal["ok", "fail"]
    checks: dict[str, str]
