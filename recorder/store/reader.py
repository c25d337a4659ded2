"""Reads stored history back (raw samples for now; chunks and aggregation plug in here)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from recorder.domain import HistoryQuery, Kind, Resource, SeriesPoints
from recorder.errors import QueryError
from recorder.store import schema

_LABELS = {
    Kind.NODE: ("node",),
    Kind.CONTAINER: ("namespace", "pod", "container"),
}


def read_history(engine: Engine, query: HistoryQuery, *, max_points: int) -> list[SeriesPoints]:
    """Raw samples matching ``query``, grouped by series; ``QueryError`` past ``max_points``."""
    s, h = schema.series, schema.samples_head
    value = h.c.cpu_nanocores if query.resource is Resource.CPU else h.c.memory_bytes
    statement = (
        select(s.c.id, s.c.node, s.c.namespace, s.c.pod, s.c.container, h.c.ts_ms, value)
        .join_from(h, s, s.c.id == h.c.series_id)
        .where(s.c.kind == query.kind.value)
        .where(h.c.ts_ms >= query.start_ms, h.c.ts_ms <= query.end_ms)
        .order_by(s.c.id, h.c.ts_ms)
        .limit(max_points + 1)
    )
    for name in ("node", "namespace", "pod", "container"):
        wanted = getattr(query, name)
        if wanted is not None:
            statement = statement.where(s.c[name] == wanted)
    label_names = _LABELS[query.kind]
    result: list[SeriesPoints] = []
    current_id: int | None = None
    count = 0
    with engine.connect() as conn:
        for sid, node, namespace, pod, container, ts_ms, amount in conn.execute(statement):
            count += 1
            if count > max_points:
                raise QueryError(
                    f"the query matches more than {max_points} points: narrow the time range "
                    "or add filters (node, namespace, pod, container)"
                )
            if sid != current_id:
                identity = {
                    "node": node,
                    "namespace": namespace,
                    "pod": pod,
                    "container": container,
                }
                labels = {name: identity[name] for name in label_names}
                result.append(SeriesPoints(labels, []))
                current_id = sid
            result[-1].points.append((ts_ms, amount))
    return result
