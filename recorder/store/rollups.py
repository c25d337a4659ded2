"""Day-level rollups: each series' chunk statistics of one UTC day merged into one row.

A long-range statistics query (a 7-day summary, a 30-day p95 at a 1-day step) reads one row per
series per day instead of one per block. Rollups are built by maintenance for every closed day
(all of whose blocks are compacted) and rebuilt for a day whenever compaction adds a late block
to it, so they always agree with the chunks they summarize.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select

from recorder.stats import block
from recorder.stats.block import BlockStats
from recorder.store import chunks, schema
from recorder.timeutil import DAY_MS, floor_to

_BATCH = 2_000


def day_of(ts_ms: int) -> int:
    return floor_to(ts_ms, DAY_MS)


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
    days |= {day_of(start) for start in late_blocks if day_of(start) < first}
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
    rows = conn.execute(
        select(c.c.series_id, *(c.c[name] for name in block.COLUMNS))
        .where(c.c.block_start_ms >= day, c.c.block_start_ms < day + DAY_MS)
        .order_by(c.c.series_id, c.c.block_start_ms)
    )
    for series_id, group in groupby(rows, key=lambda row: row.series_id):
        merged = block.merge(BlockStats.from_values(values) for _sid, *values in group)
        yield {"series_id": series_id, "day_start_ms": day, **merged.to_columns()}


def read_rows(
    conn: Connection,
    series_ids: Sequence[int],
    first_day_ms: int,
    end_day_ms: int,
    names: Sequence[str],
) -> list[tuple[Any, ...]]:
    """``read`` as rows ``(series id, day start, *names)``."""
    wanted = ", ".join(names)
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(series_ids), 1000):
        rows += chunks.fetch_rows(
            conn,
            f"SELECT series_id, day_start_ms, {wanted} FROM rollups "
            f"WHERE series_id IN ({chunks.id_list(series_ids[start : start + 1000])}) "
            f"AND day_start_ms >= {int(first_day_ms)} AND day_start_ms < {int(end_day_ms)}",
        )
    return rows


def read(
    conn: Connection, series_ids: Sequence[int], first_day_ms: int, end_day_ms: int
) -> Iterator[tuple[int, int, BlockStats]]:
    """``(series id, day start, statistics)`` of the rolled-up days in ``[first, end)``."""
    r = schema.rollups
    for start in range(0, len(series_ids), 1000):
        rows = conn.execute(
            select(r.c.series_id, r.c.day_start_ms, *(r.c[name] for name in block.COLUMNS))
            .where(r.c.series_id.in_(series_ids[start : start + 1000]))
            .where(r.c.day_start_ms >= first_day_ms, r.c.day_start_ms < end_day_ms)
        )
        for series_id, day_start_ms, *values in rows:
            yield series_id, day_start_ms, BlockStats.from_values(values)
