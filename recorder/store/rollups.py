"""Day-level rollups: each series' chunk statistics of one UTC day merged into one row.

A long-range statistics query (a 7-day summary, a 30-day p95 at a 1-day step) reads one row per
series per day instead of one per block. Rollups are built by maintenance for every closed day
(all of whose blocks are compacted) and rebuilt for a day whenever compaction adds a late block
to it, so they always agree with the chunks they summarize.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select

from recorder.stats.sketch import QuantileSketch
from recorder.store import schema

DAY_MS = 86_400_000
_BATCH = 2_000
_RESOURCES = ("cpu", "memory")


def day_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % DAY_MS


def watermark(conn: Connection) -> int | None:
    """The first day not rolled up yet (every closed day before it has its rollups)."""
    newest = conn.execute(select(func.max(schema.rollups.c.day_start_ms))).scalar()
    return None if newest is None else int(newest) + DAY_MS


def build(engine: Engine, closed_before_ms: int, late_blocks: Iterable[int]) -> int:
    """Roll up every closed day from the watermark on, and the earlier days that got late
    blocks; returns how many days with data were (re)built."""
    c = schema.chunks
    with engine.connect() as conn:
        mark = watermark(conn)
        oldest = conn.execute(select(func.min(c.c.block_start_ms))).scalar()
    if oldest is None:
        return 0
    first = mark if mark is not None else day_of(int(oldest))
    last_closed = day_of(closed_before_ms)  # days ending at or before this are complete
    days = set(range(first, last_closed, DAY_MS))
    days |= {day_of(block) for block in late_blocks if day_of(block) < first}
    built = 0
    for day in sorted(days):
        with engine.begin() as conn:
            conn.execute(delete(schema.rollups).where(schema.rollups.c.day_start_ms == day))
            rows = list(_merged(conn, day))
            for start in range(0, len(rows), _BATCH):
                conn.execute(insert(schema.rollups), rows[start : start + _BATCH])
        built += bool(rows)
    return built


def _merged(conn: Connection, day: int) -> Iterator[dict[str, Any]]:
    c = schema.chunks
    columns = [c.c.series_id, c.c.first_ms, c.c.last_ms, c.c.count, c.c.interval_ms]
    for resource in _RESOURCES:
        columns += [c.c[f"{resource}_{part}"] for part in ("sum", "min", "max", "last", "sketch")]
    rows = conn.execute(
        select(*columns)
        .where(c.c.block_start_ms >= day, c.c.block_start_ms < day + DAY_MS)
        .order_by(c.c.series_id, c.c.block_start_ms)
    ).all()
    for series_id, group in groupby(rows, key=itemgetter(0)):
        chunks = list(group)
        merged: dict[str, Any] = {
            "series_id": series_id,
            "day_start_ms": day,
            "first_ms": min(r[1] for r in chunks),
            "last_ms": max(r[2] for r in chunks),
            "count": sum(r[3] for r in chunks),
            "interval_ms": min((r[4] for r in chunks if r[4] > 0), default=0),
        }
        for i, resource in enumerate(_RESOURCES):
            at = 5 + 5 * i
            merged[f"{resource}_sum"] = sum(r[at] for r in chunks)
            merged[f"{resource}_min"] = min(r[at + 1] for r in chunks)
            merged[f"{resource}_max"] = max(r[at + 2] for r in chunks)
            merged[f"{resource}_last"] = chunks[-1][at + 3]
            sketch = QuantileSketch.from_bytes(chunks[0][at + 4])
            for r in chunks[1:]:
                sketch.merge(QuantileSketch.from_bytes(r[at + 4]))
            merged[f"{resource}_sketch"] = sketch.to_bytes()
        yield merged
