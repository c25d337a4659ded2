"""Raw points of some series: chunk payloads and head rows merged, one value per timestamp."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select

from recorder.domain import Resource
from recorder.errors import QueryError
from recorder.stats.codec import decode_samples
from recorder.store import schema


class _Points:
    """Collects points per series and enforces the bound."""

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
                f"the query matches more than {self.max_points} points: narrow the time range, "
                "add filters (node, namespace, pod, container, selector) or use a step"
            )


def read_points(
    conn: Connection,
    series_ids: Sequence[int],
    resource: Resource,
    start_ms: int,
    end_ms: int,
    *,
    block_ms: int,
    max_points: int,
) -> dict[int, dict[int, int]]:
    """``{series id: {timestamp_ms: value}}`` for ``start_ms <= timestamp <= end_ms``.

    Raises ``QueryError`` past ``max_points``. Blocks whose full resolution has expired have
    no raw points (their statistics answer queries with a step that is a multiple of the
    block)."""
    out = _Points(max_points)
    c, h = schema.chunks, schema.samples_head
    cpu = resource is Resource.CPU
    for start in range(0, len(series_ids), 1000):
        ids = series_ids[start : start + 1000]
        rows = conn.execute(
            select(c.c.series_id, c.c.payload)
            .where(c.c.series_id.in_(ids))
            .where(c.c.block_start_ms > start_ms - block_ms, c.c.block_start_ms <= end_ms)
            .where(c.c.last_ms >= start_ms, c.c.first_ms <= end_ms)
            .where(c.c.payload.is_not(None))
            .order_by(c.c.series_id, c.c.block_start_ms)
        )
        for series_id, payload in rows:
            samples = decode_samples(payload)
            values = samples.cpu_nanocores if cpu else samples.memory_bytes
            out.add(
                series_id,
                (
                    (ts, value)
                    for ts, value in zip(samples.timestamps_ms, values, strict=True)
                    if start_ms <= ts <= end_ms
                ),
            )
        value_column = h.c.cpu_nanocores if cpu else h.c.memory_bytes
        for series_id, ts, amount in conn.execute(
            select(h.c.series_id, h.c.ts_ms, value_column)
            .where(h.c.ts_ms >= start_ms, h.c.ts_ms <= end_ms)
            .where(h.c.series_id.in_(ids))
        ):
            out.add(series_id, ((ts, amount),))
    return out.by_series
