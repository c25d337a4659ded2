"""Reads stored history back: chunks and head merged, so a query never sees the layout."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Engine, Select, select

from recorder.domain import HistoryQuery, Kind, Resource, SeriesPoints
from recorder.errors import QueryError
from recorder.store import schema
from recorder.store.codec import decode_samples

_LABELS = {
    Kind.NODE: ("node",),
    Kind.CONTAINER: ("namespace", "pod", "container"),
}


def matching_series(query: HistoryQuery) -> Select[int, str, str, str, str]:
    s = schema.series
    statement = select(s.c.id, s.c.node, s.c.namespace, s.c.pod, s.c.container).where(
        s.c.kind == query.kind.value
    )
    for name in ("node", "namespace", "pod", "container"):
        wanted = getattr(query, name)
        if wanted is not None:
            statement = statement.where(s.c[name] == wanted)
    return statement


class _Points:
    """Collects points per series and enforces the response bound."""

    def __init__(self, max_points: int):
        self.max_points = max_points
        self.count = 0
        self.by_series: dict[int, dict[int, int]] = {}

    def add(self, series_id: int, points: Iterable[tuple[int, int]]) -> None:
        target = self.by_series.setdefault(series_id, {})
        before = len(target)
        target.update(points)
        self.count += len(target) - before
        if self.count > self.max_points:
            raise QueryError(
                f"the query matches more than {self.max_points} points: narrow the time range "
                "or add filters (node, namespace, pod, container)"
            )


def read_history(
    engine: Engine, query: HistoryQuery, *, max_points: int, block_ms: int
) -> list[SeriesPoints]:
    """Raw samples matching ``query``, grouped by series; ``QueryError`` past ``max_points``."""
    selected = matching_series(query)
    collected = _Points(max_points)
    with engine.connect() as conn:
        identities = {
            sid: (node, namespace, pod, container)
            for sid, node, namespace, pod, container in conn.execute(selected)
        }
        if not identities:
            return []
        ids = selected.with_only_columns(schema.series.c.id).scalar_subquery()
        _from_chunks(conn, query, ids, block_ms, collected)
        _from_head(conn, query, ids, collected)
    label_names = _LABELS[query.kind]
    result = []
    for series_id in sorted(collected.by_series):
        points = collected.by_series[series_id]
        if not points:
            continue
        node, namespace, pod, container = identities[series_id]
        identity = {"node": node, "namespace": namespace, "pod": pod, "container": container}
        result.append(
            SeriesPoints({name: identity[name] for name in label_names}, sorted(points.items()))
        )
    return result


def _from_chunks(
    conn: Connection, query: HistoryQuery, ids: object, block_ms: int, out: _Points
) -> None:
    c = schema.chunks
    rows = conn.execute(
        select(c.c.series_id, c.c.payload)
        .where(c.c.series_id.in_(ids))  # type: ignore[arg-type]
        .where(c.c.block_start_ms > query.start_ms - block_ms)
        .where(c.c.block_start_ms <= query.end_ms)
        .where(c.c.last_ms >= query.start_ms, c.c.first_ms <= query.end_ms)
        .where(c.c.payload.is_not(None))
        .order_by(c.c.series_id, c.c.block_start_ms)
    )
    cpu = query.resource is Resource.CPU
    start, end = query.start_ms, query.end_ms
    for series_id, payload in rows:
        samples = decode_samples(payload)
        values = samples.cpu_nanocores if cpu else samples.memory_bytes
        out.add(
            series_id,
            (
                (ts, value)
                for ts, value in zip(samples.timestamps_ms, values, strict=True)
                if start <= ts <= end
            ),
        )


def _from_head(conn: Connection, query: HistoryQuery, ids: object, out: _Points) -> None:
    h = schema.samples_head
    value = h.c.cpu_nanocores if query.resource is Resource.CPU else h.c.memory_bytes
    rows = conn.execute(
        select(h.c.series_id, h.c.ts_ms, value)
        .where(h.c.ts_ms >= query.start_ms, h.c.ts_ms <= query.end_ms)
        .where(h.c.series_id.in_(ids))  # type: ignore[arg-type]
        .order_by(h.c.series_id, h.c.ts_ms)
        .limit(out.max_points + 1)
    )
    for series_id, ts, amount in rows:
        out.add(series_id, ((ts, amount),))
