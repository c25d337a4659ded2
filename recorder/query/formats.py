"""Stored values (integer nanocores and bytes, exact averages, percentile floats) to what the
API and CLI show: cores and bytes in JSON, CSV, or kubectl-style tables. The CLI prints what
these functions return and nothing else."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from math import ceil
from typing import Any, Protocol, TypeVar

from recorder import units
from recorder.domain import (
    Agg,
    GroupSummary,
    HistoryResult,
    QueryKind,
    Resource,
    ResourceSummary,
    SeriesInfo,
    Value,
)
from recorder.timeutil import SECOND_MS


class TopRow(Protocol):
    """One node's or pod's CPU and memory over a window (what ``Store.top`` returns)."""

    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def cpu(self) -> Value: ...
    @property
    def memory(self) -> Value: ...


UNIT = {Resource.CPU: "cores", Resource.MEMORY: "bytes"}
_NANO = 10**9
_GIB_HOURS = 2**30 * 3600
_CORE_HOURS = _NANO * 3600


def display(resource: Resource, value: Value, agg: Agg | None = None) -> int | float:
    """Cores for CPU, bytes for memory; ``count`` stays a count. Every conversion is one
    correctly rounded division, so equal exact values always print the same."""
    if agg is Agg.COUNT:
        return int(value)
    if resource is Resource.CPU:
        if isinstance(value, Fraction):
            return float(value / _NANO)
        return value / _NANO
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else float(value)
    return value


def history_json(
    result: HistoryResult, resource: Resource, kind: str, step_ms: int | None, agg: Agg | None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "resource": resource.value,
        "unit": "samples" if agg is Agg.COUNT else UNIT[resource],
        "kind": kind,
        "tier": result.tier.value,
    }
    if step_ms is not None:
        data["step"] = step_ms / SECOND_MS
        data["agg"] = agg.value if agg else None
        if agg is not None and agg.quantile is not None:
            data["relativeError"] = result.relative_error
    data["series"] = [
        {
            "labels": dict(series.labels),
            "points": [
                [ts / SECOND_MS, display(resource, value, agg)] for ts, value in series.points
            ],
        }
        for series in result.series
    ]
    return {"status": "success", "data": data}


def history_text(
    format: str,
    result: HistoryResult,
    resource: Resource,
    kind: QueryKind,
    step_ms: int | None,
    agg: Agg | None,
) -> str:
    """``recorder query``'s output in ``format`` (``json``, one line; ``csv``; ``table``),
    each ending in a newline."""
    if format == "json":
        return json.dumps(history_json(result, resource, kind.value, step_ms, agg)) + "\n"
    if format == "csv":
        return history_csv(result, resource, agg)
    if format == "table":
        return history_table(result, resource, agg)
    raise ValueError(f"unknown format {format!r}: json, csv or table")


def history_csv(result: HistoryResult, resource: Resource, agg: Agg | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(result.series[0].labels) if result.series else []
    unit = "samples" if agg is Agg.COUNT else UNIT[resource]
    writer.writerow([*names, "timestamp", f"{resource.value}_{unit}"])
    for series in result.series:
        labels = [series.labels[name] for name in names]
        for ts, value in series.points:
            writer.writerow([*labels, ts / SECOND_MS, display(resource, value, agg)])
    return out.getvalue()


def series_json(found: Sequence[SeriesInfo]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": [
            {
                "labels": dict(info.labels),
                "firstSeen": info.first_seen_ms / SECOND_MS,
                "lastSeen": info.last_seen_ms / SECOND_MS,
                **({"podLabels": dict(info.pod_labels)} if info.pod_labels is not None else {}),
            }
            for info in found
        ],
    }


def _summary_part(resource: Resource, part: ResourceSummary | None) -> dict[str, Any] | None:
    if part is None:
        return None
    integral_key, per = (
        ("coreHours", _CORE_HOURS) if resource is Resource.CPU else ("gibHours", _GIB_HOURS)
    )
    scale = _NANO if resource is Resource.CPU else 1
    return {
        "avg": part.avg / scale,
        "max": display(resource, part.max),
        "p95": part.p95 / scale,
        integral_key: part.integral / per,
        "samples": part.samples,
        "coverage": part.coverage,
    }


def summary_json(
    groups: Sequence[GroupSummary], group_by: str, start_ms: int, end_ms: int, error: float
) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "groupBy": group_by,
            "start": start_ms / SECOND_MS,
            "end": end_ms / SECOND_MS,
            "relativeError": error,
            "groups": [
                {
                    "group": g.group,
                    "series": g.series,
                    "cpu": _summary_part(Resource.CPU, g.cpu),
                    "memory": _summary_part(Resource.MEMORY, g.memory),
                }
                for g in groups
            ],
        },
    }


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, like kubectl prints them."""
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def kubectl_value(resource: Resource, value: Value) -> str:
    """``250m`` for CPU (millicores, rounded up), ``512Mi`` for memory, as kubectl top."""
    amount = ceil(value) if not isinstance(value, int) else value
    return units.format_cpu(amount) if resource is Resource.CPU else units.format_memory(amount)


def history_table(result: HistoryResult, resource: Resource, agg: Agg | None) -> str:
    """One row per point: the series' labels, the time (RFC 3339) and the kubectl value."""
    names = list(result.series[0].labels) if result.series else ["series"]
    rows = []
    for series in result.series:
        for ts, value in series.points:
            moment = datetime.fromtimestamp(ts / SECOND_MS, UTC).isoformat().replace("+00:00", "Z")
            shown = str(int(value)) if agg is Agg.COUNT else kubectl_value(resource, value)
            rows.append([*(series.labels[n] for n in names), moment, shown])
    header = [n.upper() for n in names] + ["TIME", resource.value.upper()]
    return table(header, rows)


Row = TypeVar("Row", bound=TopRow)


def rank_top(rows: Sequence[Row], sort_by: Resource, limit: int) -> list[Row]:
    """The ``limit`` rows using the most of ``sort_by``, as ``kubectl top --sort-by``; ties in
    label order."""

    def key(row: Row) -> tuple[Any, ...]:
        used = row.cpu if sort_by is Resource.CPU else row.memory
        return (-used, *row.labels.values())

    return sorted(rows, key=key)[: max(limit, 0)]


def top_table(rows: Sequence[TopRow], *, nodes: bool, all_namespaces: bool) -> str:
    """``kubectl top nodes`` / ``kubectl top pods [-A]``: NAME (NAMESPACE too across
    namespaces), CPU in millicores and memory in MiB."""
    if nodes:
        header, name_keys = ["NAME"], ["node"]
    elif all_namespaces:
        header, name_keys = ["NAMESPACE", "NAME"], ["namespace", "pod"]
    else:
        header, name_keys = ["NAME"], ["pod"]
    header += ["CPU(cores)", "MEMORY(bytes)"]
    body = [
        [
            *(row.labels[key] for key in name_keys),
            kubectl_value(Resource.CPU, row.cpu),
            kubectl_value(Resource.MEMORY, row.memory),
        ]
        for row in rows
    ]
    return table(header, body)
