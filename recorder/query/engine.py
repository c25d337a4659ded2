"""The history queries behind ``/api/v1/history``, ``/series``, ``/summary`` and ``recorder
query``/``top``: which units answer, which tier answers which bucket (``scan``), and the
aggregation of each bucket (``recorder.stats.buckets``). Every query is bounded:
``max_points`` for what a response may hold, ``max_samples`` for how many raw samples it may
decode. Queries run with the cyclic collector paused (``recorder.gcpause``): they build
millions of acyclic rows, accumulators and points, and collections walking them were 20-45 %
of a 200,000-series query.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import islice
from operator import attrgetter
from typing import Protocol

import numpy as np
from sqlalchemy import Connection

from recorder.domain import (
    DEFAULT_INTERVAL_MS,
    Agg,
    GroupSummary,
    HistoryQuery,
    HistoryResult,
    Kind,
    QueryKind,
    Resource,
    ResourceSummary,
    SeriesFilter,
    SeriesInfo,
    SeriesPoints,
    Tier,
    Value,
)
from recorder.errors import QueryError
from recorder.gcpause import paused
from recorder.query import groups, requests_limits, workload_sums
from recorder.query.groups import Totals, totals_of
from recorder.query.scan import Gathered, HeadStream, Scan, Unit, accumulators
from recorder.query.workloads import (
    WorkloadFilter,
    WorkloadOf,
    namespaces_of,
    node_allocatable,
    workload_members,
    workload_of,
    workload_of_pods,
)
from recorder.stats import columns
from recorder.stats.buckets import (
    Accumulator,
    BucketOf,
    IntColumn,
    aggregate_many,
    aligned,
    bucketed,
    parts_of,
    whole,
)
from recorder.stats.quantiles import merged_quantiles
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.store.series import (
    Series,
    iter_series,
    known_namespaces,
    newest_in_head,
    select_series,
)

MAX_BUCKETS = 11_000
DEFAULT_MAX_SAMPLES = 5_000_000

LABELS = {
    QueryKind.NODE: ("cluster", "node"),
    QueryKind.CONTAINER: ("cluster", "namespace", "pod", "container"),
    QueryKind.POD: ("cluster", "namespace", "pod"),
    QueryKind.WORKLOAD: ("cluster", "namespace", "workload_kind", "workload"),
}
"""The identity labels of each kind's output series, in order (a workload's also
``container`` when the query names one)."""


class HistoryReader(Protocol):
    """What queries need of ``store.Store``: bounded read connections and the block size."""

    block_ms: int

    def reading(self) -> AbstractContextManager[Connection]: ...


@dataclass(frozen=True, slots=True)
class Output:
    """One unit with its identity labels and its pods' labels. ``fixed_labels`` ``None``: the
    labels are made from the one member when asked for (``kind``), not kept: a query of
    77,000 containers held 14 MB of them."""

    fixed_labels: dict[str, str] | None
    pod_labels: Mapping[str, str] | None
    members: tuple[Series, ...]
    kind: QueryKind = QueryKind.CONTAINER

    @property
    def labels(self) -> dict[str, str]:
        if self.fixed_labels is not None:
            return self.fixed_labels
        return _labels(self.members[0], self.kind)


_LABEL_VALUES = {kind: attrgetter(*names) for kind, names in LABELS.items()}


def _labels(series: Series, kind: QueryKind) -> dict[str, str]:
    return dict(zip(LABELS[kind], _LABEL_VALUES[kind](series), strict=True))


def _check_selector(where: SeriesFilter) -> None:
    if where.selector is not None and where.kind is QueryKind.NODE:
        raise QueryError(
            "selector matches pod labels: use it with kind=container, kind=pod or kind=workload"
        )
    if where.kind is QueryKind.NODE and (where.workload_kind or where.workload):
        raise QueryError("nodes belong to no workload: drop workload and workload_kind")


def _in_workloads(
    conn: Connection, where: SeriesFilter, found: dict[int, Series]
) -> dict[int, Series]:
    """``found`` less the series of pods outside the workloads ``where`` names (if any)."""
    if where.workload_kind is None and where.workload is None:
        return found
    members = workload_members(
        conn, WorkloadFilter.of(where, series=False), kinds=(Kind.CONTAINER, Kind.POD)
    )
    pods = {(s.cluster, s.namespace, s.pod) for m in members.values() for s in m}
    return {i: s for i, s in found.items() if (s.cluster, s.namespace, s.pod) in pods}


def units_of(conn: Connection, where: SeriesFilter) -> tuple[list[Output], list[Unit]]:
    """The output series of a filter and what each is made of. A pod is its own statistics
    series (made by compaction) plus its containers' samples. A workload (``kind=workload``)
    is one output per workload here, its one unit all its pods' series: whole-window
    statistics of it pool its pods' samples (``workload_units`` aligns them instead)."""
    _check_selector(where)
    if where.kind is QueryKind.WORKLOAD:
        workloads, pod_units, owner = workload_sums.workload_units(conn, where)
        merged: list[list[int]] = [[] for _ in workloads]
        for unit, index in zip(pod_units, owner, strict=True):
            merged[index].extend(unit.sample_ids)
        return (
            [Output(w.labels, w.pod_labels, w.members) for w in workloads],
            [Unit(tuple(ids), tuple(ids)) for ids in merged],
        )
    if where.kind is QueryKind.NODE:
        found = select_series(conn, (Kind.NODE,), where)
    elif where.kind is QueryKind.CONTAINER:
        found = _in_workloads(conn, where, select_series(conn, (Kind.CONTAINER,), where))
    else:
        found = _in_workloads(
            conn, where, select_series(conn, (Kind.CONTAINER, Kind.POD), _pod_filter(where))
        )
    if where.kind is not QueryKind.POD:
        return _one_each(found.values(), where.kind)
    by_pod: dict[tuple[str, str, str], list[Series]] = {}
    for series in found.values():
        by_pod.setdefault((series.cluster, series.namespace, series.pod), []).append(series)
    outputs, units = [], []
    for members in by_pod.values():
        containers = [s for s in members if s.kind is Kind.CONTAINER]
        if where.selector is not None and not containers:
            continue  # the selector matched no container: labels live beside containers
        pods = [s for s in members if s.kind is Kind.POD]
        shown = containers[0] if containers else pods[0]
        outputs.append(Output(_labels(shown, QueryKind.POD), shown.pod_labels, tuple(members)))
        units.append(Unit(tuple(s.id for s in pods), tuple(s.id for s in containers)))
    return outputs, units


def _one_each(found: Collection[Series], kind: QueryKind) -> tuple[list[Output], list[Unit]]:
    """Node or container outputs: one series each, its own unit."""
    return (
        [Output(None, s.pod_labels, (s,), kind) for s in found],
        [Unit(ids, ids) for s in found for ids in ((s.id,),)],
    )


def _pod_filter(where: SeriesFilter) -> SeriesFilter:
    if where.container is not None or where.node is not None:
        raise QueryError("kind=pod sums a pod's containers: filter by namespace, pod or selector")
    return SeriesFilter(
        where.kind,
        None,
        where.namespace,
        where.pod,
        None,
        where.selector,
        where.cluster,
        namespaces=where.namespaces,
    )


def namespaces(reader: HistoryReader) -> list[str]:
    """Every namespace the history holds pods of, sorted (what access control asks about when
    a query spans namespaces)."""
    with reader.reading() as conn:
        return known_namespaces(conn)


def list_series(
    reader: HistoryReader,
    where: SeriesFilter,
    *,
    limit: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[SeriesInfo]:
    """Known series (pods: one entry each) with first and last seen, head samples included."""
    with reader.reading() as conn:
        outputs, _units = units_of(conn, where)
        newest = newest_in_head(conn, {s.id: s for o in outputs for s in o.members})
    result: list[SeriesInfo] = []
    for output in outputs:
        first = min(s.first_seen_ms for s in output.members)
        last = max(max(s.last_seen_ms, newest.get(s.id, 0)) for s in output.members)
        if start_ms is not None and last < start_ms:
            continue
        if end_ms is not None and first > end_ms:
            continue
        if len(result) >= limit:
            raise QueryError(
                f"more than {limit} series match: add filters or a selector, or raise limit"
            )
        result.append(SeriesInfo(output.labels, first, last, output.pod_labels))
    return result


def _check_points(count: int, max_points: int) -> None:
    if count > max_points:
        raise QueryError(
            f"the response would hold more than {max_points} points: narrow the time range, "
            "use a larger step, or add filters"
        )


@paused()
def history(
    reader: HistoryReader,
    query: HistoryQuery,
    *,
    max_points: int,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    with_requests: bool = False,
    with_allocatable: bool = False,
) -> HistoryResult:
    """Raw points, or ``agg`` per bucket of ``step_ms``: from block statistics (percentiles
    within ``RELATIVE_ACCURACY``) when the step is a multiple of the block, else exactly from
    the samples. ``kind=workload``: see ``_workload_history`` (``interval_ms`` is the poll
    interval). ``with_requests``: each series also carries the request and limit in effect
    at each point (``_with_requests``); ``with_allocatable``, a node's allocatable
    (``_with_allocatable``)."""
    if with_requests and query.where.kind is QueryKind.NODE:
        raise QueryError(
            "requests and limits belong to containers: use them with kind=container, kind=pod "
            "or kind=workload (a node has with_allocatable)"
        )
    if with_allocatable and query.where.kind is not QueryKind.NODE:
        raise QueryError("allocatable belongs to nodes: use with_allocatable with kind=node")
    step = query.step_ms
    if step is not None:
        if step <= 0:
            raise QueryError("step must be positive")
        buckets = (query.end_ms - query.start_ms) // step + 1
        if buckets > MAX_BUCKETS:
            raise QueryError(
                f"{buckets} points per series is more than {MAX_BUCKETS}: use a larger step or "
                "a shorter range"
            )
    if query.where.kind is QueryKind.WORKLOAD:
        return _workload_history(
            reader,
            query,
            max_points=max_points,
            max_samples=max_samples,
            interval_ms=interval_ms,
            with_requests=with_requests,
        )
    result, shown = _series_history(reader, query, max_points=max_points, max_samples=max_samples)
    if with_allocatable and result.series:
        return _with_allocatable(reader, query, result)
    if not with_requests or not result.series:
        return result
    return _with_requests(reader, query, result, shown)


RAW_SLICE_UNITS = 4_096
"""Series read and answered at once by ``raw_history``."""


def raw_history(
    reader: HistoryReader, query: HistoryQuery, *, max_points: int, max_samples: int
) -> Iterator[tuple[list[SeriesPoints], list[Output]]]:
    """Raw points (no step) of nodes, containers and pods, ``RAW_SLICE_UNITS`` series at a
    time, each with its output, on one read connection: a caller that renders each slice
    before asking for the next holds one slice's points as Python objects, not all of them
    (77,000 series of the last minute: about 50 MB of tuples and numbers), and, for nodes and
    containers, one slice's series (the 77,000 series themselves were another 40 MB). The
    bounds are the whole answer's: ``QueryError`` when the points so far pass them."""
    if query.step_ms is not None or query.where.kind is QueryKind.WORKLOAD:
        raise ValueError("raw_history answers raw points of nodes, containers and pods")
    column = "cpu_nanocores" if query.resource is Resource.CPU else "memory_bytes"
    # The slices' cursor is closed before the connection goes back, however this ends.
    with reader.reading() as conn, closing(_unit_slices(conn, query.where)) as slices:
        decoded = total = 0
        for outputs, units in slices:
            scan = Scan(
                units,
                start_ms=query.start_ms,
                end_ms=query.end_ms,
                block_ms=reader.block_ms,
                max_samples=min(max_samples, max_points),
                points_only=True,
                decoded=decoded,
            )
            runs = scan.samples(conn)
            decoded = scan.decoded
            series_out: list[SeriesPoints] = []
            shown: list[Output] = []
            for index in range(len(scan.units)):
                run = runs.pop(index, None)  # let go of each run's other columns once read
                if run is None:
                    continue
                raw = list(zip(run.timestamps_ms, getattr(run, column), strict=True))
                total += len(raw)
                _check_points(total, max_points)
                output = outputs[index]
                series_out.append(SeriesPoints(output.labels, raw))
                shown.append(output)
            del runs, outputs, units
            yield series_out, shown


def _unit_slices(
    conn: Connection, where: SeriesFilter
) -> Generator[tuple[list[Output], list[Unit]], None, None]:
    """``units_of(conn, where)`` ``RAW_SLICE_UNITS`` at a time. Nodes and containers (one
    series each, unless a workload filter needs them all first) are read a slice at a time;
    pods, grouped from their containers, all at once."""
    kind = where.kind
    if kind not in (QueryKind.NODE, QueryKind.CONTAINER) or (
        where.workload_kind is not None or where.workload is not None
    ):
        outputs, units = units_of(conn, where)  # checks the selector
        for begin in range(0, len(units), RAW_SLICE_UNITS):
            yield outputs[begin : begin + RAW_SLICE_UNITS], units[begin : begin + RAW_SLICE_UNITS]
        return
    _check_selector(where)
    kinds = (Kind.NODE,) if kind is QueryKind.NODE else (Kind.CONTAINER,)
    with closing(iter_series(conn, kinds, where, streamed=True)) as found:
        while part := list(islice(found, RAW_SLICE_UNITS)):
            yield _one_each(part, kind)
            del part


def _series_history(
    reader: HistoryReader, query: HistoryQuery, *, max_points: int, max_samples: int
) -> tuple[HistoryResult, list[Output]]:
    """``history`` of nodes, containers and pods, and the output of each series answered."""
    step = query.step_ms
    block_ms = reader.block_ms
    if step is None:
        every: list[SeriesPoints] = []
        answered: list[Output] = []
        for part, shown_part in raw_history(
            reader, query, max_points=max_points, max_samples=max_samples
        ):
            every.extend(part)
            answered.extend(shown_part)
        return HistoryResult(every, Tier.RAW), answered
    points_of: dict[int, list[tuple[int, Value]]] = {}
    with reader.reading() as conn:
        outputs, units = units_of(conn, query.where)
        if not units:
            return HistoryResult([], Tier.RAW), []
        scan = Scan(
            units,
            start_ms=query.start_ms,
            end_ms=query.end_ms,
            block_ms=block_ms,
            max_samples=max_samples,
        )
        if step % block_ms == 0:
            found = scan.gather(
                conn,
                aligned(step),
                (query.resource,),
                squares=query.agg is Agg.STDDEV,
                parts=parts_of(query.agg),
            )
            tier, error = Tier.STATISTICS, RELATIVE_ACCURACY if query.agg.quantile else 0.0
        else:
            found = None
            tier, error = Tier.RAW, 0.0
            # A slice of the series at a time (see ``summarize``): each keeps its points, which
            # the answer holds anyway (``max_points`` at most), not its samples.
            value_at = 1 if query.resource is Resource.CPU else 2
            total = 0
            for chosen, sliced in _slices(conn, scan):
                columns_of = sliced.sample_columns(conn)
                for unit, found_columns in columns_of.items():
                    points = bucketed(found_columns[0], found_columns[value_at], step, query.agg)
                    total += len(points)
                    _check_points(total, max_points)
                    points_of[chosen[unit]] = points
                del columns_of
    series_out: list[SeriesPoints] = []
    shown: list[Output] = []
    if found is not None:
        keys, values = _aggregated(found, aligned(step), query.resource, query.agg)
        _check_points(len(keys), max_points)
        # Keys come in unit order: each unit's run found by bisection, its points zipped.
        unit_of_key = [unit for unit, _bucket in keys]
        bucket_of_key = [bucket for _unit, bucket in keys]
        begin = 0
        while begin < len(keys):
            index = unit_of_key[begin]
            end = bisect_right(unit_of_key, index, begin)
            points = list(zip(bucket_of_key[begin:end], values[begin:end], strict=True))
            series_out.append(SeriesPoints(outputs[index].labels, points))
            shown.append(outputs[index])
            begin = end
        return HistoryResult(series_out, tier, error), shown
    for index in sorted(points_of):
        series_out.append(SeriesPoints(outputs[index].labels, points_of.pop(index)))
        shown.append(outputs[index])
    return HistoryResult(series_out, tier, error), shown


def _point_instants(points: Sequence[tuple[int, Value]], query: HistoryQuery) -> list[int]:
    """Where a series' requests and limits (a node's allocatable) are read: at each raw
    point, or at the end of each point's bucket (its last millisecond in the range)."""
    step = query.step_ms
    if step is None:
        return [ts for ts, _v in points]
    return [min(ts + step - 1, query.end_ms) for ts, _v in points]


def _with_requests(
    reader: HistoryReader, query: HistoryQuery, result: HistoryResult, shown: Sequence[Output]
) -> HistoryResult:
    """``result`` with each series' request and limit at each point: of its container, or
    the sum over its pod's containers (``requests_limits``)."""
    out = []
    with reader.reading() as conn:
        for series, output in zip(result.series, shown, strict=True):
            containers: dict[tuple[str, str, str], set[str]] = {}
            for s in output.members:
                if s.kind is Kind.CONTAINER:
                    containers.setdefault((s.cluster, s.namespace, s.pod), set()).add(s.container)
            members = [(pod, sorted(names)) for pod, names in containers.items()]
            lines = requests_limits.read_lines(
                conn, members, _point_instants(series.points, query), query.resource
            )
            out.append(
                SeriesPoints(
                    series.labels, series.points, lines.request.listed(), lines.limit.listed()
                )
            )
    return HistoryResult(out, result.tier, result.relative_error)


def _with_allocatable(
    reader: HistoryReader, query: HistoryQuery, result: HistoryResult
) -> HistoryResult:
    """``result`` (nodes) with each node's allocatable in effect at each point's instant
    (``_point_instants``): its newest recorded row since at most then, as for ``allocatable_at``
    (``None`` before its first)."""
    names = [s.labels["node"] for s in result.series]  # the reader dedups and sorts
    with reader.reading() as conn:
        found = node_allocatable(
            conn, cluster=query.where.cluster, nodes=names, until_ms=query.end_ms
        )
    column = (
        "cpu_allocatable_nanocores"
        if query.resource is Resource.CPU
        else "memory_allocatable_bytes"
    )
    out = []
    for series in result.series:
        rows = found.get((series.labels["cluster"], series.labels["node"]))
        if rows:
            stamps = np.asarray(_point_instants(series.points, query), np.int64)
            values, _known, is_set = requests_limits.in_effect(rows, stamps, column)
            line = requests_limits.Line(values, is_set).listed()
        else:
            line = [None] * len(series.points)
        out.append(replace(series, allocatable=line))
    return HistoryResult(out, result.tier, result.relative_error)


def _workload_history(
    reader: HistoryReader,
    query: HistoryQuery,
    *,
    max_points: int,
    max_samples: int,
    interval_ms: int,
    with_requests: bool = False,
) -> HistoryResult:
    """Each workload's sum over its pods (``workload_sums``): without a step the aligned
    instants are the points; with one, each bucket's instants are aggregated with ``agg`` (so
    with ``step`` = the interval, a point is the sum at its bucket's start, PromQL's range
    query). Requests and limits: those of the pods counted at each instant; with a step, at
    the bucket's last instant with a value. A step that is a multiple of the block (and of at
    least an interval) reads the blocks compaction took workload statistics for from them
    (``_workload_statistics``), unless the pods are filtered (container, selector) or
    requests and limits are asked for."""
    step = query.step_ms
    where = query.where
    if (
        step is not None
        and step % reader.block_ms == 0
        and step >= interval_ms
        and where.container is None
        and where.selector is None
        and not with_requests
    ):
        return _workload_statistics(
            reader, query, max_points=max_points, max_samples=max_samples, interval_ms=interval_ms
        )
    with reader.reading() as conn:
        found, _decoded = workload_sums.workload_series(
            conn,
            query.where,
            query.start_ms,
            query.end_ms,
            (query.resource,),
            block_ms=reader.block_ms,
            interval_ms=interval_ms,
            resolution_ms=min(interval_ms, step) if step is not None else interval_ms,
            max_samples=max_samples,
            with_requests=with_requests,
        )
    series_out: list[SeriesPoints] = []
    total = 0
    for one in found:
        stamps, sums = one.values[query.resource]
        if step is None:
            points: list[tuple[int, Value]] = list(zip(stamps.tolist(), sums.tolist(), strict=True))
            last = np.arange(len(stamps))
        else:
            points = bucketed(stamps, sums, step, query.agg)
            buckets = stamps - stamps % step
            last = np.flatnonzero(np.append(buckets[1:] != buckets[:-1], True))
        total += len(points)
        _check_points(total, max_points)
        if one.lines is None:
            series_out.append(SeriesPoints(one.labels, points))
            continue
        line = one.lines[query.resource]
        series_out.append(
            SeriesPoints(
                one.labels,
                points,
                requests_limits.Line(
                    line.request.values[last], line.request.defined[last]
                ).listed(),
                requests_limits.Line(line.limit.values[last], line.limit.defined[last]).listed(),
            )
        )
    return HistoryResult(series_out, Tier.RAW)


def _workload_statistics(
    reader: HistoryReader,
    query: HistoryQuery,
    *,
    max_points: int,
    max_samples: int,
    interval_ms: int,
) -> HistoryResult:
    """``kind=workload`` with a step that holds whole blocks: the workloads' block statistics
    where compaction took them, their samples' aligned sums elsewhere
    (``workload_sums.workload_gathered``), aggregated per bucket as any series' are."""
    step = query.step_ms
    assert step is not None
    bucket_of = aligned(step)
    names = columns.names(query.agg is Agg.STDDEV, [query.resource.value], parts_of(query.agg))
    with reader.reading() as conn:
        outputs, found = workload_sums.workload_gathered(
            conn,
            query.where,
            query.start_ms,
            query.end_ms,
            query.resource,
            bucket_of=bucket_of,
            names=names,
            block_ms=reader.block_ms,
            interval_ms=interval_ms,
            max_samples=max_samples,
        )
    keys, values = _aggregated(found, bucket_of, query.resource, query.agg)
    _check_points(len(keys), max_points)
    points_of: dict[int, list[tuple[int, Value]]] = {}
    for (index, bucket), value in zip(keys, values, strict=True):
        points_of.setdefault(index, []).append((bucket, value))
    series_out = [
        SeriesPoints(outputs[index].labels, points_of[index]) for index in sorted(points_of)
    ]
    error = RELATIVE_ACCURACY if query.agg.quantile else 0.0
    return HistoryResult(series_out, Tier.STATISTICS, error)


def _aggregated(
    found: Gathered, bucket_of: BucketOf, resource: Resource, agg: Agg
) -> tuple[list[tuple[int, int]], list[Value]]:
    """Each (unit, bucket) of what a scan gathered, in that order, and its ``agg``: straight
    from the statistics columns when no samples were decoded and ``agg`` is one the columns
    answer, else from accumulators."""
    if not found.runs and agg.quantile is None and agg is not Agg.STDDEV:
        return columns.aggregated(
            found.rows, found.names, found.units, found.buckets, resource.value, agg
        )
    results = accumulators(found, bucket_of, (resource,))[resource]
    keys = sorted(results)
    return keys, aggregate_many([results[key] for key in keys], agg)


SUMMARY_SLICE_UNITS = 4_096
"""Units a summary, ``top`` or a history over samples gathers at once (``_slices``)."""


def _slices(conn: Connection, scan: Scan) -> Generator[tuple[list[int], Scan], None, None]:
    """``scan``'s units ``SUMMARY_SLICE_UNITS`` at a time, in order of their largest series id,
    as scans of their own on one walk of the head (``HeadStream``): each slice's unit indexes
    (in ``scan.units``) and its scan, whose units are in that order. The caller reads each
    slice's scan before it asks for the next; ``scan.max_samples`` bounds them all together."""
    units = scan.units
    order = sorted(range(len(units)), key=lambda i: max(units[i].sample_ids, default=-1))
    ids = sorted({sid for unit in units for sid in unit.sample_ids})
    decoded = scan.decoded
    with closing(HeadStream(conn, ids, scan.start_ms, scan.end_ms)) as stream:
        for begin in range(0, len(order), SUMMARY_SLICE_UNITS):
            chosen = order[begin : begin + SUMMARY_SLICE_UNITS]
            part = Scan(
                [units[i] for i in chosen],
                start_ms=scan.start_ms,
                end_ms=scan.end_ms,
                block_ms=scan.block_ms,
                max_samples=scan.max_samples,
                stepped=scan.stepped,
                decoded=decoded,
                head_stream=stream,
            )
            yield chosen, part
            decoded = part.decoded


def sliced_statistics(
    conn: Connection,
    scan: Scan,
    resources: Sequence[Resource],
    parts: Sequence[str] | None,
    *,
    squares: bool = True,
) -> Generator[tuple[list[int], dict[Resource, dict[tuple[int, int], Accumulator]]], None, None]:
    """``scan.statistics`` over the whole window a slice of units at a time (``_slices``):
    each slice's unit indexes and their accumulators, keyed by the position in that list."""
    for chosen, part in _slices(conn, scan):
        found = part.statistics(conn, whole(scan.start_ms), resources, squares=squares, parts=parts)
        yield chosen, found
        del found


SUMMARY_PARTS = ("sum", "max", "sketch")
"""What a summary reads of each resource's statistics: the integral, the max and the p95."""

GroupBy = str
"""``namespace``, ``pod``, ``container``, ``node``, ``workload`` or ``label:<key>``."""


def _group_key(output: Output, group_by: GroupBy, owners: WorkloadOf) -> str | None:
    if group_by.startswith("label:"):
        return (output.pod_labels or {}).get(group_by[len("label:") :])
    labels = output.labels
    if group_by == "workload":
        return str(workload_of(owners, labels["cluster"], labels["namespace"], labels["pod"]))
    if group_by == "pod":
        return f"{labels['namespace']}/{labels['pod']}"
    if group_by == "container":
        return f"{labels['namespace']}/{labels['pod']}/{labels['container']}"
    return labels[group_by]


@paused()
def summarize(
    reader: HistoryReader,
    where: SeriesFilter,
    group_by: GroupBy,
    start_ms: int,
    end_ms: int,
    *,
    max_groups: int,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    use_namespace_rollups: bool = True,
) -> list[GroupSummary]:
    """Per group over the window: avg (the usage integral divided by the time the group was
    covered, see ``covered_ms``), max, p95 (of the group's samples), usage integral and
    coverage (the covered share of the window); see README "Summary". Namespace rollups answer
    it where they give the same answer (``recorder.query.groups``; not with
    ``use_namespace_rollups=False``), else every series' statistics."""
    if where.kind is QueryKind.WORKLOAD:
        raise QueryError(
            "a summary groups series: use kind=pod or kind=container with group_by=workload"
        )
    resources = (Resource.CPU, Resource.MEMORY)
    with reader.reading() as conn:
        outputs, units = units_of(conn, where)
        owners: WorkloadOf = {}
        if group_by == "workload":
            if where.kind is QueryKind.NODE:
                raise QueryError("nodes belong to no workload: group_by=workload goes with pods")
            owners = workload_of_pods(
                conn,
                cluster=where.cluster,
                namespaces=namespaces_of(where),
            )
        members: dict[str, list[int]] = {}
        for index, output in enumerate(outputs):
            key = _group_key(output, group_by, owners)
            if key is not None:
                members.setdefault(key, []).append(index)
        if len(members) > max_groups:
            raise QueryError(f"more than {max_groups} groups: add filters or a selector")
        scan = Scan(
            units,
            start_ms=start_ms,
            end_ms=end_ms,
            block_ms=reader.block_ms,
            max_samples=max_samples,
            stepped=False,
        )
        rolled = None
        if units and use_namespace_rollups and groups.applies(where, group_by):
            places = [(o.labels["cluster"], o.labels["namespace"]) for o in outputs]
            rolled = groups.from_namespace_rollups(conn, scan, where, group_by, units, places)
        if rolled is not None:
            totals = rolled.totals
            sketches = rolled.sketches
        else:
            # A slice of the series at a time: each unit keeps its totals and serialized
            # sketches, not its accumulator and samples (at 150,000 pods, a summary of the last
            # 5 minutes held 2.4 million head rows, their runs and 400,000 accumulators at once:
            # about 1 GB).
            totals = {r: {} for r in resources}
            parts_of: dict[Resource, dict[int, list[bytes]]] = {r: {} for r in resources}
            for chosen, results in sliced_statistics(conn, scan, resources, SUMMARY_PARTS):
                for r in resources:
                    for (unit, _b), acc in results[r].items():
                        totals[r][chosen[unit]] = totals_of(acc)
                        parts_of[r][chosen[unit]] = acc.sketch_parts()
                del results
            sketches = {
                r: {
                    group: [p for i in indexes if i in parts_of[r] for p in parts_of[r][i]]
                    for group, indexes in members.items()
                }
                for r in resources
            }
            del parts_of
    window_ms = max(end_ms - start_ms, 1)
    ordered = sorted(members)
    parts: dict[Resource, list[ResourceSummary | None]] = {}
    for resource in resources:
        rows_of = [
            [t for t in (totals[resource].get(i) for i in members[group]) if t is not None]
            for group in ordered
        ]
        # The 95th percentile of each group's merged sketches, all groups in one batch.
        answered = [g for g, found in zip(ordered, rows_of, strict=True) if found]
        p95s = iter(merged_quantiles([sketches[resource][g] for g in answered], 0.95))
        parts[resource] = [
            _resource_summary(found, window_ms, next(p95s)) if found else None for found in rows_of
        ]
    out = []
    for position, group in enumerate(ordered):
        indexes = members[group]
        series = sum(1 for i in indexes for s in outputs[i].members if s.kind is not Kind.POD)
        out.append(
            GroupSummary(
                group, series, parts[Resource.CPU][position], parts[Resource.MEMORY][position]
            )
        )
    return out


def covered_ms(accs: Sequence[Accumulator]) -> float:
    """How long a group of output series had samples, from what each series' statistics keep
    (count, first and last timestamp, smallest gap ``interval_ms``: no timestamps).

    Each sample covers one interval (the rule the usage integral uses), so a series covers
    ``count * interval_ms``, within its span ``first_ms .. last_ms + interval_ms``. The group
    covers the union of its series' spans, less the share of polls they missed: exact for one
    series, for series present at the same times, and for series one after another (a
    rollout), and never less than its most covered series nor more than their sum. A series
    with a single sample (no interval) covers nothing, as it adds nothing to the integral."""
    return _covered([totals_of(acc) for acc in accs])


def _covered(rows: Sequence[Totals]) -> float:
    """``covered_ms`` of the series' totals."""
    spans: list[tuple[int, int]] = []
    own_total = span_total = largest = 0
    for count, _total, _maximum, first_ms, last_ms, interval in rows:
        if interval <= 0 or count == 0:
            continue
        span = last_ms - first_ms + interval
        own = min(count * interval, span)
        spans.append((first_ms, last_ms + interval))
        own_total += own
        span_total += span
        largest = max(largest, own)
    if not spans:
        return 0.0
    union = 0
    reach = None
    for begin, end in sorted(spans):
        if reach is None or begin > reach:
            union += end - begin
            reach = end
        elif end > reach:
            union += end - reach
            reach = end
    # At most the union and at most the sum (own_total <= span_total, union <= span_total).
    return max(union * own_total / span_total, float(largest))


def _resource_summary(rows: Sequence[Totals], window_ms: int, p95: float) -> ResourceSummary:
    """A group's summary of one resource from its series' totals, its p95 (of the merge of
    its series' sketches) given."""
    integral = 0.0
    samples = 0
    for count, total, _maximum, _first, _last, interval in rows:
        samples += count
        if interval > 0:
            integral += total * interval / 1000
    covered = min(_covered(rows), window_ms)
    if covered > 0:
        avg = integral / (covered / 1000)
    else:  # single samples only: no interval, no integral; the group's total at its instants
        avg = float(sum(Fraction(row[1], row[0]) for row in rows))
    return ResourceSummary(
        samples=samples,
        avg=avg,
        max=max(row[2] for row in rows),
        p95=p95,
        integral=integral,
        coverage=covered / window_ms,
    )


@dataclass(frozen=True, slots=True)
class TopRow:
    labels: dict[str, str]
    cpu: Value
    memory: Value


@paused()
def top(
    reader: HistoryReader,
    where: SeriesFilter,
    start_ms: int,
    end_ms: int,
    agg: Agg,
    *,
    containers: bool = False,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    interval_ms: int = DEFAULT_INTERVAL_MS,
) -> list[TopRow]:
    """Each node's, each pod's or (``containers``) each container's ``agg`` of CPU and memory
    over the window. A pod's value is computed on its summed series (the sum of its containers
    at each instant), exactly as ``history?kind=pod`` computes it; a container's on its own
    series, as ``history?kind=container``. ``kind=workload``: each workload's (with
    ``containers``, each of its container names') aligned sum at each multiple of
    ``interval_ms`` in the window (``workload_sums``), as ``history?kind=workload``."""
    if where.kind is QueryKind.WORKLOAD:
        with reader.reading() as conn:
            found, _decoded = workload_sums.workload_series(
                conn,
                where,
                start_ms,
                end_ms,
                (Resource.CPU, Resource.MEMORY),
                block_ms=reader.block_ms,
                interval_ms=interval_ms,
                resolution_ms=interval_ms,
                max_samples=max_samples,
                by_container=containers,
            )
        return [
            TopRow(
                one.labels,
                _over_window(one.values[Resource.CPU], agg),
                _over_window(one.values[Resource.MEMORY], agg),
            )
            for one in found
        ]
    if where.kind is QueryKind.NODE:
        kind = QueryKind.NODE
    else:
        kind = QueryKind.CONTAINER if containers else QueryKind.POD
    chosen_filter = SeriesFilter(
        kind,
        where.node,
        where.namespace,
        where.pod,
        where.container if containers else None,
        where.selector,
        where.cluster,
        namespaces=where.namespaces,
    )
    values: dict[int, tuple[Value, Value]] = {}
    with reader.reading() as conn:
        outputs, units = units_of(conn, chosen_filter)
        if units:
            scan = Scan(
                units,
                start_ms=start_ms,
                end_ms=end_ms,
                block_ms=reader.block_ms,
                max_samples=max_samples,
                stepped=False,
            )
            # A slice of the series at a time (see ``summarize``): each keeps its two values.
            for chosen, results in sliced_statistics(
                conn,
                scan,
                (Resource.CPU, Resource.MEMORY),
                parts_of(agg),
                squares=agg is Agg.STDDEV,
            ):
                cpus = {unit: acc for (unit, _b), acc in results[Resource.CPU].items()}
                memories = {unit: acc for (unit, _b), acc in results[Resource.MEMORY].items()}
                both = sorted(cpus.keys() & memories.keys())
                cpu = aggregate_many([cpus[unit] for unit in both], agg)
                memory = aggregate_many([memories[unit] for unit in both], agg)
                for unit, c, m in zip(both, cpu, memory, strict=True):
                    values[chosen[unit]] = (c, m)
                del results, cpus, memories
    return [TopRow(outputs[index].labels, *values[index]) for index in sorted(values)]


_WHOLE_MS = 2**62
"""A bucket that holds every instant."""


def _over_window(found: tuple[IntColumn, IntColumn], agg: Agg) -> Value:
    """``agg`` of an aligned series' values (at least one)."""
    ((_start, value),) = bucketed(found[0], found[1], _WHOLE_MS, agg)
    return value


Allocatable = dict[tuple[str, str], tuple[int | None, int | None]]
"""(cluster, node) -> (CPU allocatable nanocores, memory allocatable bytes)."""


def allocatable_at(reader: HistoryReader, where: SeriesFilter, at_ms: int) -> Allocatable:
    """Each node's allocatable CPU and memory in effect at ``at_ms`` (its newest recorded
    row since at most then; nodes without one are left out), of the cluster and node
    ``where`` names, if any: what ``recorder top nodes``' CPU(%) and MEMORY(%) divide by."""
    with reader.reading() as conn:
        found = node_allocatable(
            conn,
            cluster=where.cluster,
            nodes=(where.node,) if where.node is not None else (),
            until_ms=at_ms,
        )
    return {
        key: (rows[-1].cpu_allocatable_nanocores, rows[-1].memory_allocatable_bytes)
        for key, rows in found.items()
    }
