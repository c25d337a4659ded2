"""Stored values (integer nanocores and bytes, exact averages, percentile floats) to what the
API and CLI show: cores and bytes in JSON, CSV, or kubectl-style tables. The CLI prints what
these functions return and nothing else. The ones that render whole results run with the
cyclic collector paused, as the queries do (``recorder.gcpause``): a full collection that
falls into 8,640 points' rendering walks every object the process holds (~50 ms)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from math import ceil, isfinite
from typing import Any, Protocol, TypeVar

import numpy as np

from recorder import units
from recorder.domain import (
    Agg,
    GroupSummary,
    HistoryResult,
    QueryKind,
    Resource,
    ResourceSummary,
    SeriesInfo,
    SeriesPoints,
    Value,
)
from recorder.gcpause import paused
from recorder.query.params import Window
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
TIME_FORMATS = ("rfc3339", "unix")
"""How CSV and ``recorder top``'s JSON write a time: RFC 3339 in UTC (the default), or unix
seconds."""
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
            # One correctly rounded division, as float(value / _NANO) makes (and faster).
            return value.numerator / (value.denominator * _NANO)
        return value / _NANO
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else float(value)
    return value


def rfc3339(ts_ms: int) -> str:
    """``2024-05-01T10:00:00Z``; with milliseconds (``...00.500Z``) when it has any."""
    moment = datetime.fromtimestamp(ts_ms // SECOND_MS, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = ts_ms % SECOND_MS
    return f"{moment}.{fraction:03d}Z" if fraction else f"{moment}Z"


def time_value(ts_ms: int, time_format: str) -> str | float:
    """A time as ``time_format`` writes it: an RFC 3339 string, or unix seconds."""
    if time_format == "rfc3339":
        return rfc3339(ts_ms)
    if time_format == "unix":
        return ts_ms / SECOND_MS
    raise ValueError(f"unknown time format {time_format!r}: rfc3339 or unix")


@paused()
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
    data["series"] = [_series_json(series, resource, agg) for series in result.series]
    return {"status": "success", "data": data}


def _series_json(series: SeriesPoints, resource: Resource, agg: Agg | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": dict(series.labels),
        "points": [[ts / SECOND_MS, display(resource, value, agg)] for ts, value in series.points],
    }
    lines = (
        ("request", series.request),
        ("limit", series.limit),
        ("allocatable", series.allocatable),
    )
    for name, line in lines:
        if line is not None:
            out[name] = [
                [ts / SECOND_MS, None if value is None else display(resource, value)]
                for (ts, _v), value in zip(series.points, line, strict=True)
            ]
    return out


_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_SERIES_END = '"series":[]}}'


def _number(value: Any) -> str:
    """A number as ``_COMPACT`` writes it: ``repr`` of a plain int or finite float (what the
    encoder itself calls), the encoder for anything else (and its error for NaN)."""
    kind = type(value)
    if kind is int or (kind is float and isfinite(value)):
        return repr(value)
    return _COMPACT.encode(value)


@paused()
def history_json_bytes(
    result: HistoryResult, resource: Resource, kind: str, step_ms: int | None, agg: Agg | None
) -> bytes:
    """``history_json`` as compact UTF-8 JSON, byte for byte what ``JSONResponse`` makes of it,
    rendered series by series: no dict and list per point, no whole-document string beside
    the bytes (245,000 points of 30,000 series: 0.45 s -> 0.14 s)."""
    return history_json_parts(
        [result.series],
        HistoryResult([], result.tier, result.relative_error),
        resource,
        kind,
        step_ms,
        agg,
    )


@paused()
def history_json_parts(
    parts: Iterable[Sequence[SeriesPoints]],
    envelope: HistoryResult,
    resource: Resource,
    kind: str,
    step_ms: int | None,
    agg: Agg | None,
) -> bytes:
    """``history_json_bytes`` of the series ``parts`` yields, each part rendered before the
    next is asked for (``engine.raw_history``): the points of one part at a time are Python
    objects. ``envelope``: the tier and error of the answer (its series are not read).

    The answer grows in one buffer, returned without a copy: a list of each series' bytes
    joined at the end held the whole answer twice at its end, once as one small object per
    series (77,000 of them for a namespace's raw minute, 17 MB) among the query's own objects
    in the allocator's arenas, which a few survivors then kept resident after the answer."""
    text = _COMPACT.encode(history_json(envelope, resource, kind, step_ms, agg))
    if not text.endswith(_SERIES_END):
        raise AssertionError("history_json must end with its series")
    out = io.BytesIO()
    out.write(text[: -len("]}}")].encode())
    plain_ints = resource is Resource.MEMORY  # display() keeps a memory int as it is
    times: dict[int, str] = {}  # the series of an answer share their few timestamps
    comma = ""
    for part in parts:
        for series in part:
            stamps = [ts for ts, _value in series.points]
            values = [value for _ts, value in series.points]
            for ts in set(stamps).difference(times):
                times[ts] = f"[{_number(ts / SECOND_MS)},"  # a point's text up to its value
            shown = _shown_values(values, resource, agg)
            if shown is None:
                shown = [
                    repr(value)
                    if plain_ints and type(value) is int
                    else _number(display(resource, value, agg))
                    for value in values
                ]
            # "[t,v],[t,v]": each point's opening and value joined by "],", then the last "]".
            points = "],".join(map(str.__add__, map(times.__getitem__, stamps), shown))
            points += "]" if points else ""
            labels = _COMPACT.encode(dict(series.labels))
            lines = ""
            if (series.request, series.limit, series.allocatable) != (None, None, None):
                extra = _series_json(series, resource, agg)
                for name in ("request", "limit", "allocatable"):
                    if name in extra:
                        lines += f',"{name}":{_COMPACT.encode(extra[name])}'
            out.write(f'{comma}{{"labels":{labels},"points":[{points}]{lines}}}'.encode())
            comma = ","
    out.write(b"]}}")
    return out.getvalue()  # the buffer itself (cut to its length), not a copy


_EXACT = 2**53
"""Integers below this in magnitude are exact in float64: a division of two of them there is
the one correctly rounded division Python's ``int / int`` makes."""


def _shown_values(values: list[Value], resource: Resource, agg: Agg | None) -> list[str] | None:
    """``_number(display(resource, v, agg))`` of every value of a series, computed in numpy
    when each is an int, each a Fraction or each a finite float whose parts float64 holds
    exactly, so that its one division rounds as ``display``'s does (a kind=pod history of
    1,000 pods over 7 days at 1 h: 168,000 values); ``None`` otherwise (one by one)."""
    if not values or agg is Agg.COUNT:
        return None
    kinds = set(map(type, values))
    cpu = resource is Resource.CPU
    if kinds == {int}:
        if not cpu:
            return list(map(repr, values))  # display keeps a memory int as it is
        if not (-_EXACT < min(values) and max(values) < _EXACT):
            return None
        cores = np.array(values, np.float64) / _NANO
        return list(map(repr, cores.tolist()))
    if kinds == {float}:
        numbers = np.array(values, np.float64)
        if not np.isfinite(numbers).all():
            return None  # (the encoder refuses them: one by one raises as it did)
        return list(map(repr, (numbers / _NANO if cpu else numbers).tolist()))
    if kinds == {Fraction}:
        # One call per value for both parts (two property reads cost twice as much).
        ratios: Iterable[tuple[int, int]] = map(Fraction.as_integer_ratio, values)  # type: ignore[arg-type]
        numerators, denominators = zip(*ratios, strict=True)
        scale = _NANO if cpu else 1
        if not (
            -_EXACT < min(numerators)
            and max(numerators) < _EXACT
            and max(denominators) * scale < _EXACT
        ):
            return None
        quotients = (
            np.array(numerators, np.float64) / (np.array(denominators, np.float64) * scale)
        ).tolist()
        if cpu:
            return list(map(repr, quotients))
        return [  # display keeps a whole number of bytes an int
            repr(n) if d == 1 else repr(q)
            for n, d, q in zip(numerators, denominators, quotients, strict=True)
        ]
    return None


def history_text(
    format: str,
    result: HistoryResult,
    resource: Resource,
    kind: QueryKind,
    step_ms: int | None,
    agg: Agg | None,
    time_format: str = "rfc3339",
) -> str:
    """``recorder query``'s output in ``format`` (``json``, one line; ``csv``, its times as
    ``time_format`` says; ``table``), each ending in a newline."""
    if format == "json":
        return json.dumps(history_json(result, resource, kind.value, step_ms, agg)) + "\n"
    if format == "csv":
        return history_csv(result, resource, agg, time_format)
    if format == "table":
        return history_table(result, resource, agg)
    raise ValueError(f"unknown format {format!r}: json, csv or table")


@paused()
def _with_lines(
    series: SeriesPoints,
) -> Iterator[tuple[tuple[int, Value], int | None, int | None, int | None]]:
    """Each point of ``series`` with its request, limit and allocatable (``None`` where the
    series carries no such line)."""
    none = [None] * len(series.points)
    return zip(
        series.points,
        series.request or none,
        series.limit or none,
        series.allocatable or none,
        strict=True,
    )


def history_csv(
    result: HistoryResult, resource: Resource, agg: Agg | None, time_format: str = "rfc3339"
) -> str:
    """A header row, then one row per point: the series' labels, the time (``time_format``)
    and the value in cores or bytes."""
    time_value(0, time_format)  # an unknown format fails even without points
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(result.series[0].labels) if result.series else []
    unit = "samples" if agg is Agg.COUNT else UNIT[resource]
    lines = any(s.request is not None for s in result.series)
    allocatable = any(s.allocatable is not None for s in result.series)
    extra = [
        f"{resource.value}_request_{UNIT[resource]}",
        f"{resource.value}_limit_{UNIT[resource]}",
    ]
    writer.writerow(
        [
            *names,
            "timestamp",
            f"{resource.value}_{unit}",
            *(extra if lines else []),
            *([f"{resource.value}_allocatable_{UNIT[resource]}"] if allocatable else []),
        ]
    )
    for series in result.series:
        labels = [series.labels[name] for name in names]
        for (ts, value), req, lim, alloc in _with_lines(series):
            row = [*labels, time_value(ts, time_format), display(resource, value, agg)]
            if lines:
                row += ["" if v is None else display(resource, v) for v in (req, lim)]
            if allocatable:
                row.append("" if alloc is None else display(resource, alloc))
            writer.writerow(row)
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
        # The integral divided by the whole window: what avg was before it left out the time
        # without samples (avg over the covered time, times the covered share).
        "avgOverWindow": part.avg * part.coverage / scale,
        "max": display(resource, part.max),
        "p95": part.p95 / scale,
        integral_key: part.integral / per,
        "samples": part.samples,
        "coverage": part.coverage,
    }


def snap_note(window: Window) -> str | None:
    """What a snapped window says (None when it is as asked)."""
    if not window.snapped:
        return None
    return (
        f"the window was snapped to whole UTC days: {rfc3339(window.start_ms)} .. "
        f"{rfc3339(window.end_ms)} (asked: {rfc3339(window.asked_start_ms)} .. "
        f"{rfc3339(window.asked_end_ms)}), so day rollups answer it"
    )


@paused()
def summary_json(
    groups: Sequence[GroupSummary], group_by: str, window: Window, error: float
) -> dict[str, Any]:
    """``start``/``end``: the window answered; a snapped window adds ``snapped`` (the window
    asked for) and a ``note`` saying so."""
    snapped: dict[str, Any] = {}
    note = snap_note(window)
    if note is not None:
        snapped = {
            "snapped": {
                "start": window.asked_start_ms / SECOND_MS,
                "end": window.asked_end_ms / SECOND_MS,
            },
            "note": note,
        }
    return {
        "status": "success",
        "data": {
            "groupBy": group_by,
            "start": window.start_ms / SECOND_MS,
            "end": window.end_ms / SECOND_MS,
            **snapped,
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


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, headers: bool = True) -> str:
    """Left-aligned columns separated by three spaces, like kubectl prints them; without
    ``headers``, the rows alone (as ``--no-headers``: the widths are the rows')."""
    shown = [header, *rows] if headers else list(rows)
    if not shown:
        return ""
    widths = [max(len(str(row[i])) for row in shown) for i in range(len(header))]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in shown
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def kubectl_value(resource: Resource, value: Value) -> str:
    """``250m`` for CPU (millicores, rounded up), ``512Mi`` for memory, as kubectl top."""
    amount = ceil(value) if not isinstance(value, int) else value
    return units.format_cpu(amount) if resource is Resource.CPU else units.format_memory(amount)


def kubectl_percent(resource: Resource, value: Value, allocatable: int | None) -> str:
    """``37%``: usage as a share of allocatable exactly as ``kubectl top node`` computes it
    (both as milli-units, CPU usage rounded up to whole millicores as it is shown, the
    quotient in float64 times 100, truncated); ``<unknown>`` without allocatable."""
    if allocatable is None or allocatable <= 0:
        return "<unknown>"
    if resource is Resource.CPU:
        used = ceil(Fraction(value) / _NANO * 1000)
        available = -(-allocatable // (_NANO // 1000))
    else:
        used = ceil(Fraction(value)) * 1000
        available = allocatable * 1000
    if available <= 0:
        return "<unknown>"
    return f"{int(float(used) / float(available) * 100)}%"


@paused()
def history_table(result: HistoryResult, resource: Resource, agg: Agg | None) -> str:
    """One row per point: the series' labels, the time (RFC 3339) and the kubectl value."""
    names = list(result.series[0].labels) if result.series else ["series"]
    lines = any(s.request is not None for s in result.series)
    allocatable = any(s.allocatable is not None for s in result.series)
    rows = []
    for series in result.series:
        for (ts, value), req, lim, alloc in _with_lines(series):
            moment = rfc3339(ts)
            shown = str(int(value)) if agg is Agg.COUNT else kubectl_value(resource, value)
            row = [*(series.labels[n] for n in names), moment, shown]
            if lines:
                row += ["-" if v is None else kubectl_value(resource, v) for v in (req, lim)]
            if allocatable:  # kubectl top node's percentage of it (a count has none)
                row += [
                    "-" if alloc is None else kubectl_value(resource, alloc),
                    "-" if agg is Agg.COUNT else kubectl_percent(resource, value, alloc),
                ]
            rows.append(row)
    header = [n.upper() for n in names] + ["TIME", resource.value.upper()]
    if lines:
        header += ["REQUEST", "LIMIT"]
    if allocatable:
        header += ["ALLOCATABLE", f"{resource.value.upper()}%"]
    return table(header, rows)


Row = TypeVar("Row", bound=TopRow)


def rank_top(rows: Sequence[Row], sort_by: Resource | None) -> list[Row]:
    """As ``kubectl top``: without ``sort_by`` in label order (cluster, namespace, then the
    name: pod or node, then container); with it, the rows using the most of it first, ties in
    label order."""

    def key(row: Row) -> tuple[Any, ...]:
        if sort_by is None:
            return tuple(row.labels.values())
        used = row.cpu if sort_by is Resource.CPU else row.memory
        return (-used, *row.labels.values())

    return sorted(rows, key=key)


_SUM_RULE = "________"
"""What ``kubectl top pod --sum`` prints above the totals."""


@paused()
def top_table(
    rows: Sequence[TopRow],
    *,
    nodes: bool,
    all_namespaces: bool,
    containers: bool = False,
    headers: bool = True,
    total: bool = False,
    workloads: bool = False,
    allocatable: Mapping[tuple[str, str], tuple[int | None, int | None]] | None = None,
) -> str:
    """``kubectl top nodes`` / ``kubectl top pods [-A] [--containers] [--no-headers] [--sum]``:
    NAME (NAMESPACE too across namespaces; POD and the container's NAME with ``containers``),
    CPU in millicores and memory in MiB; ``total``: kubectl's rule and sum row under the
    table. A CLUSTER column comes first when the rows come from more than one cluster.
    ``workloads``: KIND and NAME of each workload (and CONTAINER with ``containers``).
    Nodes: ``allocatable`` by (cluster, node) adds kubectl's CPU(%) and MEMORY(%) columns
    (``kubectl_percent``; ``<unknown>`` for a node without it) when it has any node."""
    if nodes:
        header, name_keys = ["NAME"], ["node"]
    elif workloads:
        header = ["NAMESPACE"] if all_namespaces else []
        header += ["KIND", "NAME"] + (["CONTAINER"] if containers else [])
        name_keys = ["namespace"] if all_namespaces else []
        name_keys += ["workload_kind", "workload"] + (["container"] if containers else [])
    else:
        header = ["NAMESPACE"] if all_namespaces else []
        header += ["POD", "NAME"] if containers else ["NAME"]
        name_keys = ["namespace"] if all_namespaces else []
        name_keys += ["pod", "container"] if containers else ["pod"]
    if len({row.labels.get("cluster") for row in rows}) > 1:
        header, name_keys = ["CLUSTER", *header], ["cluster", *name_keys]
    if nodes and allocatable:
        header += ["CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
        body = []
        for row in rows:
            cpu_of, memory_of = allocatable.get(
                (row.labels.get("cluster", ""), row.labels["node"]), (None, None)
            )
            body.append(
                [
                    *(row.labels[key] for key in name_keys),
                    kubectl_value(Resource.CPU, row.cpu),
                    kubectl_percent(Resource.CPU, row.cpu, cpu_of),
                    kubectl_value(Resource.MEMORY, row.memory),
                    kubectl_percent(Resource.MEMORY, row.memory, memory_of),
                ]
            )
        return table(header, body, headers=headers)
    header += ["CPU(cores)", "MEMORY(bytes)"]
    body = [
        [
            *(row.labels[key] for key in name_keys),
            kubectl_value(Resource.CPU, row.cpu),
            kubectl_value(Resource.MEMORY, row.memory),
        ]
        for row in rows
    ]
    if total:
        blanks = [""] * len(name_keys)
        cpu: Value = sum((row.cpu for row in rows), 0)
        memory: Value = sum((row.memory for row in rows), 0)
        body.append([*blanks, _SUM_RULE, _SUM_RULE])
        body.append(
            [*blanks, kubectl_value(Resource.CPU, cpu), kubectl_value(Resource.MEMORY, memory)]
        )
    return table(header, body, headers=headers)


def top_window(agg: Agg, start_ms: int, end_ms: int) -> str:
    """The line saying what ``recorder top``'s values are: ``# avg over <start> .. <end>``."""
    return f"# {agg.value} over {rfc3339(start_ms)} .. {rfc3339(end_ms)}\n"


def top_snapped(window: Window) -> str:
    """The line ``recorder top`` adds when its window was snapped (empty when it was not)."""
    note = snap_note(window)
    return "" if note is None else f"# {note}\n"


Allocatable = Mapping[tuple[str, str], tuple[int | None, int | None]]
"""(cluster, node) -> (CPU allocatable nanocores, memory allocatable bytes)."""

ALLOCATABLE_FIELDS = (
    "cpu_allocatable_cores",
    "cpu_percent",
    "memory_allocatable_bytes",
    "memory_percent",
)
"""What ``recorder top nodes -o json|csv`` adds when nodes' allocatable is recorded."""


def _percent(resource: Resource, value: Value, allocatable: int | None) -> int | None:
    shown = kubectl_percent(resource, value, allocatable)
    return None if shown == "<unknown>" else int(shown[:-1])


def _top_records(
    rows: Sequence[TopRow],
    agg: Agg,
    start_ms: int,
    end_ms: int,
    time_format: str,
    allocatable: Allocatable | None = None,
) -> list[dict[str, Any]]:
    start, end = time_value(start_ms, time_format), time_value(end_ms, time_format)
    records = []
    for row in rows:
        record: dict[str, Any] = {
            **row.labels,
            "agg": agg.value,
            "start": start,
            "end": end,
            "cpu_cores": display(Resource.CPU, row.cpu),
            "memory_bytes": display(Resource.MEMORY, row.memory),
        }
        if allocatable:
            cpu_of, memory_of = allocatable.get(
                (row.labels.get("cluster", ""), row.labels.get("node", "")), (None, None)
            )
            record["cpu_allocatable_cores"] = (
                None if cpu_of is None else display(Resource.CPU, cpu_of)
            )
            record["cpu_percent"] = _percent(Resource.CPU, row.cpu, cpu_of)
            record["memory_allocatable_bytes"] = memory_of
            record["memory_percent"] = _percent(Resource.MEMORY, row.memory, memory_of)
        records.append(record)
    return records


def top_json(
    rows: Sequence[TopRow],
    agg: Agg,
    start_ms: int,
    end_ms: int,
    time_format: str = "rfc3339",
    allocatable: Allocatable | None = None,
) -> str:
    """``recorder top -o json``: one object per row, its labels (cluster, then namespace and
    pod, or node; container with ``--containers``), the aggregation and the window, CPU in
    cores and memory in bytes; one line. Nodes with ``allocatable`` (any recorded): also
    ``ALLOCATABLE_FIELDS`` (``null`` for a node without it), the percentages as ``top_table``
    shows them."""
    return json.dumps(_top_records(rows, agg, start_ms, end_ms, time_format, allocatable)) + "\n"


def top_csv(
    rows: Sequence[TopRow],
    agg: Agg,
    start_ms: int,
    end_ms: int,
    time_format: str = "rfc3339",
    *,
    names: Sequence[str],
    headers: bool = True,
    allocatable: Allocatable | None = None,
) -> str:
    """``recorder top -o csv``: the fields of ``top_json`` as columns (``names``: the label
    columns, so a table without rows still has its header; empty for a null)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = [*names, "agg", "start", "end", "cpu_cores", "memory_bytes"]
    if allocatable:
        fields += ALLOCATABLE_FIELDS
    if headers:
        writer.writerow(fields)
    for record in _top_records(rows, agg, start_ms, end_ms, time_format, allocatable):
        writer.writerow(["" if record[f] is None else record[f] for f in fields])
    return out.getvalue()
