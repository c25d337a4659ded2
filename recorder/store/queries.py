"""History queries over the store: which series, raw points, bucketed aggregates, summaries.

Reads merge chunks and head, so no query sees the storage layout. Every query is bounded:
``max_points`` for what a response may hold, ``max_samples`` for how many raw samples a query
may decode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import Connection, func, select

from recorder.domain import (
    Agg,
    GroupSummary,
    HistoryQuery,
    HistoryResult,
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
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.store import schema
from recorder.store.aggregate import Accumulator, Scan, aligned, series_buckets, whole
from recorder.store.reader import read_points

_LABELS = {
    QueryKind.NODE: ("node",),
    QueryKind.CONTAINER: ("namespace", "pod", "container"),
    QueryKind.POD: ("namespace", "pod"),
}


@dataclass(frozen=True, slots=True)
class Series:
    id: int
    node: str
    namespace: str
    pod: str
    container: str
    first_seen_ms: int
    last_seen_ms: int
    pod_labels: Mapping[str, str] | None

    def labels(self, kind: QueryKind) -> dict[str, str]:
        return {name: getattr(self, name) for name in _LABELS[kind]}


def select_series(conn: Connection, where: SeriesFilter) -> dict[int, Series]:
    """The stored series matching every filter (the selector on pod labels), by id."""
    s, pl = schema.series, schema.pod_labels
    statement = (
        select(
            s.c.id,
            s.c.node,
            s.c.namespace,
            s.c.pod,
            s.c.container,
            s.c.first_seen_ms,
            s.c.last_seen_ms,
            pl.c.labels_json,
        )
        .outerjoin(pl, (pl.c.namespace == s.c.namespace) & (pl.c.pod == s.c.pod))
        .where(s.c.kind == where.kind.stored.value)
        .order_by(s.c.id)
    )
    for name in ("node", "namespace", "pod", "container"):
        wanted = getattr(where, name)
        if wanted is not None:
            statement = statement.where(s.c[name] == wanted)
    found: dict[int, Series] = {}
    for row in conn.execute(statement):
        labels = json.loads(row.labels_json) if row.labels_json is not None else None
        if where.selector is not None and not where.selector.matches(labels or {}):
            continue
        found[row.id] = Series(
            row.id,
            row.node,
            row.namespace,
            row.pod,
            row.container,
            row.first_seen_ms,
            row.last_seen_ms,
            labels,
        )
    return found


def _check_selector(where: SeriesFilter) -> None:
    if where.selector is not None and where.kind is QueryKind.NODE:
        raise QueryError("selector matches pod labels: use it with kind=container or kind=pod")


def _newest_in_head(conn: Connection, found: Mapping[int, Series]) -> dict[int, int]:
    """The newest head timestamp of each of ``found``: ``series.last_seen_ms`` only advances
    at compaction, and the writer that knows better lives in another process (the worker).
    Only head rows after the oldest ``last_seen_ms`` are read (the time index; on PostgreSQL,
    the partitions of those blocks)."""
    floor = min((series.last_seen_ms for series in found.values()), default=None)
    if floor is None:
        return {}
    h = schema.samples_head
    statement = (
        select(h.c.series_id, func.max(h.c.ts_ms)).where(h.c.ts_ms > floor).group_by(h.c.series_id)
    )
    return {sid: int(ts) for sid, ts in conn.execute(statement) if sid in found}


def list_series(
    conn: Connection,
    where: SeriesFilter,
    *,
    limit: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[SeriesInfo]:
    """Known series with first and last seen (head samples included)."""
    _check_selector(where)
    found = select_series(conn, where)
    newest = _newest_in_head(conn, found)
    result: list[SeriesInfo] = []
    for series in found.values():
        last = max(series.last_seen_ms, newest.get(series.id, 0))
        if start_ms is not None and last < start_ms:
            continue
        if end_ms is not None and series.first_seen_ms > end_ms:
            continue
        if len(result) >= limit:
            raise QueryError(
                f"more than {limit} series match: add filters or a selector, or raise limit"
            )
        result.append(
            SeriesInfo(series.labels(where.kind), series.first_seen_ms, last, series.pod_labels)
        )
    return result


def history(
    conn: Connection,
    query: HistoryQuery,
    *,
    block_ms: int,
    max_points: int,
    max_samples: int,
) -> HistoryResult:
    _check_selector(query.where)
    if query.step_ms is not None:
        if query.step_ms <= 0:
            raise QueryError("step must be positive")
        buckets = (query.end_ms - query.start_ms) // query.step_ms + 1
        if buckets > 11_000:
            raise QueryError(
                f"{buckets} points per series is more than 11000: use a larger step or a "
                "shorter range"
            )
    found = select_series(conn, query.where)
    if not found:
        return HistoryResult([], Tier.RAW)
    ids = list(found)
    use_statistics = (
        query.step_ms is not None
        and query.step_ms % block_ms == 0
        and query.where.kind is not QueryKind.POD
    )
    if query.step_ms is None or not use_statistics:
        points = read_points(
            conn,
            ids,
            query.resource,
            query.start_ms,
            query.end_ms,
            block_ms=block_ms,
            max_points=max_samples if query.step_ms else max_points,
        )
        return _from_points(query, found, points, max_points)
    scan = Scan(
        start_ms=query.start_ms,
        end_ms=query.end_ms,
        block_ms=block_ms,
        bucket_of=aligned(query.step_ms),
        resources=(query.resource,),
        use_statistics=True,
        max_samples=max_samples,
    )
    scan.run(conn, ids)
    series_out = []
    total = 0
    for series_id, buckets_of in series_buckets(scan.results[query.resource]).items():
        total += len(buckets_of)
        _check_points(total, max_points)
        series_out.append(
            SeriesPoints(
                found[series_id].labels(query.where.kind),
                [(bucket, aggregate(acc, query.agg)) for bucket, acc in buckets_of],
            )
        )
    error = RELATIVE_ACCURACY if query.agg.quantile is not None else 0.0
    return HistoryResult(series_out, Tier.STATISTICS, error)


def _check_points(count: int, max_points: int) -> None:
    if count > max_points:
        raise QueryError(
            f"the response would hold more than {max_points} points: narrow the time range, "
            "use a larger step, or add filters"
        )


def _from_points(
    query: HistoryQuery,
    found: Mapping[int, Series],
    points: Mapping[int, dict[int, int]],
    max_points: int,
) -> HistoryResult:
    """Raw tier: pods summed per timestamp, then bucketed when a step is given."""
    kind = query.where.kind
    grouped: dict[tuple[str, ...], dict[int, int]] = {}
    labels_of: dict[tuple[str, ...], dict[str, str]] = {}
    for series_id in sorted(points):
        labels = found[series_id].labels(kind)
        identity = tuple(labels.values())
        labels_of[identity] = labels
        target = grouped.setdefault(identity, {})
        if kind is QueryKind.POD:
            for ts, value in points[series_id].items():
                target[ts] = target.get(ts, 0) + value
        else:
            target.update(points[series_id])
    series_out = []
    total = 0
    for identity, by_ts in grouped.items():
        ordered = sorted(by_ts.items())
        values: list[tuple[int, Value]]
        if query.step_ms is None:
            values = list(ordered)
        else:
            step = query.step_ms
            accumulators: dict[int, Accumulator] = {}
            for ts, value in ordered:
                bucket = ts - ts % step
                acc = accumulators.get(bucket)
                if acc is None:
                    acc = accumulators[bucket] = Accumulator(exact=True)
                acc.add_values((ts,), (value,))
            values = [(b, aggregate(acc, query.agg)) for b, acc in sorted(accumulators.items())]
        total += len(values)
        _check_points(total, max_points)
        series_out.append(SeriesPoints(labels_of[identity], values))
    return HistoryResult(series_out, Tier.RAW)


def aggregate(acc: Accumulator, agg: Agg) -> Value:
    q = agg.quantile
    if q is not None:
        return acc.quantile(q)
    if agg is Agg.AVG:
        return Fraction(acc.total, acc.count)
    return {
        Agg.MIN: acc.minimum,
        Agg.MAX: acc.maximum,
        Agg.SUM: acc.total,
        Agg.COUNT: acc.count,
        Agg.LAST: acc.last,
    }[agg]


def _whole_window(
    conn: Connection,
    where: SeriesFilter,
    start_ms: int,
    end_ms: int,
    block_ms: int,
    max_samples: int,
) -> tuple[dict[int, Series], Scan]:
    """The matching series and their CPU and memory statistics over the whole window."""
    _check_selector(where)
    found = select_series(conn, where)
    scan = Scan(
        start_ms=start_ms,
        end_ms=end_ms,
        block_ms=block_ms,
        bucket_of=whole(start_ms),
        resources=(Resource.CPU, Resource.MEMORY),
        use_statistics=True,
        max_samples=max_samples,
    )
    if found:
        scan.run(conn, list(found))
    return found, scan


GroupBy = str
"""``namespace``, ``pod``, ``container``, ``node`` or ``label:<key>``."""


def _group_key(series: Series, group_by: GroupBy) -> str | None:
    if group_by.startswith("label:"):
        labels = series.pod_labels or {}
        return labels.get(group_by[len("label:") :])
    if group_by == "pod":
        return f"{series.namespace}/{series.pod}"
    if group_by == "container":
        return f"{series.namespace}/{series.pod}/{series.container}"
    return str(getattr(series, group_by))


def summarize(
    conn: Connection,
    where: SeriesFilter,
    group_by: GroupBy,
    start_ms: int,
    end_ms: int,
    *,
    block_ms: int,
    max_samples: int,
    max_groups: int,
) -> list[GroupSummary]:
    """Per group over the window: avg (the usage integral divided by the window), max, p95
    (of the group's samples), usage integral and coverage; see README "Summary"."""
    found, scan = _whole_window(conn, where, start_ms, end_ms, block_ms, max_samples)
    if not found:
        return []
    members: dict[str, list[int]] = {}
    for series_id, series in found.items():
        key = _group_key(series, group_by)
        if key is not None:
            members.setdefault(key, []).append(series_id)
    if len(members) > max_groups:
        raise QueryError(f"more than {max_groups} groups: add filters or a selector")
    window_seconds = max(end_ms - start_ms, 1) / 1000
    out = []
    for group in sorted(members):
        ids = members[group]
        parts: dict[Resource, ResourceSummary | None] = {}
        for resource in (Resource.CPU, Resource.MEMORY):
            accs = [a for a in (scan.results[resource].get((i, start_ms)) for i in ids) if a]
            parts[resource] = _resource_summary(accs, window_seconds)
        out.append(GroupSummary(group, len(ids), parts[Resource.CPU], parts[Resource.MEMORY]))
    return out


def _resource_summary(accs: Sequence[Accumulator], window_seconds: float) -> ResourceSummary | None:
    if not accs:
        return None
    integral = 0.0
    expected = 0
    samples = 0
    sketch = None
    for acc in accs:
        samples += acc.count
        interval = acc.interval_ms
        if interval > 0:
            integral += acc.total * interval / 1000
            expected += (acc.last_ms - acc.first_ms) // interval + 1
        else:
            expected += acc.count
        assert acc.sketch is not None
        if sketch is None:
            sketch = type(acc.sketch).from_bytes(acc.sketch.to_bytes())
        else:
            sketch.merge(acc.sketch)
    assert sketch is not None
    return ResourceSummary(
        samples=samples,
        avg=integral / window_seconds,
        max=max(a.maximum for a in accs),
        p95=sketch.quantile(0.95),
        integral=integral,
        coverage=min(1.0, samples / expected) if expected else 0.0,
    )


@dataclass(frozen=True, slots=True)
class TopRow:
    labels: dict[str, str]
    cpu: Value
    memory: Value


def top(
    conn: Connection,
    where: SeriesFilter,
    start_ms: int,
    end_ms: int,
    agg: Agg,
    *,
    block_ms: int,
    max_samples: int,
) -> list[TopRow]:
    """Each node's, or each pod's, ``agg`` of CPU and memory over the window; a pod's value is
    the sum of its containers' values, as ``kubectl top pods`` adds its containers up."""
    found, scan = _whole_window(conn, where, start_ms, end_ms, block_ms, max_samples)
    if not found:
        return []
    kind = QueryKind.NODE if where.kind is QueryKind.NODE else QueryKind.POD
    rows: dict[tuple[str, ...], dict[Resource, Value]] = {}
    labels_of: dict[tuple[str, ...], dict[str, str]] = {}
    for resource in (Resource.CPU, Resource.MEMORY):
        for (series_id, _bucket), acc in scan.results[resource].items():
            labels = found[series_id].labels(kind)
            identity = tuple(labels.values())
            labels_of[identity] = labels
            values = rows.setdefault(identity, {})
            values[resource] = values.get(resource, 0) + aggregate(acc, agg)
    return [
        TopRow(labels_of[identity], values.get(Resource.CPU, 0), values.get(Resource.MEMORY, 0))
        for identity, values in rows.items()
    ]
